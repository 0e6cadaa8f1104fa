// `nrvm bench micro` and `npm run bench`: the hot paths against the least any software
// translation must do on the same pattern (the floors, which the targets are stated against) and
// against the plain loads, measured with tinybench in one run so that ratios are fair on a noisy
// shared machine.
//
//   tlb-hit-4k vs floor-lookup-4k the access loop (interrupt check + TLB hit + load) over 64
//                                 random 4 KiB pages (the whole L1 DTLB), vs a direct-mapped
//                                 lookup (one tag compare, one frame load; no ways, PCID or
//                                 rights) with the same interrupt check; raw-load-4k loads the
//                                 same physical words directly
//   tlb-hit-2m vs floor-lookup-2m the same over 32 x 2 MiB pages (64 MiB: loads miss the caches)
//   walk-4level vs floor-walk     the walk of a TLB miss (A/D already set) vs a walk that only
//                                 indexes, loads, tests P and follows each level (no rights,
//                                 reserved bits, A/D or huge pages); 4-dep-loads: four dependent loads
//   ipi-polling vs raw-pingpong   IPI round trip to a core that polls at every access, vs an
//                                 Atomics store/spin ping-pong between the same two threads
//   ipi-halted                    IPI round trip to a halted core (doorbell wake-up)

import { Bench } from 'tinybench';
import { Worker } from 'node:worker_threads';
import os from 'node:os';
import { Machine } from '../machine/machine.js';
import { mapPage, MAP_OK } from '../hw/pagetable.js';
import { split64 } from '../hw/vaddr.js';
import { type Cpu } from '../hw/cpu.js';
import { IPI_PING, IPI_STOP, IPI_OK, WAIT_OK } from '../hw/apic.js';
import { WalkOut, walk } from '../hw/walk.js';
import { PdeCache } from '../hw/psc.js';
import { ACC_READ } from '../hw/fault.js';
import { CR4_PAE } from '../hw/regs.js';
import { Rng } from '../workloads/rng.js';
import type { CoreResult } from '../machine/executor.js';
import { TraceRing, traceBytes } from '../hw/trace.js';

const LOOP = 4096;

export interface MicroResult {
  node: string;
  machine: { cpu: string; cpus: number; memoryGiB: number; platform: string };
  config: { memory: string; tlb: string; loop: number; timeMs: number };
  /** Nanoseconds per operation (median over tinybench samples). */
  ns: Record<string, number>;
  ratios: {
    tlbHitVsRawLoad: number;
    /** The TLB-hit loop with tracing on over the same loop with tracing off. */
    traceOnVsOff: number;
    /** The least a software TLB can do (direct-mapped, one compare) over the raw load. */
    floorLookupVsRawLoad: number;
    /** The least a walk can do (index, load, P, next table per level) over the four dependent loads. */
    floorWalkVsRawLoads: number;
    tlbHit2mVsRawLoad2m: number;
    walkVsRawLoads: number;
    /**
     * The targets (issue 10): each path over the least any software translation does on the same
     * pattern, alternated with it call by call (400 calls each, medians).
     */
    tlbHitVsFloor: number;
    tlbHit2mVsFloor: number;
    walkVsFloor: number;
    /** The walk with a paging-structure cache (a PDE-cache hit) over the walk floor, alternated. */
    walkPscVsFloor: number;
    ipiVsRawPingPong: number;
    haltedWakeVsRawPingPong: number;
  };
}

/** Each target's path and the floor it is stated against (issue 10). */
const TARGET_PAIRS = [
  ['tlb-hit-4k', 'floor-lookup-4k'],
  ['tlb-hit-2m', 'floor-lookup-2m'],
  ['walk-4level', 'floor-walk'],
  ['walk-psc', 'floor-walk'],
] as const;

/** The echo side of the raw ping-pong. Runs until word 32 is set. */
export function pingPongEcho(a: Int32Array): void {
  let seen = 0;
  for (;;) {
    const v = Atomics.load(a, 0);
    if (v !== seen) {
      seen = v;
      Atomics.store(a, 16, v);
    } else if (Atomics.load(a, 32) !== 0) return;
  }
}

function mapOrThrow(m: Machine, root: number, va: bigint, pfn: number, shift: number): void {
  const { hi, lo } = split64(va);
  if (mapPage(m.mem, m.frames, 0, root, false, hi, lo, pfn, shift, { write: true, user: true, accessed: true, dirty: true }) !== MAP_OK) {
    throw new Error(`bench: cannot map 0x${va.toString(16)}`);
  }
}

