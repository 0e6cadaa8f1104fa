// Run control: the barriers that start and end a run of the machine's cores, and the abort flag
// a failing core raises. Built on each core's APIC (it services interrupts while it waits, and
// sleeps on its doorbell); the words are the control block's globals (hw/layout.ts).

import type { Cpu } from '../hw/cpu.js';
import { G_ABORT, G_BARRIER, G_PARTICIPANTS, G_STARTED, type Layout } from '../hw/layout.js';
import { HALT_SLICE_MS, WAIT_ABORTED, WAIT_OK, WAIT_TIMEOUT, ringDoorbell } from '../hw/apic.js';
import { STEP_EXPIRED, STEP_SLEEP } from '../hw/wait.js';

/**
 * Start-of-run barrier: waits until every core of the run is attached, so that no IPI of the
 * run finds its target offline. Services interrupts meanwhile. Returns a WAIT_* value.
 */
export function startBarrier(cpu: Cpu): number {
  return barrierOn(cpu, G_STARTED, 'the start-of-run barrier');
}

/**
 * End-of-run barrier: arrives, then keeps servicing interrupts until every core of the run
 * has arrived, so that no core's IPI waits on a core that already left. Returns a WAIT_* value.
 */
export function endBarrier(cpu: Cpu): number {
  return barrierOn(cpu, G_BARRIER, 'the end-of-run barrier');
}

function barrierOn(cpu: Cpu, word: number, what: string): number {
  const c = cpu.ctl;
  const apic = cpu.apic;
  const n = Atomics.load(c, G_PARTICIPANTS);
  // The last to arrive wakes the cores sleeping in the barrier (they re-read the word after
  // marking themselves HALTED: see Apic.sleepSlice).
  if (Atomics.add(c, word, 1) + 1 === n) {
    for (let i = 0; i < cpu.layout.config.cores; i++) if (i !== cpu.id && apic.isHalted(i)) apic.wake(i);
  }
  const w = apic.bw;
  w.begin();
  let arrived = 0;
  for (let now = Atomics.load(c, word); now < n; now = Atomics.load(c, word)) {
    // The bound is on no core arriving: a hundred workers starting on two CPUs take longer than
    // the wait limit to all arrive, and that is progress, not a stuck core.
    if (now !== arrived) {
      arrived = now;
      w.begin();
    }
    apic.poll();
    if (Atomics.load(c, G_ABORT) !== 0) return WAIT_ABORTED;
    const st = w.step();
    if (st === STEP_EXPIRED) {
      cpu.lastWaitWhat = `${what} (${Atomics.load(c, word)} of ${n} cores arrived, none for ${cpu.waitLimitMs} ms)`;
      return WAIT_TIMEOUT;
    }
    // The last to arrive wakes the sleepers (above), an IPI or an abort rings the doorbell: the
    // slice is a safety net, and short ones would have a hundred waiting cores wake thousands
    // of times a second on a machine of two CPUs, starving the cores still to arrive.
    if (st === STEP_SLEEP) apic.sleepSlice(word, n, HALT_SLICE_MS);
  }
  apic.poll();
  return WAIT_OK;
}

/** Sets the run's abort flag and wakes every core, after a failure on this core. */
export function abortRun(cpu: Cpu): void {
  abortAll(cpu.layout, cpu.ctl);
}

/** Sets the run's abort flag and wakes every core; from any thread (the controller, when a worker died). */
export function abortAll(layout: Layout, ctl: Int32Array): void {
  Atomics.store(ctl, G_ABORT, 1);
  for (let i = 0; i < layout.config.cores; i++) ringDoorbell(layout, ctl, i);
}
