// `nrvm bench scale`: address-space throughput across core counts, node replication against the
// baseline a user would pick instead (kernel mode 'lock': one copy of the mapping database and
// page tables behind one writer-preference reader/writer lock with per-core reader flags, the
// same lock NR uses inside a replica), measured in the same run on the same workloads (modelled
// on NRK's microbenchmarks):
//   maponly  each core maps frames at fresh addresses in its own region
//   unmap    map then unmap, with loads by every core (so shootdowns are real)
//   resolve  read-mostly: Resolve of mapped addresses
//   access   loads and stores through the TLB (pages mapped beforehand)
//   mixed    a little of everything

import { VM_MIX_KINDS } from '../workloads/sources.js';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { Machine } from '../machine/machine.js';
import type { CoreResult } from '../machine/executor.js';
import type { VmMix, VmMixProgram } from '../workloads/sources.js';
import { OK } from '../kernel/ops.js';
import { R_USER, R_WRITE } from '../kernel/ops.js';
import { PROC_TERMINATED } from '../kernel/layout.js';
import { writeChromeTrace } from '../trace/chrome.js';
import * as procs from '../kernel/proc.js';
import * as spaces from '../kernel/space.js';
import * as vm from '../kernel/vm.js';
import { vaHi, vaLo } from '../hw/vaddr.js';

export const SCALE_WORKLOADS = ['maponly', 'unmap', 'resolve', 'access', 'mixed'] as const;
export type ScaleWorkload = (typeof SCALE_WORKLOADS)[number];

const MIXES: Record<ScaleWorkload, Partial<VmMix>> = {
  maponly: { map: 1 },
  unmap: { map: 1, unmap: 1, access: 2 },
  resolve: { resolve: 1 },
  access: { access: 1 },
  mixed: { map: 5, unmap: 5, resolve: 30, access: 60 },
};

const REGION = 0x10_0000_0000;
/** maponly: slots per core, and MiB of frames beyond the first 64 (see Point.boot). */
const MAPONLY_SLOTS = 48 * 1024;
const MAPONLY_DATA_MIB = 320;

export interface ScaleRow {
  cores: number;
  workload: ScaleWorkload;
  mode: 'nr' | 'lock';
  /** Median over the point's measured rounds of operations per second (all cores together). */
  opsPerSec: number;
  /** Measured rounds behind opsPerSec. */
  rounds: number;
  p50Ns: { map?: number; unmap?: number };
  p99Ns: { map?: number; unmap?: number };
  tlbHitRate: number;
  meanBatch: number;
  /** Heap bytes the workers allocated per operation over the measured rounds (GC-traced: v8's GCProfiler). */
  heapBytesPerOp: number;
  /** Share of the measured rounds' MapFrames that failed (AlreadyMapped, OutOfMemory...): 0 when every map mapped. */
  mapFailures: number;
}

export interface ScaleResult {
  node: string;
  machine: { cpu: string; cpus: number };
  workload: ScaleWorkload;
  seconds: number;
  note: string;
  /** How the points were measured. */
  method: string;
  rows: ScaleRow[];
  /** Per core count: NR ops/s over lock ops/s (when the baseline ran). */
  ratios: { cores: number; nrOverLock: number }[];
  /**
   * The machine's own scaling, measured in the same passes: that many threads running a plain
   * loop of loads (no simulator), loads per second all together (median of the passes).
   */
  reference: { cores: number; loadsPerSec: number }[];
}

/** The p50 and p99 of xs (undefined when empty), sorting it once. */
function p50p99(xs: number[]): [number | undefined, number | undefined] {
  if (xs.length === 0) return [undefined, undefined];
  const s = Float64Array.from(xs).sort();
  const at = (p: number): number => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
  return [at(50), at(99)];
}

/** Unmeasured rounds per point first: V8 needs a few hundred ms to optimize the hot paths. */
const WARMUP_ROUNDS = 4;
/**
 * Length of a measured round: every core runs for this long (durationMs), as NRK's benchmarks
 * do, so that a round is not gated by its slowest core; long enough that dispatch and the run's
 * barriers stay small.
 */
const ROUND_MS = 100;

