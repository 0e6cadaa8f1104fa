// Race-reproduction scenarios: deterministic interleavings of real worker cores, driven by IPI
// handshakes inside the programs and by named breakpoints the script arms, waits on and resumes.
// No sleeps: a script waits for a core to park (Atomics.waitAsync) or for the run to end.
//
// The script API (RaceApi) is small: boot, a space with a process, run programs on cores, arm a
// breakpoint, wait until a core is parked there, look at the machine, resume, expect.

import { Machine } from '../machine/machine.js';
import type { CoreResult } from '../machine/executor.js';
import type { MachineOptions } from '../hw/config.js';
import type { Op, ProgramSpec } from '../machine/program.js';
import { BP_BEFORE_RESOLVE, BP_BEFORE_SHOOTDOWN_IPIS, OK } from '../kernel/kernel.js';
import { R_USER, R_WRITE } from '../kernel/vspace.js';
import { findEntry } from '../hw/ptbuild.js';
import { PTE_P } from '../hw/pte.js';

/** What a scenario reports: whether the documented outcome was reproduced, and the steps. */
export interface RaceOutcome {
  ok: boolean;
  steps: string[];
}

/** The script API. */
export class RaceApi {
  readonly steps: string[] = [];
  private failed = '';
  constructor(readonly m: Machine) {}

  static async boot(opts: MachineOptions): Promise<RaceApi> {
    return new RaceApi(await Machine.boot(opts));
  }

  /** A new address space with a process, every core in user mode. Returns the space. */
  space(): number {
    const s = this.m.kernel.createSpace();
    if (s < 0 || this.m.kernel.spawn(s, -1) < 0) throw new Error('race: no room for a process');
    for (let c = 0; c < this.m.config.cores; c++) this.m.setRegisters(c, { cpl: 3 });
    return s;
  }

  /** Maps one fresh page at va in space s, as core c, recorded as owned by s; returns its frame. */
  mapPage(c: number, s: number, va: number): number {
    const k = this.m.kernel;
    const f = this.m.frames.allocZeroed(this.m.layout.nodeOfCore(c));
    k.setRefcount(f, 1);
    k.ownerAdd(f, s);
    if (k.map(c, s, va, f * 4096, 4096, R_USER | R_WRITE).code !== OK) throw new Error(`race: cannot map 0x${va.toString(16)}`);
    return f;
  }

  /** Starts programs on cores (all at once); the promise settles when every one has ended. */
  run(programs: Record<number, Op[]>, extra: Partial<ProgramSpec> = {}): Promise<CoreResult[]> {
    return this.m.run(Object.entries(programs).map(([c, ops]) => ({ core: Number(c), program: { kind: 'ops', ops, checkOwner: true, ...extra } })));
  }

  /** Whether replica r of space s maps va (a present leaf). */
  replicaMaps(s: number, r: number, va: number): boolean {
    const w = findEntry(this.m.mem, this.m.kernel.vspace(s).root(r), false, Math.floor(va / 4294967296), va % 4294967296 | 0, 12);
    return w >= 0 && (Atomics.load(this.m.mem, w) & PTE_P) !== 0;
  }

  /** Whether core c's TLB holds a translation of the page at va. */
  tlbHolds(c: number, va: number): boolean {
    return this.m.tlb(c).some((e) => e.va === BigInt(va - (va % 4096)));
  }

  step(text: string): void {
    this.steps.push(text);
  }

  /** Records a check; the scenario fails if any check fails. */
  expect(cond: boolean, what: string): void {
    this.steps.push(`${cond ? 'ok  ' : 'FAIL'} ${what}`);
    if (!cond && !this.failed) this.failed = what;
  }

  outcome(): RaceOutcome {
    return { ok: !this.failed, steps: this.steps };
  }
}

export interface Scenario {
  name: string;
  models: string;
  run(): Promise<RaceOutcome>;
}

const X = 0x40_0000;

/**
 * stale-replica-fault — NRK's documented race (seeds/nrk-process-structure.txt): a map done
 * through replica A is not yet in replica B when a core of B accesses the page; the access
 * faults, the handler's Resolve applies the log to B, and the access resumes (a spurious fault).
 */
