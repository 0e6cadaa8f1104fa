// `nrvm bench micro` and `npm run bench`: the hot paths against the plainest thing that does the
// same work on the same machine, measured with tinybench in one run so that ratios are fair on a
// noisy shared machine.
//
//   tlb-hit-4k vs raw-load-4k     the access loop (interrupt check + TLB hit + load) over 64
//                                 random 4 KiB pages (the whole L1 DTLB), vs loading the same
//                                 physical words directly
//   tlb-hit-2m vs raw-load-2m     the same over 32 x 2 MiB pages (64 MiB: loads miss the caches)
//   walk-4level vs 4-dep-loads    the walk of a TLB miss (A/D already set) vs four dependent loads
//   floor-lookup-4k, floor-walk   the least any software translation must do on the same pattern,
//                                 to show what the targets leave: a direct-mapped lookup (one tag
//                                 compare, one frame load; no ways, PCID or rights) with the same
//                                 interrupt check, and a walk that only indexes, loads, tests P and
//                                 follows each level (no rights, reserved bits, A/D or huge pages)
//   ipi-polling vs raw-pingpong   IPI round trip to a core that polls at every access, vs an
//                                 Atomics store/spin ping-pong between the same two threads
//   ipi-halted                    IPI round trip to a halted core (doorbell wake-up)

import { Bench } from 'tinybench';
import { Worker } from 'node:worker_threads';
import os from 'node:os';
import { Machine } from '../machine/machine.js';
import { mapPage, MAP_OK } from '../hw/pagetable.js';
import { split64, vaHi, vaLo } from '../hw/vaddr.js';
import { IPI_PING, IPI_STOP, IPI_OK, WAIT_OK, type Cpu } from '../hw/cpu.js';
import { WalkOut, walk } from '../hw/walk.js';
import { ACC_READ } from '../hw/fault.js';
import { CR4_PAE } from '../hw/regs.js';
import { Rng } from '../workloads/rng.js';
import type { CoreResult } from '../machine/executor.js';
import { tableFrames } from '../hw/pagetable.js';
import { TraceRing, traceBytes } from '../hw/trace.js';
import { writeChromeTrace } from '../trace/chrome.js';
import * as forks from '../kernel/fork.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';
import * as shootdowns from '../kernel/shootdown.js';
import * as spaces from '../kernel/space.js';
import * as vm from '../kernel/vm.js';

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
    ipiVsRawPingPong: number;
    haltedWakeVsRawPingPong: number;
  };
}

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
    const w = cpu.translate(hi, lo, ACC_READ);
    if (w < 0) throw new Error(`bench: 0x${va.toString(16)} does not translate`);
    s.words[i] = w;
  }
  return s;
}

