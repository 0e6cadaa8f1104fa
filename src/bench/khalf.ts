// `nrvm bench khalf`: os5's three ways of keeping the kernel half in sync, side by side in one
// run, as the number of address spaces grows. For each method and space count, on the main thread
// with two cores attached (one per node): the cost of adding a top-level kernel entry (a kmap
// under a new one) and of removing it (its last kunmap; not the lazy method's), the cost of a
// switch into each space after such a change, kernel faults per switch (the first kernel access
// after it), and the memory the copies take (top-level entries written per change).

import { Machine } from '../machine/machine.js';
import { ACC_READ } from '../hw/fault.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import * as faults from '../kernel/fault.js';
import * as khalf from '../kernel/khalf.js';
import * as shootdowns from '../kernel/shootdown.js';
import * as spaces from '../kernel/space.js';
import { MAX_SPACES } from '../machine/config.js';
import { machineInfo, type MicroResult } from './micro.js';

export const KHALF_METHODS = ['eager', 'switch', 'lazy'] as const;

export interface KhalfRow {
  method: (typeof KHALF_METHODS)[number];
  spaces: number;
  /** Median µs of a kmap that adds a top-level entry; of the kunmap that removes it (null: lazy cannot). */
  addUs: number;
  removeUs: number | null;
  /** Median µs of a switch into a space right after a change (the copy it makes, if its method does). */
  switchUs: number;
  /** Kernel page faults per switch: the first kernel access in each space after a change. */
  faultsPerSwitch: number;
  /** Top-level entries written into address spaces per change, and their bytes. */
  entriesPerChange: number;
  bytesPerChange: number;
}

export interface KhalfResult {
  node: string;
  machine: MicroResult['machine'];
  /** The most address spaces the configuration allows (kernel.maxSpaces). */
  limit: number;
  rows: KhalfRow[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)];
}

/** Runs the benchmark over `counts` address spaces (capped at the configuration's limit), `reps` changes per point. */
export async function runKhalfBench(o: { counts: number[]; reps: number; log?: (s: string) => void }): Promise<KhalfResult> {
  const rows: KhalfRow[] = [];
  for (const method of KHALF_METHODS) {
    for (const n of o.counts) {
      const count = Math.min(n, MAX_SPACES);
      o.log?.(`bench: khalf ${method} with ${count} address spaces...`);
      const m = await Machine.boot({
        cores: 2, nodes: 2, memory: `${Math.max(64, Math.ceil((count * 3 * 4096) / 2 ** 20) + 64)}MiB`,
        kernel: { khalf: method, maxSpaces: count, maxMappings: 16, logEntries: 16, maxBatch: 4, ptPoolFrames: 8 },
      }, { pool: false });
      try {
        const k = m.kernel;
        const ids: number[] = [];
        for (let i = 0; i < count; i++) {
          const s = spaces.createSpace(k);
          if (s < 0) throw new Error(`bench: no room for address space ${i}`);
          ids.push(s);
        }
        m.setRegisters(0, { cpl: 0 });
        m.setRegisters(1, { cpl: 0 });
        const c0 = m.attachHere(0);
        const c1 = m.attachHere(1);
        shootdowns.switchTo(k, c0, ids[0]);
        const add: number[] = [];
        const remove: number[] = [];
        const sw: number[] = [];
        let switches = 0;
        let faultCount = 0;
        let entries = 0;
        for (let rep = 0; rep < o.reps; rep++) {
          const va = khalf.topBase(400 + (rep % 64));
          const e0 = k.stats.kernelEntryCopies;
          let t = performance.now();
          if (khalf.kmap(k, 0, vaHi(va), vaLo(va), 1, c0) !== 0) throw new Error('bench: kmap failed');
          add.push((performance.now() - t) * 1000);
          // Every space switched in once on core 1, with a kernel access after each switch.
          const f0 = k.stats.kernelFaults;
          const step = Math.max(1, Math.floor(count / 64));
          for (let i = 0; i < count; i += step) {
            t = performance.now();
            shootdowns.switchTo(k, c1, ids[i]);
            sw.push((performance.now() - t) * 1000);
            switches++;
            if (faults.access(k, c1, ACC_READ, vaHi(va), vaLo(va)) !== 0) throw new Error(`bench: the kernel access in space ${ids[i]} faulted`);
          }
          faultCount += k.stats.kernelFaults - f0;
          // Core 1 runs nothing now: the kunmap's shootdown does not wait for it (this thread drives both cores).
          shootdowns.leave(k, c1);
          t = performance.now();
          const code = khalf.kunmap(k, c0, vaHi(va), vaLo(va), method === 'lazy');
          if (code !== 0) throw new Error(`bench: kunmap failed (${code})`);
          if (method !== 'lazy') remove.push((performance.now() - t) * 1000);
          // Every top-level entry written into a space this round: eager updates, switch-in copies, lazy faults, removals.
          entries += k.stats.kernelEntryCopies - e0;
          // The lazy method's removal leaves stale entries: new kernel entries go elsewhere (rep % 64), and
          // the spaces are reset so the next round starts clean.
          if (method === 'lazy') for (const s of ids) khalf.syncSpace(k, s);
        }
        rows.push({
          method, spaces: count, addUs: median(add), removeUs: method === 'lazy' ? null : median(remove), switchUs: median(sw),
          faultsPerSwitch: faultCount / Math.max(1, switches), entriesPerChange: entries / (o.reps * (method === 'lazy' ? 1 : 2)),
          bytesPerChange: (entries * 8) / (o.reps * (method === 'lazy' ? 1 : 2)),
        });
        c0.detach();
        c1.detach();
      } finally {
        await m.shutdown();
      }
    }
  }
  return { node: process.version, machine: machineInfo(), limit: MAX_SPACES, rows };
}

export function formatKhalf(r: KhalfResult): string {
  const f = (x: number | null, d = 1): string => (x === null ? '—' : x.toFixed(d));
  return [
    `nrvm kernel-half benchmark — Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs (medians; at most ${r.limit} address spaces)`,
    `${'method'.padEnd(8)} ${'spaces'.padStart(7)} ${'add µs'.padStart(9)} ${'remove µs'.padStart(10)} ${'switch µs'.padStart(10)} ${'faults/switch'.padStart(14)} ${'entries/change'.padStart(15)} ${'bytes/change'.padStart(13)}`,
    ...r.rows.map((x) => `${x.method.padEnd(8)} ${String(x.spaces).padStart(7)} ${f(x.addUs).padStart(9)} ${f(x.removeUs).padStart(10)} ${f(x.switchUs, 2).padStart(10)} ${f(x.faultsPerSwitch, 2).padStart(14)} ${f(x.entriesPerChange).padStart(15)} ${f(x.bytesPerChange, 0).padStart(13)}`),
  ].join('\n');
}