interface AccessSet {
  vhi: Int32Array;
  vlo: Int32Array;
  words: Float64Array;
}

/** Random 8-aligned addresses over `pages` pages of 2^shift bytes starting at base, with their physical words. */
function accessSet(cpu: Cpu, base: bigint, pages: number, shift: number, seed: number): AccessSet {
  const rng = new Rng(seed, 1);
  const s: AccessSet = { vhi: new Int32Array(LOOP), vlo: new Int32Array(LOOP), words: new Float64Array(LOOP) };
  for (let i = 0; i < LOOP; i++) {
    const va = base + BigInt(rng.below(pages)) * (1n << BigInt(shift)) + BigInt(rng.below(2 ** (shift - 3)) * 8);
    const { hi, lo } = split64(va);
    s.vhi[i] = hi;
    s.vlo[i] = lo;
    const w = cpu.mmu.translate(hi, lo, ACC_READ);
    if (w < 0) throw new Error(`bench: 0x${va.toString(16)} does not translate`);
    s.words[i] = w;
  }
  return s;
}

/** Runs every micro-benchmark once. `log` receives progress lines. */
/** The machine, as every benchmark's JSON names it. */
export function machineInfo(): MicroResult['machine'] {
  const cpus = os.cpus();
  return { cpu: cpus[0]?.model ?? 'unknown', cpus: cpus.length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), platform: `${os.platform()} ${os.arch()}` };
}