const staleReplicaFault: Scenario = {
  name: 'stale-replica-fault',
  models: 'NRK: a map on node 0 and an access on node 1 before node 1\'s replica applied it',
  async run() {
    const r = await RaceApi.boot({ cores: 2, nodes: 2, memory: '16MiB' });
    try {
      const s = r.space();
      r.m.arm(1, BP_BEFORE_RESOLVE);
      const done = r.run({
        1: [{ op: 'switch', space: s }, { op: 'ping', target: 0 }, { op: 'awaitPings', count: 1 }, { op: 'load', va: X }],
        0: [{ op: 'awaitPings', count: 1 }, { op: 'map', space: s, va: X, pages: 1, rights: R_USER | R_WRITE }, { op: 'ping', target: 1 }],
      });
      r.step('core 1 (node 1) runs the space; core 0 (node 0) maps 0x400000 through replica 0, then tells core 1');
      await r.m.waitParked(1, BP_BEFORE_RESOLVE);
      r.step('core 1 faulted on 0x400000 and is parked before Resolve');
      r.expect(r.replicaMaps(s, 0, X), 'replica 0 maps the page');
      r.expect(!r.replicaMaps(s, 1, X), 'replica 1 does not yet: it has not applied the log');
      r.m.disarm(1, BP_BEFORE_RESOLVE);
      r.m.resume(1);
      const res = await done;
      r.expect(res.every((x) => x.ok), 'both cores finished');
      const c1 = res.find((x) => x.core === 1) as CoreResult;
      r.expect(c1.kernel.spuriousFaults === 1 && c1.faults === 0, `Resolve repaired it: 1 spurious fault, 0 delivered (got ${c1.kernel.spuriousFaults}, ${c1.faults})`);
      r.expect(r.replicaMaps(s, 1, X), 'replica 1 maps the page now');
      return r.outcome();
    } finally {
      await r.m.shutdown();
    }
  },
};

/**
 * missing-shootdown — with the shootdown skipped, a core that cached a translation completes an
 * access through it after the unmap returned and the frame was freed: the stale-tlb oracle
 * reports it. (Any kernel that forgets to invalidate remote TLBs after changing page tables.)
 */
const missingShootdown: Scenario = {
  name: 'missing-shootdown',
  models: 'a kernel that unmaps without invalidating other cores\' TLBs (inject skip-shootdown)',
  async run() {
    const r = await RaceApi.boot({ cores: 2, nodes: 1, memory: '16MiB', inject: ['skip-shootdown'] });
    try {
      const s = r.space();
      r.mapPage(0, s, X);
      r.m.arm(0, BP_BEFORE_SHOOTDOWN_IPIS);
      const done = r.run({
        1: [{ op: 'switch', space: s }, { op: 'load', va: X }, { op: 'ping', target: 0 }, { op: 'awaitPings', count: 1 }, { op: 'load', va: X }],
        0: [{ op: 'switch', space: s }, { op: 'awaitPings', count: 1 }, { op: 'unmap', space: s, va: X }, { op: 'ping', target: 1 }],
      });
      r.step('core 1 loads 0x400000 (its TLB caches it) and tells core 0; core 0 unmaps it');
      await r.m.waitParked(0, BP_BEFORE_SHOOTDOWN_IPIS);
      r.step('core 0 applied the unmap and is parked where it would send the shootdown IPIs');
      r.expect(!r.replicaMaps(s, 0, X), 'the page tables no longer map the page');
      r.expect(r.tlbHolds(1, X), 'core 1\'s TLB still holds the translation');
      r.m.disarm(0, BP_BEFORE_SHOOTDOWN_IPIS);
      r.m.resume(0);
      const res = await done;
      r.expect(res.every((x) => x.ok), 'both cores finished');
      const c1 = res.find((x) => x.core === 1) as CoreResult;
      r.expect(c1.staleAccesses >= 1, `the oracle reports core 1's access through the stale translation (${c1.staleAccesses})`);
      return r.outcome();
    } finally {
      await r.m.shutdown();
    }
  },
};

export const SCENARIOS_RACE: Scenario[] = [staleReplicaFault, missingShootdown];

export function findRace(name: string): Scenario | undefined {
  return SCENARIOS_RACE.find((s) => s.name === name);
}
