// `nrvm bench share`: what RPAL's sharing costs and saves (issue 12), in one run on the main thread
// with one core attached, tinybench timing each:
//
//   call       an RPAL call and its return (user-context switch: registers and PKRU, no CR3 load)
//   switch     a process switch and back (two CR3 loads, PCIDs kept: no flush)
//   shared     unmap and map again of a page in a slot shared into another space (the shootdown
//              covers the sharer too: its replica's generation, its PCID's invalidation)
//   private    the same in a slot nobody shares
//
// One core runs, so no IPI is sent: the figures are the kernel's own paths (bench shootdown times
// IPI round trips).

import { Bench } from 'tinybench';
import { Machine } from '../machine/machine.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import { OK, R_USER, R_WRITE } from '../kernel/ops.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';
import * as rpal from '../kernel/rpal.js';
import * as shootdowns from '../kernel/shootdown.js';
import * as spaces from '../kernel/space.js';
import * as threads from '../kernel/thread.js';
import * as vm from '../kernel/vm.js';
import { machineInfo, type MicroResult } from './micro.js';

export interface ShareTask {
  name: 'call' | 'switch' | 'shared' | 'private';
  what: string;
  /** Mean and median ns per operation, and the samples behind them. */
  meanNs: number;
  p50Ns: number;
  samples: number;
}

export interface ShareResult {
  node: string;
  machine: MicroResult['machine'];
  tasks: ShareTask[];
  /** call / switch, and shared / private. */
  ratios: { callVsSwitch: number; sharedVsPrivate: number };
}

function fail(what: string): never {
  throw new Error(`bench share: ${what}`);
}

/** Runs the four tasks, `timeMs` each. */
export async function runShareBench(o: { timeMs: number }): Promise<ShareResult> {
  const m = await Machine.boot({ cores: 1, nodes: 1, memory: '32MiB', kernel: { maxSpaces: 4 } }, { pool: false });
  try {
    const k = m.kernel;
    const ids = [0, 1, 2].map(() => {
      const s = spaces.createSpace(k);
      if (s < 0 || procs.spawn(k, s, -1) < 0) fail('no room for a process');
      return s;
    });
    const [a, b, c] = ids;
    ids.forEach((s, i) => rpal.enterSlot(k, s, i + 1) === OK || fail(`slot for space ${s}`));
    if (rpal.share(k, a, b) !== OK) fail("sharing B's slot into A");
    const ta = threads.spawnThread(k, procs.pidOf(k, a));
    const tb = threads.spawnThread(k, procs.pidOf(k, b));
    if (ta < 0 || tb < 0) fail('threads');
    m.setRegisters(0, { cpl: 3 });
    const cpu = m.attachHere(0);
    if (threads.switchThread(k, cpu, ta) !== OK) fail("running A's thread");
    const bench = new Bench({ time: o.timeMs, warmupTime: Math.min(100, o.timeMs) });
    bench.add('call', () => {
      if (threads.rpalCall(k, cpu, tb) !== OK || threads.rpalReturn(k, cpu) !== OK) fail('an RPAL call failed');
    });
    bench.add('switch', () => {
      shootdowns.switchTo(k, cpu, c);
      shootdowns.switchTo(k, cpu, a);
    });
    // B's page (shared into A) and C's page (shared with nobody), each unmapped and mapped again.
    const remap = (s: number, va: number): void => {
      const r = vm.unmap(k, cpu, s, vaHi(va), vaLo(va));
      if (r.code !== OK) fail(`unmap in space ${s}`);
      refs.release(k, r.pfn, s);
      if (vm.mapAnon(k, cpu.id, s, vaHi(va), vaLo(va), 1, R_USER | R_WRITE, cpu) !== OK) fail(`map in space ${s}`);
    };
    const X = 2 * rpal.SLOT_BYTES + 0x40_0000;
    const Y = 3 * rpal.SLOT_BYTES + 0x40_0000;
    if (vm.mapAnon(k, 0, b, vaHi(X), vaLo(X), 1, R_USER | R_WRITE) !== OK || vm.mapAnon(k, 0, c, vaHi(Y), vaLo(Y), 1, R_USER | R_WRITE) !== OK) fail('the pages');
    bench.add('shared', () => remap(b, X));
    bench.add('private', () => remap(c, Y));
    await bench.run();
    const what: Record<ShareTask['name'], string> = {
      call: 'RPAL call + return (no CR3 load)', switch: 'process switch + back (2 CR3 loads)', shared: 'unmap + map, slot shared into another space', private: 'unmap + map, slot not shared',
    };
    const tasks: ShareTask[] = bench.tasks.map((t) => {
      const r = t.result;
      if (r.state !== 'completed') fail(`${t.name} did not complete (${r.state})`);
      return { name: t.name as ShareTask['name'], what: what[t.name as ShareTask['name']], meanNs: r.latency.mean * 1e6, p50Ns: r.latency.p50 * 1e6, samples: r.latency.samplesCount };
    });
    const by = (n: ShareTask['name']): number => tasks.find((t) => t.name === n)?.p50Ns ?? NaN;
    return { node: process.version, machine: machineInfo(), tasks, ratios: { callVsSwitch: by('call') / by('switch'), sharedVsPrivate: by('shared') / by('private') } };
  } finally {
    await m.shutdown();
  }
}

export function formatShare(r: ShareResult): string {
  const lines = [`nrvm bench share (Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs; one core, no IPIs)`];
  for (const t of r.tasks) lines.push(`  ${t.name.padEnd(8)} ${t.p50Ns.toFixed(0).padStart(8)} ns median  ${t.meanNs.toFixed(0).padStart(8)} ns mean  ${String(t.samples).padStart(8)} samples  ${t.what}`);
  lines.push(`  call / switch ${r.ratios.callVsSwitch.toFixed(2)}x; shared / private shootdown path ${r.ratios.sharedVsPrivate.toFixed(2)}x`);
  return lines.join('\n');
}