/** Runs every micro-benchmark once. `log` receives progress lines. */
export async function runMicro(o: { timeMs: number; log?: (s: string) => void }): Promise<MicroResult> {
  const m = await Machine.boot({ cores: 2, nodes: 1, memory: '96MiB' });
  const log = o.log ?? (() => {});
  let sink = 0;
  const ns: Record<string, number> = {};
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
    const pending = cpu.pendingWord;
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

    /** The access loop: interrupt check, TLB hit, load. One function for both tracing states. */
    const hits4k = (): number => {
      let s = 0;
      const vh = a4.vhi;
      const vl = a4.vlo;
      for (let i = 0; i < LOOP; i++) {
        if (ctl[pending] !== 0) cpu.service();
        s += mem[cpu.translate(vh[i], vl[i], ACC_READ)];
      }
      return s;
    };
    const bench = new Bench({ time: o.timeMs, warmupTime: Math.min(200, o.timeMs) });
    bench
      .add('raw-load-4k', () => {
        let s = 0;
        const w = a4.words;
        for (let i = 0; i < LOOP; i++) s += mem[w[i]];
        sink += s;
      })
      .add('tlb-hit-4k', () => {
        sink += hits4k();
      })

      .add('raw-load-2m', () => {
        let s = 0;
        const w = a2.words;
        for (let i = 0; i < LOOP; i++) s += mem[w[i]];
        sink += s;
      })
      .add('tlb-hit-2m', () => {
        let s = 0;
        const vh = a2.vhi;
        const vl = a2.vlo;
        for (let i = 0; i < LOOP; i++) {
          if (ctl[pending] !== 0) cpu.service();
          s += mem[cpu.translate(vh[i], vl[i], ACC_READ)];
        }
        sink += s;
      })
      .add('4-dep-loads', () => {
        let s = 0;
        for (let i = 0; i < LOOP; i++) {
          let x = scratch[chains[i]];
          x = scratch[x];
          x = scratch[x];
          s += scratch[x];
        }
        sink += s;
      })
      .add('floor-lookup-4k', () => {
        let s = 0;
        const vh = a4.vhi;
        const vl = a4.vlo;
        for (let i = 0; i < LOOP; i++) {
          if (ctl[pending] !== 0) cpu.service();
          const lo = vl[i];
          const tag = (lo >>> 12) | (vh[i] << 20);
          const e = (tag & 1023) << 1;
          if (direct[e] !== tag) throw new Error('bench: the direct-mapped floor missed');
          s += mem[direct[e + 1] + ((lo & 0xfff) >>> 2)];
        }
        sink += s;
      })
      .add('floor-walk', () => {
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
        sink += s;
      })
      .add('walk-4level', () => {
        let s = 0;
        const vh = a4.vhi;
        const vl = a4.vlo;
        for (let i = 0; i < LOOP; i++) s += walk(mem, frames, regs, vh[i], vl[i], ACC_READ, out, true, true) + out.pfn;
        sink += s;
      });
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

    // IPI round trips: core 1 runs on a pool worker; this thread drives core 0.
    log('bench: IPI round trips...');
    const ipi = async (program: Record<string, unknown>, name: string): Promise<number> => {
      const running: Promise<CoreResult[]> = m.run([{ core: 1, program: program as never }]);
      // Handshake: the first ping only returns once core 1 is running its program.
      const start = Date.now();
      while (cpu.sendIpi(1, IPI_PING) !== IPI_OK) {
        if (Date.now() - start > 10_000) throw new Error(`bench: core 1 did not start for ${name}`);
        await new Promise((r) => setImmediate(r));
      }
      if (cpu.waitAcks() !== WAIT_OK) throw new Error(`bench: no ack from core 1 (${name})`);
      const b = new Bench({ time: o.timeMs, warmupTime: Math.min(100, o.timeMs) });
      b.add(name, () => {
        cpu.sendIpi(1, IPI_PING);
        if (cpu.waitAcks() !== WAIT_OK) throw new Error(`bench: no ack from core 1 (${name})`);
      });
      await b.run();
      cpu.sendIpi(1, IPI_STOP);
      cpu.waitAcks();
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
      ipiVsRawPingPong: ns['ipi-polling'] / ns['raw-pingpong'],
      haltedWakeVsRawPingPong: ns['ipi-halted'] / ns['raw-pingpong'],
    },
  };
}

