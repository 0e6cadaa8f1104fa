// Fork with copy-on-write (xv6's uvmcopy, Linux's dup_mmap): a new address space with every
// mapping of the parent except wired and I/O ones. Private frames become copy-on-write in both
// (read-only, one more reference each); demand-zero pages stay demand-zero. The parent's space
// lock is held alone for the snapshot (no mapping change is in flight), its now stale writable
// translations are shot down once, as a whole-PCID flush, and a child that cannot be completed
// (out of memory) is undone whole — one rollback, as uvmcopy's.

import type { Cpu } from '../hw/cpu.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import type { Kernel } from './context.js';
import type { MapEntry } from './mapdb.js';
import { S_FORKS, S_LOCK_PROGRESS } from './layout.js';
import { OK, OUT_OF_MEMORY, PAGE, R_COW, R_IO, R_WIRED, R_WRITE, R_ZERO } from './ops.js';
import { addRef, ownerAdd, release, releaseMapping } from './refs.js';
import { SHOOTDOWN_FULL_FLUSH_PAGES, shootdown } from './shootdown.js';
import { createSpace, destroySpace, lockExclusive, unlockExclusive } from './space.js';
import { adjustLocked, entries, mapLocked } from './vm.js';

/** Forks `parent` on cpu (which runs it). Returns the child's space, or -1 - OUT_OF_MEMORY (or no free space). */
export function fork(kx: Kernel, cpu: Cpu, parent: number): number {
  kx.checkSpace(parent);
  const child = createSpace(kx);
  if (child < 0) return child;
  lockExclusive(kx, parent, cpu);
  const progress = kx.v.klayout.spaceBase(parent) + S_LOCK_PROGRESS;
  let madeCow = false;
  let forking = false;
  try {
    kx.sync(parent, cpu.id, cpu);
    // A seqlock for MH's state oracle: odd while the fork changes the parent's pages, bumped again when done.
    Atomics.add(kx.v.k, kx.v.klayout.spaceBase(parent) + S_FORKS, 1);
    forking = true;
    for (const e of entries(kx, cpu.id, parent, cpu)) {
      Atomics.add(kx.v.k, progress, 1); // the lock's waiters see the fork moving
      if ((e.rights & (R_WIRED | R_IO)) !== 0) continue;
      // MH's copy-on-write loses the read/write bit (the seed: "returns into being private, but
      // read-only, no matter the original state").
      const rights = (e.rights & R_ZERO) !== 0 ? e.rights : kx.mh ? (e.rights & ~R_WRITE) | R_COW : e.rights | R_COW;
      // shareInto makes the parent's page copy-on-write before the child maps it: from then on the
      // parent's writable translations are stale, whether or not the child's map succeeds.
      if (rights !== e.rights) madeCow = true;
      if (!shareInto(kx, cpu, parent, child, e, rights)) {
        // Out of memory: undo the child (its references go with it); the parent keeps its COW rights.
        destroySpace(kx, child, (pfn, pages, r) => releaseMapping(kx, child, pfn, pages, r));
        return -1 - OUT_OF_MEMORY;
      }
    }
    return child;
  } finally {
    // One shootdown for all of the parent's now read-only pages (as Linux flushes the mm after
    // copying it): the whole PCID on every core running the parent.
    // The lock's waiters see it move with every request sent and every ack (with hundreds of
    // cores on a few CPUs this shootdown alone can take longer than their wait limit).
    if (madeCow) shootdown(kx, cpu, parent, 0, 0, SHOOTDOWN_FULL_FLUSH_PAGES + 1, () => void Atomics.add(kx.v.k, progress, 1));
    if (forking) Atomics.add(kx.v.k, kx.v.klayout.spaceBase(parent) + S_FORKS, 1);
    unlockExclusive(kx, parent);
  }
}

/**
 * Shares mapping e of the parent with the child under `rights`: private frames gain the child's
 * reference and ownership and become copy-on-write in the parent (no shootdown yet), then the
 * child maps them. Returns false, with the child's hold on e's frames released, when the child's
 * map fails.
 */
function shareInto(kx: Kernel, cpu: Cpu, parent: number, child: number, e: MapEntry, rights: number): boolean {
  const shared = (rights & R_ZERO) === 0;
  const hi = vaHi(e.va);
  const lo = vaLo(e.va);
  if (shared) {
    for (let p = 0; p < e.pages; p++) {
      addRef(kx, e.pfn + p);
      ownerAdd(kx, e.pfn + p, child);
    }
    if (rights !== e.rights) adjustLocked(kx, cpu, parent, hi, lo, rights, undefined, false);
  }
  if (mapLocked(kx, cpu.id, child, hi, lo, e.pfn * PAGE, e.pages * PAGE, rights, cpu).code === OK) return true;
  if (shared) for (let p = 0; p < e.pages; p++) release(kx, e.pfn + p, child);
  return false;
}
