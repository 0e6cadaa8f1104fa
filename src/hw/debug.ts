// A core's debug unit: the named breakpoints race scripts use to stop a core at a protocol step
// (as x86's debug registers stop it at an address). The controller arms a breakpoint on a core,
// waits until the core is parked at it, and resumes it; the core, at a breakpoint site, parks
// while that breakpoint is armed. Three words per core in the control block: armed (one bit per
// breakpoint), parked (id + 1, or 0), and a resume counter.

import { C_BP_ARMED, C_BP_PARKED, C_BP_RESUME, G_ABORT, type Layout } from './layout.js';
import { PH_BEGIN, PH_END, TR_PARKED } from './trace.js';
import { BoundedWait, STEP_EXPIRED } from './wait.js';
import type { Cpu } from './cpu.js';

/** A parked core sleeps in slices this long (woken by the resume word's notify). */
const PARK_SLICE_MS = 50;

export class DebugUnit {
  /** Its own wait: a breakpoint can be reached from a handler run inside another wait of the core. */
  private readonly wait: BoundedWait;

  constructor(private readonly ctl: Int32Array, private readonly base: number, private readonly cpu: Cpu) {
    this.wait = new BoundedWait(cpu.layout.config.waitLimitMs, 1);
  }

  /**
   * A named breakpoint site: when breakpoint `id` is armed on this core, the core parks here — it
   * publishes where it is and waits, running nothing and servicing no interrupt, until the
   * controller resumes it (bounded by waitLimitMs). One load when not armed.
   */
  breakpoint(id: number): void {
    const c = this.ctl;
    if ((c[this.base + C_BP_ARMED] & (1 << id)) === 0) return;
    const resume = Atomics.load(c, this.base + C_BP_RESUME);
    this.cpu.trace(PH_BEGIN, TR_PARKED, id);
    Atomics.store(c, this.base + C_BP_PARKED, id + 1);
    Atomics.notify(c, this.base + C_BP_PARKED);
    const w = this.wait;
    w.begin(0);
    let expired = false;
    while (Atomics.load(c, this.base + C_BP_RESUME) === resume) {
      if (Atomics.load(c, G_ABORT) !== 0) break;
      if (w.step() === STEP_EXPIRED) {
        expired = true;
        break;
      }
      Atomics.wait(c, this.base + C_BP_RESUME, resume, PARK_SLICE_MS);
    }
    Atomics.store(c, this.base + C_BP_PARKED, 0);
    this.cpu.trace(PH_END, TR_PARKED, id);
    // A core left parked is the controller's mistake (a script that never resumes): the core's
    // program ends with that message rather than going on as if it had been resumed.
    if (expired) throw new Error(`stayed parked at breakpoint ${id} for ${w.limitMs} ms: nothing resumed it (m.resume(${this.cpu.id}))`);
  }
}

// ---- the controller's side ----------------------------------------------------------------

/** Arms (or with on = false, disarms) breakpoint `id` on core c. */
export function setBreakpoint(layout: Layout, ctl: Int32Array, c: number, id: number, on: boolean): void {
  const w = layout.coreBase(c) + C_BP_ARMED;
  if (on) Atomics.or(ctl, w, 1 << id);
  else Atomics.and(ctl, w, ~(1 << id));
}

/** The word that holds id + 1 while core c is parked at breakpoint id (0 otherwise). */
export function parkedWord(layout: Layout, c: number): number {
  return layout.coreBase(c) + C_BP_PARKED;
}

/** Lets a parked core c go on (it stays armed unless disarmed). */
export function resumeCore(layout: Layout, ctl: Int32Array, c: number): void {
  const w = layout.coreBase(c) + C_BP_RESUME;
  Atomics.add(ctl, w, 1);
  Atomics.notify(ctl, w);
}