/** The table printed by `nrvm bench micro` and `npm run bench`. */
export function formatMicro(r: MicroResult): string {
  const row = (name: string, base: string, target: string): string => {
    const x = r.ns[name] / r.ns[base];
    return `${name.padEnd(17)} ${r.ns[name].toFixed(1).padStart(9)} ns   ${base.padEnd(13)} ${r.ns[base].toFixed(1).padStart(9)} ns   ${x.toFixed(2).padStart(6)}x   ${target}`;
  };
  return [
    `nrvm micro-benchmarks — Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs, ${r.machine.memoryGiB} GiB, ${r.machine.platform}`,
    `(median per operation; ratios measured in this one run)`,
    `${'task'.padEnd(17)} ${'time'.padStart(12)}   ${'baseline'.padEnd(13)} ${'time'.padStart(12)}   ${'ratio'.padStart(7)}   target`,
    row('tlb-hit-4k', 'raw-load-4k', '<= 1.5x'),
    row('tlb-hit-4k-traced', 'tlb-hit-4k-off', '(tracing on vs off, alternated: no trace site on a hit)'),
    row('tlb-hit-2m', 'raw-load-2m', '<= 1.5x'),
    row('floor-lookup-4k', 'raw-load-4k', '(the least a software TLB does: direct-mapped, one compare)'),
    row('walk-4level', '4-dep-loads', '<= 3x'),
    row('floor-walk', '4-dep-loads', '(the least a walk does: index, load, P, next table)'),
    row('ipi-polling', 'raw-pingpong', '<= 3x'),
    row('ipi-halted', 'raw-pingpong', '(wake-up of a halted core)'),
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Fork: copy-on-write fork of an address space of N mapped pages, against copying the same page
// tables with a plain byte copy (what a fork that shares nothing but the tables would cost).

export interface ForkResult {
  node: string;
  machine: MicroResult['machine'];
  rows: { pages: number; forkMs: number; tableFrames: number; byteCopyMs: number; ratio: number }[];
}

/** Forks spaces of each size (tinybench, a few iterations each), main thread, one core. */
export async function runForkBench(o: { sizes: number[]; iterations: number; log?: (s: string) => void }): Promise<ForkResult> {
  const rows: ForkResult['rows'] = [];
  for (const pages of o.sizes) {
    o.log?.(`bench: fork of ${pages} pages...`);
    const m = await Machine.boot({ cores: 1, nodes: 1, memory: '256MiB', kernel: { maxSpaces: 3, maxMappings: pages + 16, logEntries: 4096 } }, { pool: false });
    try {
      m.setRegisters(0, { cpl: 3 });
      const cpu = m.attachHere(0);
      const k = m.kernel;
      const parent = spaces.createSpace(k);
      const data = m.frames.allocZeroed(0);
      refs.setRefcount(k, data, 1);
      for (let i = 0; i < pages; i++) {
        refs.setRefcount(k, data, refs.refcount(k, data) + (i === 0 ? 0 : 1));
        if (vm.map(k, 0, parent, vaHi(0x1000_0000 + i * 4096), vaLo(0x1000_0000 + i * 4096), data * 4096, 4096, 3, cpu).code !== 0) throw new Error(`bench: cannot map page ${i}`);
      }
      shootdowns.switchTo(k, cpu, parent);
      const tables = tableFramesOf(m, parent);
      const scratch = m.frames.allocContiguous(0, 1024);
      const bench = new Bench({ iterations: o.iterations, time: 0, warmupIterations: 1, warmupTime: 0 });
      bench
        .add(`fork-${pages}`, () => {
          const child = forks.fork(k, cpu, parent);
          if (child < 0) throw new Error('bench: fork failed');
          spaces.destroySpace(k, child, (pfn, n, rights) => refs.releaseMapping(k, child, pfn, n, rights), cpu);
        })
        .add(`copy-${pages}`, () => {
          for (let i = 0; i < tables.length; i++) {
            const dst = (scratch + (i % 1024)) * 1024;
            m.mem.copyWithin(dst, tables[i] * 1024, tables[i] * 1024 + 1024);
          }
        });
      await bench.run();
      const [f, c] = bench.tasks.map((t) => {
        if (t.result.state !== 'completed') throw new Error(`bench: ${t.name} did not complete`);
        return t.result.latency.p50;
      });
      rows.push({ pages, forkMs: f, tableFrames: tables.length, byteCopyMs: c, ratio: f / c });
      cpu.detach();
    } finally {
      await m.shutdown();
    }
  }
  return { node: process.version, machine: machineInfo(), rows };
}

/** The machine the figures were measured on. */
function machineInfo(): MicroResult['machine'] {
  const cpus = os.cpus();
  return { cpu: cpus[0]?.model ?? 'unknown', cpus: cpus.length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), platform: `${os.platform()} ${os.arch()}` };
}

function tableFramesOf(m: Machine, s: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < m.config.nodes; r++) out.push(...tableFrames(m.mem, m.layout.totalFrames, m.kernel.vspace(s).root(r)));
  return out;
}

