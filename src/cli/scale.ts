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

import os from 'node:os';
import { Machine } from '../machine/machine.js';
import type { CoreResult } from '../machine/executor.js';
import type { VmMix, VmMixProgram } from '../workloads/sources.js';
import { OK } from '../kernel/kernel.js';
import { R_USER, R_WRITE } from '../kernel/vspace.js';
import { sumCounters } from './stress.js';
import { writeChromeTrace } from '../trace/chrome.js';

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

export interface ScaleRow {
  cores: number;
  workload: ScaleWorkload;
  mode: 'nr' | 'lock';
  opsPerSec: number;
  p50Ns: { map?: number; unmap?: number };
  p99Ns: { map?: number; unmap?: number };
  tlbHitRate: number;
  meanBatch: number;
}

export interface ScaleResult {
  node: string;
  machine: { cpu: string; cpus: number };
  workload: ScaleWorkload;
  seconds: number;
  note: string;
  rows: ScaleRow[];
  /** Per core count: NR ops/s over lock ops/s (when the baseline ran). */
  ratios: { cores: number; nrOverLock: number }[];
}

function percentile(xs: number[], p: number): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** One (core count, mode) measurement. */
async function measure(cores: number, nodes: number, workload: ScaleWorkload, mode: 'nr' | 'lock', seconds: number, trace?: string): Promise<ScaleRow> {
  const slots = workload === 'maponly' ? 4096 : 64;
  const m = await Machine.boot({
    cores, nodes: Math.min(nodes, cores), memory: '512MiB', trace: trace !== undefined,
    kernel: { mode, maxSpaces: 2, maxMappings: cores * slots + 64, logEntries: 4096 },
  });
  try {
    const s = m.kernel.createSpace();
    m.kernel.spawn(s, -1);
    for (let c = 0; c < cores; c++) m.setRegisters(c, { cpl: 3 });
    if (workload === 'resolve' || workload === 'access' || workload === 'mixed') {
      // Map every core's slots first, from the controller acting as each core in turn.
      for (let c = 0; c < cores; c++) {
        for (let i = 0; i < slots; i++) {
          const f = m.frames.allocAny(m.layout.nodeOfCore(c));
          m.kernel.setRefcount(f, 1);
          m.kernel.ownerAdd(f, s);
          if (m.kernel.map(c, s, REGION + (c * slots + i) * 4096, f * 4096, 4096, R_USER | R_WRITE).code !== OK) throw new Error('bench scale: premap failed');
        }
      }
    }
    const before = sumCounters(m);
    let ops = 0;
    let busyMs = 0;
    const lat = { map: [] as number[], unmap: [] as number[] };
    let appends = 0;
    let batches = 0;
    const deadline = performance.now() + seconds * 1000;
    for (let round = 0; performance.now() < deadline; round++) {
      const jobs = [...Array(cores).keys()].map((c) => {
        const program: VmMixProgram = {
          kind: 'vm-mix', seed: 1 + round, count: 20000, cores, slots, regionBase: REGION,
          mix: { map: 0, unmap: 0, adjust: 0, access: 0, resolve: 0, switch: 0, fork: 0, exit: 0, check: 0, ...MIXES[workload] },
          latency: true,
        };
        return { core: c, program };
      });
      const t0 = performance.now();
      const res: CoreResult[] = await m.run(jobs);
      busyMs += performance.now() - t0;
      for (const r of res) {
        if (!r.ok) throw new Error(`bench scale: ${r.error}`);
        ops += r.ops;
        lat.map.push(...(r.latencies?.map ?? []));
        lat.unmap.push(...(r.latencies?.unmap ?? []));
        appends += r.kernel.nrAppends ?? 0;
        batches += r.kernel.nrBatches ?? 0;
      }
    }
    const after = sumCounters(m);
    if (trace) await writeChromeTrace(m, trace);
    const hits = after.tlbHits - before.tlbHits;
    const misses = after.tlbMisses - before.tlbMisses;
    return {
      cores, workload, mode,
      opsPerSec: ops / (busyMs / 1000),
      p50Ns: { map: percentile(lat.map, 50), unmap: percentile(lat.unmap, 50) },
      p99Ns: { map: percentile(lat.map, 99), unmap: percentile(lat.unmap, 99) },
      tlbHitRate: hits / Math.max(1, hits + misses),
      meanBatch: mode === 'nr' ? appends / Math.max(1, batches) : 0,
    };
  } finally {
    await m.shutdown();
  }
}

/** Runs the workload at every core count, NR and (with baseline) the lock baseline. */
export async function runScale(o: {
  cores: number[]; nodes: number; workload: ScaleWorkload; seconds: number; baseline: boolean; log?: (s: string) => void;
  /** Trace every point into FILE with "-<cores>-<mode>" before its extension. */
  trace?: string;
}): Promise<ScaleResult> {
  const rows: ScaleRow[] = [];
  for (const n of o.cores) {
    for (const mode of o.baseline ? (['nr', 'lock'] as const) : (['nr'] as const)) {
      o.log?.(`bench scale: ${o.workload} on ${n} core(s), ${mode}...`);
      const trace = o.trace ? o.trace.replace(/(\.json)?$/, `-${n}-${mode}$1`) : undefined;
      rows.push(await measure(n, o.nodes, o.workload, mode, o.seconds, trace));
    }
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
    rows,
    ratios,
  };
}

const us = (ns: number | undefined): string => (ns === undefined ? '-' : (ns / 1000).toFixed(1));

/** The table printed by `nrvm bench scale`. */
export function formatScale(r: ScaleResult): string {
  const lines = [
    `nrvm bench scale — workload ${r.workload}, ${r.seconds} s per point, Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs`,
    `${'cores'.padStart(5)} ${'mode'.padStart(5)} ${'ops/s'.padStart(10)} ${'NR/lock'.padStart(8)} ${'map p50/p99 us'.padStart(16)} ${'unmap p50/p99 us'.padStart(18)} ${'TLB hit'.padStart(8)} ${'batch'.padStart(6)}`,
  ];
  for (const x of r.rows) {
    const ratio = x.mode === 'nr' ? r.ratios.find((q) => q.cores === x.cores)?.nrOverLock : undefined;
    lines.push(
      `${String(x.cores).padStart(5)} ${x.mode.padStart(5)} ${x.opsPerSec.toFixed(0).padStart(10)} ${(ratio === undefined ? '' : ratio.toFixed(2) + 'x').padStart(8)} ` +
        `${`${us(x.p50Ns.map)}/${us(x.p99Ns.map)}`.padStart(16)} ${`${us(x.p50Ns.unmap)}/${us(x.p99Ns.unmap)}`.padStart(18)} ` +
        `${(100 * x.tlbHitRate).toFixed(1).padStart(7)}% ${(x.mode === 'nr' ? x.meanBatch.toFixed(2) : '-').padStart(6)}`,
    );
  }
  lines.push(`(${r.note})`);
  return lines.join('\n');
}