/** One (core count, mode) machine, booted once and measured in rounds alternated with the others. */
class Point {
  /** Per measured round: operations over wall-clock milliseconds. */
  readonly rates: number[] = [];
  busyMs = 0;
  readonly lat = { map: [] as number[], unmap: [] as number[] };
  appends = 0;
  batches = 0;
  heapBytes = 0;
  measuredOps = 0;
  maps = 0;
  mapsFailed = 0;
  private before: Record<string, number> = {};
  private s = 0;
  private round = 0;

  private constructor(readonly cores: number, readonly mode: 'nr' | 'lock', readonly workload: ScaleWorkload, readonly m: Machine, readonly slots: number) {}

  static async boot(cores: number, nodes: number, workload: ScaleWorkload, mode: 'nr' | 'lock', trace: boolean): Promise<Point> {
    // maponly maps a fresh frame at a fresh address every time, in a new address space every
    // round: a core's slots and the machine's frames must outlast a round (about 40,000 maps a
    // round at most on one core here). Maps that fail anyway are reported, not hidden.
    const slots = workload === 'maponly' ? MAPONLY_SLOTS : 64;
    const m = await Machine.boot({
      cores, nodes: Math.min(nodes, cores), memory: workload === 'maponly' ? `${64 + MAPONLY_DATA_MIB}MiB` : '64MiB', trace,
      kernel: { mode, maxSpaces: 2, maxMappings: Math.min(cores * slots, (MAPONLY_DATA_MIB * 2 ** 20) / 4096) + 64, logEntries: 4096 },
    });
    const p = new Point(cores, mode, workload, m, slots);
    try {
      p.prepare();
    } catch (e) {
      await m.shutdown();
      throw e;
    }
    return p;
  }

  private prepare(): void {
    const m = this.m;
    this.s = spaces.createSpace(m.kernel);
    procs.spawn(m.kernel, this.s, -1);
    for (let c = 0; c < this.cores; c++) m.setRegisters(c, { cpl: 3 });
    const w = this.workload;
    if (w === 'resolve' || w === 'access' || w === 'mixed') {
      // Map every core's slots first, from the controller acting as each core in turn.
      for (let c = 0; c < this.cores; c++) {
        for (let i = 0; i < this.slots; i++) {
          if (vm.mapAnon(m.kernel, c, this.s, vaHi(REGION + (c * this.slots + i) * 4096), vaLo(REGION + (c * this.slots + i) * 4096), 1, R_USER | R_WRITE) !== OK) throw new Error('bench scale: premap failed');
        }
      }
    }
  }

  /** maponly: the last round's address space goes (its frames freed) and a new empty one takes its place. */
  private renew(): void {
    const k = this.m.kernel;
    procs.setProcessState(k, procs.pidOf(k, this.s), PROC_TERMINATED);
    procs.reapZombies(k);
    this.s = spaces.createSpace(k);
    procs.spawn(k, this.s, -1);
  }

  /** Runs one round on every core; measured rounds count, warm-up rounds do not. */
  async run(measured: boolean): Promise<void> {
    if (this.workload === 'maponly' && this.round > 0) this.renew();
    if (measured && this.rates.length === 0) this.before = this.m.sumCounters();
    const jobs = [...Array(this.cores).keys()].map((c) => {
      const program: VmMixProgram = {
        kind: 'vm-mix', seed: 1 + this.round, count: Number.MAX_SAFE_INTEGER, durationMs: ROUND_MS, cores: this.cores, slots: this.slots, regionBase: REGION,
        mix: { ...(Object.fromEntries(VM_MIX_KINDS.map((k) => [k, 0])) as VmMix), ...MIXES[this.workload] },
        freshMaps: this.workload === 'maponly',
        latency: measured,
        heap: measured,
      };
      return { core: c, program };
    });
    this.round++;
    const t0 = performance.now();
    const res: CoreResult[] = await this.m.run(jobs);
    const ms = performance.now() - t0;
    let ops = 0;
    for (const r of res) {
      if (!r.ok) throw new Error(`bench scale: ${r.error}`);
      ops += r.ops;
      if (!measured) continue;
      this.lat.map.push(...(r.latencies?.map ?? []));
      this.lat.unmap.push(...(r.latencies?.unmap ?? []));
      this.heapBytes += r.heapBytes ?? 0;
      for (const [name, n] of Object.entries(r.outcomes)) {
        if (!name.startsWith('map:')) continue;
        this.maps += n;
        if (name !== 'map:Ok') this.mapsFailed += n;
      }
      this.measuredOps += r.ops;
      this.appends += r.kernel.nrAppends ?? 0;
      this.batches += r.kernel.nrBatches ?? 0;
    }
    if (!measured) return;
    this.busyMs += ms;
    this.rates.push(ops / (ms / 1000));
  }

