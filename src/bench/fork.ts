// `nrvm bench fork` (and `npm run bench`): a copy-on-write fork of an address space of N mapped
// pages against copying the same page tables with a plain byte copy, measured in the same run,
// with where the fork spent its time (the VS_FORK entry on the forker's replica, each child
// replica's build, the reference pass) and a second floor: the two atomic read-modify-writes per
// shared page that the reference pass cannot do without (a reference and the owner bit).

import { Bench } from 'tinybench';
import { Machine } from '../machine/machine.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import { tableFrames } from '../hw/pagetable.js';
import * as forks from '../kernel/fork.js';
import * as refs from '../kernel/refs.js';
import * as shootdowns from '../kernel/shootdown.js';
import * as spaces from '../kernel/space.js';
import * as vm from '../kernel/vm.js';
import { machineInfo, type MicroResult } from './micro.js';

export interface ForkResult {
  node: string;
  machine: MicroResult['machine'];
  rows: {
    pages: number; forkMs: number; tableFrames: number; byteCopyMs: number; ratio: number;
    /** Medians of the fork's phases (kernel/fork.ts forkPhases): the log entry, each child replica, the references. */
    protectMs: number; replicaMs: number[]; refsMs: number;
    /** 2 x pages Atomics.add on distinct words: the reference pass's floor. */
    atomicsMs: number;
  }[];
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
      const words = new Int32Array(new SharedArrayBuffer(8 * pages));
      // Three warm-up iterations: the passes over 100,000 mappings run a handful of times in all, and
      // the first ones run before V8 has optimised them.
      const bench = new Bench({ iterations: o.iterations, time: 0, warmupIterations: 3, warmupTime: 0 });
      const phases: { protect: number[]; replicas: number[][]; refs: number[] } = { protect: [], replicas: [], refs: [] };
      let child = -1;
      bench
        .add(`fork-${pages}`, () => {
          child = forks.fork(k, cpu, parent);
          if (child < 0) throw new Error('bench: fork failed');
        }, {
          // Destroying the child is not part of the fork: it runs outside the timed window.
          afterEach: (mode) => {
            if (mode === 'run') {
              phases.protect.push(forks.forkPhases.protect);
              phases.replicas.push(forks.forkPhases.replicas.slice());
              phases.refs.push(forks.forkPhases.refs);
            }
            spaces.destroySpace(k, child, (pfn, n, rights) => refs.releaseMapping(k, child, pfn, n, rights), cpu);
          },
        })
        .add(`copy-${pages}`, () => {
          for (let i = 0; i < tables.length; i++) {
            const dst = (scratch + (i % 1024)) * 1024;
            m.mem.copyWithin(dst, tables[i] * 1024, tables[i] * 1024 + 1024);
          }
        })
        .add(`atomics-${pages}`, () => atomicPairs(words, pages));
      await bench.run();
      const [f, c, a] = bench.tasks.map((t) => {
        if (t.result.state !== 'completed') throw new Error(`bench: ${t.name} did not complete`);
        return t.result.latency.p50;
      });
      rows.push({
        pages, forkMs: f, tableFrames: tables.length, byteCopyMs: c, ratio: f / c,
        protectMs: median(phases.protect), replicaMs: phases.replicas[0].map((_, r) => median(phases.replicas.map((x) => x[r]))),
        refsMs: median(phases.refs), atomicsMs: a,
      });
      cpu.detach();
    } finally {
      await m.shutdown();
    }
  }
  return { node: process.version, machine: machineInfo(), rows };
}

/** Two atomic read-modify-writes per page on distinct words, as the reference pass makes them. */
function atomicPairs(w: Int32Array, pages: number): void {
  for (let i = 0; i < pages; i++) {
    Atomics.add(w, i, 1);
    Atomics.or(w, pages + i, 2);
  }
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[s.length >> 1];
}

/** The page-table frames of space s, every replica. */
function tableFramesOf(m: Machine, s: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < m.config.nodes; r++) out.push(...tableFrames(m.mem, m.layout.totalFrames, m.kernel.vspace(s).root(r)));
  return out;
}

export function formatFork(r: ForkResult): string {
  const ms = (x: number): string => (x < 10 ? x.toFixed(3) : x.toFixed(1)) + ' ms';
  return [
    `nrvm fork benchmark — Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs (median of the iterations)`,
    `${'pages'.padStart(8)} ${'fork (COW)'.padStart(12)} ${'table frames'.padStart(13)} ${'byte copy'.padStart(11)} ${'ratio'.padStart(7)}` +
      ` | ${'log entry'.padStart(10)} ${'child replicas'.padStart(15)} ${'references'.padStart(11)} ${'2 atomics/page'.padStart(15)}`,
    ...r.rows.map((x) => `${String(x.pages).padStart(8)} ${ms(x.forkMs).padStart(12)} ${String(x.tableFrames).padStart(13)} ${ms(x.byteCopyMs).padStart(11)} ${(x.ratio.toFixed(0) + 'x').padStart(7)}` +
      ` | ${ms(x.protectMs).padStart(10)} ${x.replicaMs.map(ms).join(' + ').padStart(15)} ${ms(x.refsMs).padStart(11)} ${ms(x.atomicsMs).padStart(15)}`),
  ].join('\n');
}
