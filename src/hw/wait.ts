// The one bounded wait. Every wait in nrvm — a core waiting for IPI acks, a barrier or room in an
// IPI queue; NR waiting for a combiner, a log entry or a replica's readers; the kernel waiting
// for a space lock or a page-table pool — is the same loop:
//
//   w.begin();
//   while (!done) {
//     poll();                           // a core services its interrupts
//     const s = w.step();
//     if (s === STEP_EXPIRED) fail(...) // name what was awaited and who holds it
//     if (s === STEP_SLEEP) sleep;      // the doorbell (a core), or the awaited word
//   }
//
// It spins WAIT_SPINS steps, then sleeps in short slices; it gives up once `limitMs` has passed
// since its first sleep (the clock is read only after the spins, so a short wait costs no
// clock read, and then once every CLOCK_SLICES slices: a clock read is a heap number). What a
// waiter does on expiry is its own: a core returns WAIT_TIMEOUT naming what it waited for, NR and
// the kernel panic naming the instance, replica, lock or core. On a machine with more simulated
// cores than the host has CPUs a wait barely spins and sleeps longer: the thread it waits for
// can only run when this one yields.

import { availableParallelism } from 'node:os';

/** Steps spent spinning before a wait starts to sleep. */
export const WAIT_SPINS = 64;
/** One sleep slice on an awaited word nobody notifies, in ms. */
export const WAIT_SLICE_MS = 0.05;
/** The same with more simulated cores than host CPUs. */
export const OVERSUBSCRIBED_SPINS = 4;
export const OVERSUBSCRIBED_SLICE_MS = 0.5;

/** Whether `threads` busy threads (simulated cores) outnumber the host's CPUs. */
export function oversubscribed(threads: number): boolean {
  return threads > availableParallelism();
}

export const STEP_SPIN = 0;
export const STEP_SLEEP = 1;
export const STEP_EXPIRED = 2;

/** Sleep slices between two clock reads of a wait on a word nobody notifies (the bound is checked that often). */
const CLOCK_SLICES = 32;

/** One thread's bounded wait, reused from wait to wait (no allocation). */
export class BoundedWait {
  private deadline = 0;
  private spins = 0;

  /**
   * limitMs: the bound. clockSlices: sleep slices between two clock reads (1 for a waiter whose
   * slices are long, as a core's on its doorbell).
   */
  /** Steps a wait spins before it sleeps, and the length of a sleep slice in ms. */
  readonly spinSteps: number;
  readonly sliceMs: number;

  /**
   * `threads`: the simulated cores that share the host (more than its CPUs: spin little, sleep
   * longer). `spins`: the steps a wait spins before it sleeps when they do not.
   */
  constructor(readonly limitMs: number, private readonly clockSlices = CLOCK_SLICES, threads = 1, spins = WAIT_SPINS) {
    const over = oversubscribed(threads);
    this.spinSteps = over ? OVERSUBSCRIBED_SPINS : spins;
    this.sliceMs = over ? OVERSUBSCRIBED_SLICE_MS : WAIT_SLICE_MS;
  }

  /** Starts a new wait that spins `spins` steps before it sleeps (0: HLT sleeps at once). */
  begin(spins = this.spinSteps): void {
    this.deadline = 0;
    this.spins = WAIT_SPINS - spins;
  }

  /** One step: STEP_SPIN (go on at once), STEP_SLEEP (sleep one slice), or STEP_EXPIRED (the bound has passed). */
  step(): number {
    const n = ++this.spins;
    if (n <= WAIT_SPINS) return STEP_SPIN;
    if (this.clockSlices > 1 && (n - WAIT_SPINS) % this.clockSlices !== 1) return STEP_SLEEP;
    const now = Date.now();
    if (this.deadline === 0) this.deadline = now + this.limitMs;
    else if (now > this.deadline) return STEP_EXPIRED;
    return STEP_SLEEP;
  }
}

/** Sleeps one slice of `w` while words[word] holds `value` (nobody needs to notify: the slice ends anyway). */
export function sleepOn(w: BoundedWait, words: Int32Array, word: number, value: number): void {
  Atomics.wait(words, word, value, w.sliceMs);
}