  row(): ScaleRow {
    const after = this.m.sumCounters();
    const hits = after.tlbHits - (this.before.tlbHits ?? 0);
    const misses = after.tlbMisses - (this.before.tlbMisses ?? 0);
    const map = p50p99(this.lat.map);
    const unmap = p50p99(this.lat.unmap);
    return {
      cores: this.cores, workload: this.workload, mode: this.mode,
      opsPerSec: p50p99(this.rates)[0] ?? 0,
      rounds: this.rates.length,
      p50Ns: { map: map[0], unmap: unmap[0] },
      p99Ns: { map: map[1], unmap: unmap[1] },
      tlbHitRate: hits / Math.max(1, hits + misses),
      meanBatch: this.mode === 'nr' ? this.appends / Math.max(1, this.batches) : 0,
      heapBytesPerOp: this.heapBytes / Math.max(1, this.measuredOps),
      mapFailures: this.mapsFailed / Math.max(1, this.maps),
    };
  }
}

/**
 * The machine's own scaling at a core count: that many threads running a plain loop of loads
 * (workers/loop.js) for a round's time, no simulator code. Measured in the same passes as the
 * points, it tells what speed-up the machine itself gave at that moment.
 */
class Reference {
  readonly rates: number[] = [];
  private constructor(readonly cores: number, private readonly workers: Worker[]) {}

  static start(cores: number): Reference {
    const sab = new SharedArrayBuffer(cores * 4 * 2 ** 20);
    const url = new URL('../../workers/loop.js', import.meta.url);
    return new Reference(cores, [...Array(cores).keys()].map((id) => new Worker(url, { workerData: { sab, id } })));
  }