export function formatFork(r: ForkResult): string {
  return [
    `nrvm fork benchmark — Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs (median of the iterations)`,
    `${'pages'.padStart(8)} ${'fork (COW)'.padStart(12)} ${'table frames'.padStart(13)} ${'byte copy'.padStart(11)} ${'ratio'.padStart(9)}`,
    ...r.rows.map((x) => `${String(x.pages).padStart(8)} ${(x.forkMs.toFixed(1) + ' ms').padStart(12)} ${String(x.tableFrames).padStart(13)} ${(x.byteCopyMs.toFixed(3) + ' ms').padStart(11)} ${(x.ratio.toFixed(0) + 'x').padStart(9)}`),
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Shootdown latency: one initiator (core 0, this thread) and 1..N target cores running the space
// (each in a loop of loads that polls for interrupts at every access); the round trip of one
// page's shootdown — requests, local invalidation, every ack — median and p99.

export interface ShootdownResult {
  node: string;
  machine: MicroResult['machine'];
  rows: { targets: number; p50Ns: number; p99Ns: number; samples: number }[];
  note: string;
}

export async function runShootdownBench(o: {
  targets: number[]; samples: number; log?: (s: string) => void;
  /** Trace every target count into FILE with "-<targets>" before its extension. */
  trace?: string;
}): Promise<ShootdownResult> {
  const rows: ShootdownResult['rows'] = [];
  for (const n of o.targets) {
    o.log?.(`bench: shootdown to ${n} target core(s)...`);
    const m = await Machine.boot({ cores: n + 1, nodes: 1, memory: '32MiB', trace: o.trace !== undefined });
    try {
      const k = m.kernel;
      const s = spaces.createSpace(k);
      procs.spawn(k, s, -1);
      for (let c = 0; c <= n; c++) m.setRegisters(c, { cpl: 3 });
      const cpu = m.attachHere(0);
      shootdowns.installHandlers(k, cpu);
      shootdowns.switchTo(k, cpu, s);
      const va = 0x40_0000;
      const f = m.frames.allocZeroed(0);
      refs.setRefcount(k, f, 1);
      if (vm.map(k, 0, s, vaHi(va), vaLo(va), f * 4096, 4096, 3, cpu).code !== 0) throw new Error('bench: map failed');
      const targets = Array.from({ length: n }, (_, i) => i + 1);
      const running = m.run(targets.map((c) => ({ core: c, program: { kind: 'ops', ops: [{ op: 'switch', space: s }, { op: 'load', va }], repeat: Number.MAX_SAFE_INTEGER } })));
      const deadline = Date.now() + 20_000;
      while (shootdowns.activeCores(k, s).length < n + 1) {
        if (Date.now() > deadline) throw new Error('bench: target cores did not join the space');
        await new Promise((r) => setImmediate(r));
      }
      const lat: number[] = [];
      for (let i = 0; i < o.samples + 50; i++) {
        const t = performance.now();
        shootdowns.shootdown(k, cpu, s, vaHi(va), vaLo(va), 1);
        if (i >= 50) lat.push((performance.now() - t) * 1e6);
      }
      for (const c of targets) cpu.sendIpi(c, IPI_STOP);
      cpu.waitAcks();
      const res = await running;
      for (const r of res) if (!r.ok) throw new Error(`bench: core ${r.core} failed: ${r.error}`);
      cpu.detach();
      if (o.trace) await writeChromeTrace(m, o.trace.replace(/(\.json)?$/, `-${n}$1`));
      lat.sort((a, b) => a - b);
      rows.push({ targets: n, p50Ns: lat[lat.length >> 1], p99Ns: lat[Math.floor(lat.length * 0.99)], samples: lat.length });
    } finally {
      await m.shutdown();
    }
  }
  return {
    node: process.version,
    machine: machineInfo(),
    rows,
    note: `this machine has ${machineInfo().cpus} real CPUs: with more target cores than that, round trips wait for the OS to run each target`,
  };
}

export function formatShootdown(r: ShootdownResult): string {
  return [
    `nrvm shootdown latency — Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs (one page, one initiator)`,
    `${'targets'.padStart(8)} ${'p50'.padStart(12)} ${'p99'.padStart(12)} ${'samples'.padStart(8)}`,
    ...r.rows.map((x) => `${String(x.targets).padStart(8)} ${((x.p50Ns / 1000).toFixed(1) + ' us').padStart(12)} ${((x.p99Ns / 1000).toFixed(1) + ' us').padStart(12)} ${String(x.samples).padStart(8)}`),
    `(${r.note})`,
  ].join('\n');
}