export async function runMicro(o: { timeMs: number; log?: (s: string) => void }): Promise<MicroResult> {
  const m = await Machine.boot({ cores: 2, nodes: 1, memory: '96MiB' });
  const log = o.log ?? (() => {});
  let sink = 0;
  const ns: Record<string, number> = {};
  /** Path over floor, alternated call by call (the targets' ratios). */
  const alternated: Record<string, number> = {};
  try {
    const root = m.frames.allocZeroed(0);
    for (let i = 0; i < 64; i++) mapOrThrow(m, root, 0x1000_0000n + BigInt(i) * 4096n, m.frames.allocZeroed(0), 12);
    for (let i = 0; i < 32; i++) {
      const run = m.frames.allocContiguous(0, 512);
      if (run < 0) throw new Error('bench: out of memory for 2 MiB pages');
      mapOrThrow(m, root, 0x4000_0000n + BigInt(i) * 0x20_0000n, run, 21);
    }
    const cr3 = BigInt(root) << 12n;
    m.setRegisters(0, { cr3, cr4: CR4_PAE, cpl: 3 });
    m.setRegisters(1, { cr3, cr4: CR4_PAE, cpl: 3 });
    const cpu = m.attachHere(0);
    // Let V8 see both kinds of value in the tracer field before any code is optimized, so that
    // switching tracing on below does not deoptimize the access path.
    const tracer = new TraceRing(new SharedArrayBuffer(traceBytes(2)), 0);
    cpu.tracer = tracer;
    cpu.tracer = null;
    const mem = m.mem;
    const ctl = m.ctl;
    const a4 = accessSet(cpu, 0x1000_0000n, 64, 12, 1);
    const a2 = accessSet(cpu, 0x4000_0000n, 32, 21, 2);

    // Four dependent loads over random words of physical memory.
    const chains = new Int32Array(LOOP);
    const rng = new Rng(3, 3);
    const scratch = new Int32Array(m.shared.phys, 80 * 2 ** 20, 4 * 2 ** 20 / 4);
    for (let i = 0; i < LOOP; i++) {
      let at = rng.below(scratch.length);
      chains[i] = at;
      for (let k = 0; k < 3; k++) {
        const nx = rng.below(scratch.length);
        scratch[at] = nx;
        at = nx;
      }
      scratch[at] = 0;
    }
    const out = new WalkOut();
    const regs = cpu.regs;
    const frames = m.layout.totalFrames;

    // The floor of a software TLB: direct-mapped by page number, [tag, first word of the frame].
    const direct = new Int32Array(2 * 1024);
    for (let i = 0; i < LOOP; i++) {
      const tag = (a4.vlo[i] >>> 12) | (a4.vhi[i] << 20);
      direct[(tag & 1023) << 1] = tag;
      direct[((tag & 1023) << 1) + 1] = a4.words[i] - ((a4.vlo[i] & 0xfff) >>> 2);
    }
    const rootPfn = regs.rootPfn;
    const psc = new PdeCache();

    // The 2 MiB floor: direct-mapped by 2 MiB page number, [tag, first word of the 2 MiB frame run].
    const direct2m = new Int32Array(2 * 64);
    for (let i = 0; i < LOOP; i++) {
      const tag = (a2.vlo[i] >>> 21) | (a2.vhi[i] << 11);
      direct2m[(tag & 63) << 1] = tag;
      direct2m[((tag & 63) << 1) + 1] = a2.words[i] - ((a2.vlo[i] & 0x1fffff) >>> 2);
    }

    // Every timed loop is its own function, called a few times before timing: a loop timed inside
    // the task's closure is compiled on-stack while the code after it has no type feedback yet,
    // and V8 then leaves that compiled loop on every call (a deopt per call, up to 2x, seen with
    // --trace-deopt), which measured the JIT, not the path.
    const xlate = (set: AccessSet): number => {
      let s = 0;
      const vh = set.vhi;
      const vl = set.vlo;
      for (let i = 0; i < LOOP; i++) {
        if (ctl[cpu.apic.headSeq] === cpu.apic.headExpect) cpu.apic.service();
        s += mem[cpu.mmu.translate(vh[i], vl[i], ACC_READ)];
      }
      return s;
    };
    const raw = (set: AccessSet): number => {
      let s = 0;
      const w = set.words;
      for (let i = 0; i < LOOP; i++) s += mem[w[i]];
      return s;
    };
    /** The access loop: interrupt check, TLB hit, load. One function for both tracing states. */
    const hits4k = (): number => xlate(a4);
    const loops: Record<string, () => number> = {
      'raw-load-4k': () => raw(a4),
      'tlb-hit-4k': hits4k,
      'raw-load-2m': () => raw(a2),
      'tlb-hit-2m': () => xlate(a2),
      '4-dep-loads': () => {
        let s = 0;
        for (let i = 0; i < LOOP; i++) {
          let x = scratch[chains[i]];
          x = scratch[x];
          x = scratch[x];
          s += scratch[x];
        }
        return s;
      },
      'floor-lookup-4k': () => {
        let s = 0;
        const vh = a4.vhi;
        const vl = a4.vlo;
        for (let i = 0; i < LOOP; i++) {
          if (ctl[cpu.apic.headSeq] === cpu.apic.headExpect) cpu.apic.service();
          const lo = vl[i];
          const tag = (lo >>> 12) | (vh[i] << 20);
          const e = (tag & 1023) << 1;
          if (direct[e] !== tag) throw new Error('bench: the direct-mapped floor missed');
          s += mem[direct[e + 1] + ((lo & 0xfff) >>> 2)];
        }
        return s;
      },
      'floor-lookup-2m': () => {
        let s = 0;
        const vh = a2.vhi;
        const vl = a2.vlo;
        for (let i = 0; i < LOOP; i++) {
          if (ctl[cpu.apic.headSeq] === cpu.apic.headExpect) cpu.apic.service();
          const lo = vl[i];
          const tag = (lo >>> 21) | (vh[i] << 11);
          const e = (tag & 63) << 1;
          if (direct2m[e] !== tag) throw new Error('bench: the direct-mapped 2 MiB floor missed');
          s += mem[direct2m[e + 1] + ((lo & 0x1fffff) >>> 2)];
        }
        return s;
      },
      'floor-walk': () => {
        let s = 0;
        const vh = a4.vhi;
        const vl = a4.vlo;
        for (let i = 0; i < LOOP; i++) {
          const hi = vh[i];
          const lo = vl[i];
          let table = rootPfn;
          for (let shift = 39; ; shift -= 9) {
            const idx = shift >= 32 ? (hi >>> (shift - 32)) & 511 : ((lo >>> shift) | (hi << (32 - shift))) & 511;
            const w = table * 1024 + idx * 2;
            const e = mem[w];
            if ((e & 1) === 0) throw new Error('bench: the floor walk found a hole');
            table = (e >>> 12) + (mem[w + 1] & 0xfffff) * 0x100000;
            if (shift === 12) break;
          }
          s += table;
        }
        return s;
      },
      'walk-4level': () => {
        let s = 0;
        const vh = a4.vhi;
        const vl = a4.vlo;
        for (let i = 0; i < LOOP; i++) s += walk(mem, frames, regs, vh[i], vl[i], ACC_READ, out, true, true) + out.pfn;
        return s;
      },
      // The same walks with a paging-structure cache (--psc): the pages share one PDE, so after
      // the first walk each starts at the page table.
      'walk-psc': () => {
        let s = 0;
        const vh = a4.vhi;
        const vl = a4.vlo;
        for (let i = 0; i < LOOP; i++) s += walk(mem, frames, regs, vh[i], vl[i], ACC_READ, out, true, true, psc) + out.pfn;
        return s;
      },
    };
    const bench = new Bench({ time: o.timeMs, warmupTime: Math.min(200, o.timeMs) });
    for (const [name, loop] of Object.entries(loops)) {
      for (let k = 0; k < 30; k++) sink += loop();
      bench.add(name, () => {
        sink += loop();
      });
    }
    log('bench: access and walk loops...');
    await bench.run();
    for (const t of bench.tasks) {
      const r = t.result;
      if (r.state !== 'completed') throw new Error(`bench: task ${t.name} did not complete (${r.state})`);
      ns[t.name] = (r.latency.p50 * 1e6) / LOOP;
    }
    // Tracing on against off: the very same loop, alternated batch by batch so that the shared
    // machine's drift hits both alike (a TLB hit has no trace site; this shows it).
    const off: number[] = [];
    const on: number[] = [];
    for (let k = 0; k < 400; k++) {
      let t = performance.now();
      sink += hits4k();
      off.push(performance.now() - t);
      cpu.tracer = tracer;
      t = performance.now();
      sink += hits4k();
      on.push(performance.now() - t);
      cpu.tracer = null;
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
    ns['tlb-hit-4k-off'] = (median(off) * 1e6) / LOOP;
    ns['tlb-hit-4k-traced'] = (median(on) * 1e6) / LOOP;

    // The targets' ratios, each path alternated with its floor call by call (as tracing above):
    // tinybench times one task after another, and on a shared machine a task can run at half
    // speed for seconds; alternating puts that drift on both sides of the ratio.
    for (const [path, floor] of TARGET_PAIRS) {
      const a: number[] = [];
      const b: number[] = [];
      for (let k = 0; k < 400; k++) {
        let t = performance.now();
        sink += loops[path]();
        a.push(performance.now() - t);
        t = performance.now();
        sink += loops[floor]();
        b.push(performance.now() - t);
      }
      alternated[path] = median(a) / median(b);
    }

    // IPI round trips: core 1 runs on a pool worker; this thread drives core 0.
    log('bench: IPI round trips...');
    const ipi = async (program: Record<string, unknown>, name: string): Promise<number> => {
      const running: Promise<CoreResult[]> = m.run([{ core: 1, program: program as never }]);
      // Handshake: the first ping only returns once core 1 is running its program.
      const start = Date.now();
      while (cpu.apic.sendIpi(1, IPI_PING) !== IPI_OK) {
        if (Date.now() - start > 10_000) throw new Error(`bench: core 1 did not start for ${name}`);
        await new Promise((r) => setImmediate(r));
      }
      if (cpu.apic.waitAcks() !== WAIT_OK) throw new Error(`bench: no ack from core 1 (${name})`);
      const b = new Bench({ time: o.timeMs, warmupTime: Math.min(100, o.timeMs) });
      b.add(name, () => {
        cpu.apic.sendIpi(1, IPI_PING);
        if (cpu.apic.waitAcks() !== WAIT_OK) throw new Error(`bench: no ack from core 1 (${name})`);
      });
      await b.run();
      cpu.apic.sendIpi(1, IPI_STOP);
      cpu.apic.waitAcks();
      const res = await running;
      if (!res[0].ok) throw new Error(`bench: core 1 failed: ${res[0].error}`);
      const r = b.tasks[0].result;
      if (r.state !== 'completed') throw new Error(`bench: ${name} did not complete`);
      return r.latency.p50 * 1e6;
    };
    ns['ipi-polling'] = await ipi({ kind: 'random', seed: 1, count: Number.MAX_SAFE_INTEGER, regions: [{ va: '0x10000000', bytes: 4096 }] }, 'ipi-polling');
    ns['ipi-halted'] = await ipi({ kind: 'ops', ops: [{ op: 'halt' }], repeat: Number.MAX_SAFE_INTEGER }, 'ipi-halted');
    cpu.detach();

    // The raw baseline between the same two kinds of thread: this one and a fresh worker.
    const sab = new SharedArrayBuffer(64 * 4);
    const a = new Int32Array(sab);
    const w = new Worker(new URL('../../workers/pingpong.js', import.meta.url), { workerData: { sab } });
    try {
      let n = 0;
      Atomics.store(a, 0, ++n);
      while (Atomics.load(a, 16) !== n);
      const b = new Bench({ time: o.timeMs, warmupTime: Math.min(100, o.timeMs) });
      b.add('raw-pingpong', () => {
        Atomics.store(a, 0, ++n);
        while (Atomics.load(a, 16) !== n);
      });
      await b.run();
      const r = b.tasks[0].result;
      if (r.state !== 'completed') throw new Error('bench: raw-pingpong did not complete');
      ns['raw-pingpong'] = r.latency.p50 * 1e6;
    } finally {
      Atomics.store(a, 32, 1);
      await w.terminate();
    }
  } finally {
    await m.shutdown();
  }
  if (sink === 0.5) log(''); // keep the loops' results alive
  return {
    node: process.version,
    machine: machineInfo(),
    config: { memory: '96MiB', tlb: '64x4KiB 4-way, 32x2MiB, 4x1GiB', loop: LOOP, timeMs: o.timeMs },
    ns,
    ratios: {
      tlbHitVsRawLoad: ns['tlb-hit-4k'] / ns['raw-load-4k'],
      traceOnVsOff: ns['tlb-hit-4k-traced'] / ns['tlb-hit-4k-off'],
      floorLookupVsRawLoad: ns['floor-lookup-4k'] / ns['raw-load-4k'],
      floorWalkVsRawLoads: ns['floor-walk'] / ns['4-dep-loads'],
      tlbHit2mVsRawLoad2m: ns['tlb-hit-2m'] / ns['raw-load-2m'],
      walkVsRawLoads: ns['walk-4level'] / ns['4-dep-loads'],
      tlbHitVsFloor: alternated['tlb-hit-4k'],
      tlbHit2mVsFloor: alternated['tlb-hit-2m'],
      walkVsFloor: alternated['walk-4level'],
      walkPscVsFloor: alternated['walk-psc'],
      ipiVsRawPingPong: ns['ipi-polling'] / ns['raw-pingpong'],
      haltedWakeVsRawPingPong: ns['ipi-halted'] / ns['raw-pingpong'],
    },
  };
}

/** The table printed by `nrvm bench micro` and `npm run bench`. */
export function formatMicro(r: MicroResult): string {
  const row = (name: string, base: string, target: string, ratio?: number): string => {
    const x = ratio ?? r.ns[name] / r.ns[base];
    return `${name.padEnd(17)} ${r.ns[name].toFixed(1).padStart(9)} ns   ${base.padEnd(13)} ${r.ns[base].toFixed(1).padStart(9)} ns   ${x.toFixed(2).padStart(6)}x   ${target}`;
  };
  return [
    `nrvm micro-benchmarks — Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs, ${r.machine.memoryGiB} GiB, ${r.machine.platform}`,
    `(median per operation; ratios measured in this one run; the three target ratios alternate path and floor call by call)`,
    `${'task'.padEnd(17)} ${'time'.padStart(12)}   ${'baseline'.padEnd(13)} ${'time'.padStart(12)}   ${'ratio'.padStart(7)}   target`,
    row('tlb-hit-4k', 'floor-lookup-4k', '<= 1.3x (the floor: direct-mapped, one compare)', r.ratios.tlbHitVsFloor),
    row('tlb-hit-2m', 'floor-lookup-2m', '<= 1.5x (the same over 2 MiB pages)', r.ratios.tlbHit2mVsFloor),
    row('walk-4level', 'floor-walk', '<= 2x (the floor: index, load, P, next table)', r.ratios.walkVsFloor),
    row('walk-psc', 'floor-walk', '(with --psc: a PDE-cache hit starts at the page table)', r.ratios.walkPscVsFloor),
    row('tlb-hit-4k', 'raw-load-4k', '(the plain load of the same words)'),
    row('tlb-hit-2m', 'raw-load-2m', ''),
    row('walk-4level', '4-dep-loads', ''),
    row('floor-lookup-4k', 'raw-load-4k', ''),
    row('floor-walk', '4-dep-loads', ''),
    row('tlb-hit-4k-traced', 'tlb-hit-4k-off', '(tracing on vs off, alternated: no trace site on a hit)'),
    row('ipi-polling', 'raw-pingpong', '<= 2x'),
    row('ipi-halted', 'raw-pingpong', '(wake-up of a halted core)'),
  ].join('\n');
}