  async run(measured: boolean): Promise<void> {
    const t0 = performance.now();
    const counts = await Promise.all(this.workers.map((w) => new Promise<number>((resolve, reject) => {
      // One listener of each per round, removed with the round (no build-up across rounds).
      const done = (n: number): void => {
        w.off('error', fail);
        resolve(n);
      };
      const fail = (e: Error): void => {
        w.off('message', done);
        reject(e);
      };
      w.once('message', done);
      w.once('error', fail);
      w.postMessage({ ms: ROUND_MS });
    })));
    if (measured) this.rates.push(counts.reduce((a, b) => a + b, 0) / ((performance.now() - t0) / 1000));
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/**
 * Runs the workload at every core count, NR and (with baseline) the lock baseline. Every point
 * is booted first and warmed up by a few rounds; then rounds are alternated between the points
 * until each has run `seconds`, so that the shared machine's drift and bursts hit every point
 * alike. A point's ops/s is the median of its rounds' rates.
 */
export async function runScale(o: {
  cores: number[]; nodes: number; workload: ScaleWorkload; seconds: number; baseline: boolean; log?: (s: string) => void;
  /** Trace every point into FILE with "-<cores>-<mode>" before its extension. */
  trace?: string;
}): Promise<ScaleResult> {
  const points: Point[] = [];
  const refs: Reference[] = [];
  try {
    for (const n of o.cores) {
      const ref = Reference.start(n);
      refs.push(ref);
      for (let i = 0; i < WARMUP_ROUNDS; i++) await ref.run(false);
    }
    for (const n of o.cores) {
      for (const mode of o.baseline ? (['nr', 'lock'] as const) : (['nr'] as const)) {
        o.log?.(`bench scale: booting ${o.workload} on ${n} core(s), ${mode}...`);
        const p = await Point.boot(n, o.nodes, o.workload, mode, o.trace !== undefined);
        points.push(p);
        for (let i = 0; i < WARMUP_ROUNDS; i++) await p.run(false);
      }
    }
    const budgetMs = o.seconds * 1000;
    let last = performance.now();
    for (let pass = 1; points.some((p) => p.busyMs < budgetMs || p.rates.length < 3); pass++) {
      for (const p of points) if (p.busyMs < budgetMs || p.rates.length < 3) await p.run(true);
      for (const r of refs) await r.run(true);
      if (performance.now() - last > 2000) {
        last = performance.now();
        o.log?.(`bench scale: pass ${pass}, ${points.map((p) => `${p.cores}${p.mode[0]} ${(p.busyMs / 1000).toFixed(1)}s`).join(', ')}`);
      }
    }
    const rows = points.map((p) => p.row());
    if (o.trace) {
      for (const p of points) await writeChromeTrace(p.m, o.trace.replace(/(\.json)?$/, `-${p.cores}-${p.mode}$1`));
    }
    const cpus = os.cpus();
    const ratios = o.cores.flatMap((n) => {
      const a = rows.find((r) => r.cores === n && r.mode === 'nr');
      const b = rows.find((r) => r.cores === n && r.mode === 'lock');
      return a && b ? [{ cores: n, nrOverLock: a.opsPerSec / b.opsPerSec }] : [];
    });
    return {
      node: process.version,
      machine: { cpu: cpus[0]?.model ?? 'unknown', cpus: cpus.length },
      workload: o.workload,
      seconds: o.seconds,
      note: `this machine has ${cpus.length} real CPUs: figures for more simulated cores than that measure contention, not speed-up`,
      method: 'every point booted first and warmed up by four rounds; rounds alternated between points; ops/s is the median of a point\'s rounds',
      rows,
      ratios,
      reference: refs.map((r) => ({ cores: r.cores, loadsPerSec: p50p99(r.rates)[0] ?? 0 })),
    };
  } finally {
    for (const p of points) await p.m.shutdown();
    for (const r of refs) await r.stop();
  }
}

const us = (ns: number | undefined): string => (ns === undefined ? '-' : (ns / 1000).toFixed(1));

/** The table printed by `nrvm bench scale`. */
export function formatScale(r: ScaleResult): string {
  const x1 = (mode: string): number | undefined => r.rows.find((q) => q.cores === 1 && q.mode === mode)?.opsPerSec;
  const ref1 = r.reference.find((q) => q.cores === 1)?.loadsPerSec;
  const times = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined || b === 0 ? '' : `${(a / b).toFixed(2)}x`);
  const lines = [
    `nrvm bench scale — workload ${r.workload}, ${r.seconds} s per point, Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs`,
    `${'cores'.padStart(5)} ${'mode'.padStart(5)} ${'ops/s'.padStart(10)} ${'vs 1'.padStart(6)} ${'machine'.padStart(7)} ${'NR/lock'.padStart(8)} ${'map p50/p99 us'.padStart(16)} ${'unmap p50/p99 us'.padStart(18)} ${'TLB hit'.padStart(8)} ${'batch'.padStart(6)} ${'B/op'.padStart(6)}`,
  ];
  for (const x of r.rows) {
    const ratio = x.mode === 'nr' ? r.ratios.find((q) => q.cores === x.cores)?.nrOverLock : undefined;
    const machine = times(r.reference.find((q) => q.cores === x.cores)?.loadsPerSec, ref1);
    lines.push(
      `${String(x.cores).padStart(5)} ${x.mode.padStart(5)} ${x.opsPerSec.toFixed(0).padStart(10)} ${times(x.opsPerSec, x1(x.mode)).padStart(6)} ${machine.padStart(7)} ` +
        `${(ratio === undefined ? '' : ratio.toFixed(2) + 'x').padStart(8)} ` +
        `${`${us(x.p50Ns.map)}/${us(x.p99Ns.map)}`.padStart(16)} ${`${us(x.p50Ns.unmap)}/${us(x.p99Ns.unmap)}`.padStart(18)} ` +
        `${(100 * x.tlbHitRate).toFixed(1).padStart(7)}% ${(x.mode === 'nr' ? x.meanBatch.toFixed(2) : '-').padStart(6)} ${x.heapBytesPerOp.toFixed(1).padStart(6)}`,
    );
  }
  lines.push(
    '(vs 1: ops/s over the same mode at 1 core; machine: the same for a plain loop of loads on as many threads,',
    ' measured in the same passes — the speed-up the machine itself gave; ops/s: median of 100 ms rounds alternated between points)',
  );
  const failing = r.rows.filter((x) => x.mapFailures > 0.01);
  if (failing.length > 0) {
    lines.push(`(maps that failed: ${failing.map((x) => `${(100 * x.mapFailures).toFixed(1)}% at ${x.cores} ${x.mode}`).join(', ')} — ops/s counts them, latencies do not)`);
  }
  lines.push(`(${r.note})`);
  return lines.join('\n');
}
