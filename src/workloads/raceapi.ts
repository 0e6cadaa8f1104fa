// The race scripts' API (RaceApi): boot a machine, a space with a process, run programs on cores,
// arm a breakpoint, wait until a core is parked there, look at the machine, resume, expect. The
// scenarios are races.ts (NRK, shootdowns, copy-on-write, exits) and races-seeds.ts (MH's DMA and
// user-level copy-on-write, os5's kernel half); user scripts get it through loadRaceScript.

import { Machine } from '../machine/machine.js';
import type { CoreResult } from '../machine/executor.js';
import type { MachineOptions } from '../machine/config.js';
import type { Op, ProgramSpec } from '../machine/program.js';
import { OK } from '../kernel/ops.js';
import { R_USER, R_WRITE } from '../kernel/ops.js';
import { findEntry } from '../hw/pagetable.js';
import { PTE_P } from '../hw/pte.js';
import * as procs from '../kernel/proc.js';
import * as spaces from '../kernel/space.js';
import * as vm from '../kernel/vm.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import { BREAKPOINTS } from '../kernel/context.js';

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

  /** When set (nrvm race --trace), every run records trace events and close() hands the machine to it first. */
  static onClose: ((m: Machine) => Promise<void>) | undefined;

  static async boot(opts: MachineOptions): Promise<RaceApi> {
    return new RaceApi(await Machine.boot({ ...opts, trace: RaceApi.onClose !== undefined || opts.trace === true }));
  }

  /**
   * Boots a machine, runs `body` against it, and returns the outcome; the machine is closed
   * whatever happens. The usual shape of a scenario.
   */
  static async session(opts: MachineOptions, body: (r: RaceApi) => Promise<void>): Promise<RaceOutcome> {
    const r = await RaceApi.boot(opts);
    try {
      await body(r);
      return r.outcome();
    } finally {
      await r.close();
    }
  }

  /** Lets the onClose hook see the machine (the trace), then stops it. */
  async close(): Promise<void> {
    if (RaceApi.onClose) await RaceApi.onClose(this.m);
    await this.m.shutdown();
  }

  /** A new address space with a process, every core in user mode. Returns the space. */
  space(): number {
    const s = spaces.createSpace(this.m.kernel);
    if (s < 0 || procs.spawn(this.m.kernel, s, -1) < 0) throw new Error('race: no room for a process');
    for (let c = 0; c < this.m.config.cores; c++) this.m.setRegisters(c, { cpl: 3 });
    return s;
  }

  /** Maps one fresh page at va in space s, as core c, recorded as owned by s; returns its frame. */
  mapPage(c: number, s: number, va: number): number {
    if (vm.mapAnon(this.m.kernel, c, s, vaHi(va), vaLo(va), 1, R_USER | R_WRITE) !== OK) throw new Error(`race: cannot map 0x${va.toString(16)}`);
    return this.m.kernel.anonFrame;
  }

  /** Starts programs on cores (all at once); the promise settles when every one has ended. */
  /** A core whose program fails (a wait past its bound, a breakpoint never resumed) is a step naming why. */
  async run(programs: Record<number, Op[]>, extra: Partial<ProgramSpec> = {}): Promise<CoreResult[]> {
    const res = await this.m.run(Object.entries(programs).map(([c, ops]) => ({ core: Number(c), program: { kind: 'ops', ops, checkOwner: true, ...extra } })));
    const name = (id: string): string => Object.keys(BREAKPOINTS).find((k) => BREAKPOINTS[k] === Number(id)) ?? id;
    for (const r of res) if (!r.ok) this.steps.push(`failed: ${(r.error ?? `core ${r.core}: no reason given`).replace(/breakpoint (\d+)/, (_, id: string) => `breakpoint ${name(id)}`)}`);
    return res;
  }

  /** Whether replica r of space s maps va (a present leaf). */
  replicaMaps(s: number, r: number, va: number): boolean {
    const w = findEntry(this.m.mem, this.m.kernel.vspace(s).root(r), false, vaHi(va), vaLo(va), 12);
    return w >= 0 && (Atomics.load(this.m.mem, w) & PTE_P) !== 0;
  }

  /** Whether core c's TLB holds a translation of the page at va. */
  tlbHolds(c: number, va: number): boolean {
    return this.m.tlb(c).some((e) => e.va === BigInt(va - (va % 4096)));
  }

  /** Waits (bounded, no timer-driven polling of time) until cond holds: a handshake on shared state. */
  async until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`race: waited ${timeoutMs} ms for ${what}`);
      await new Promise((done) => setImmediate(done));
    }
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

