// An OS's write of a paging-structure entry while other cores may be walking the tables (the
// programs' OP_PTE_WRITE): one atomic exchange when only the low half changes, break-before-make
// when the high half of a present entry changes. Built on a core's APIC (IPI_SYNC and its acks).

import type { Cpu } from '../hw/cpu.js';
import { CTR } from '../hw/layout.js';
import { PTE_P } from '../hw/pte.js';
import { IPI_OK, IPI_SYNC, IPI_TARGET_OFFLINE, WAIT_OK } from '../hw/apic.js';

/**
 * Writes, from cpu, the paging-structure entry whose low half is at word `word`. A change confined
 * to the low half is one atomic exchange. A change of the high half of a present entry is
 * break-before-make: clear P, IPI_SYNC every core in `walkers` and wait for their acks (none of
 * them is inside a walk afterwards), store hi, then lo. Returns the old low half, or a negative
 * WAIT_* value (-1 timeout, -2 aborted) when a walker did not answer. The caller invalidates TLBs
 * (its shootdown); this only keeps walks untorn. With the machine's 'torn-pte-update' injection,
 * an in-place two-store update with no break and no quiesce.
 */
export function updateEntry(cpu: Cpu, word: number, lo: number, hi: number, walkers: readonly number[]): number {
  const mem = cpu.mem;
  cpu.ctr[CTR.pteUpdates]++;
  const oldLo = Atomics.load(mem, word);
  if (mem[word + 1] === hi) return Atomics.exchange(mem, word, lo);
  if (cpu.layout.config.inject.includes('torn-pte-update')) {
    mem[word + 1] = hi;
    return Atomics.exchange(mem, word, lo);
  }
  if ((oldLo & PTE_P) !== 0) {
    Atomics.store(mem, word, oldLo & ~PTE_P);
    const r = quiesce(cpu, walkers);
    if (r !== WAIT_OK) return -r;
  }
  Atomics.store(mem, word + 1, hi);
  Atomics.store(mem, word, lo);
  return oldLo;
}

/** Sends IPI_SYNC from cpu to every listed core but itself and waits for all acks. */
export function quiesce(cpu: Cpu, cores: readonly number[]): number {
  for (let i = 0; i < cores.length; i++) {
    if (cores[i] === cpu.id) continue;
    const s = cpu.apic.sendIpi(cores[i], IPI_SYNC);
    if (s === IPI_TARGET_OFFLINE) continue;
    if (s !== IPI_OK) return s;
  }
  return cpu.apic.waitAcks();
}
