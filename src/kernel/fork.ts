// Fork with copy-on-write (xv6's uvmcopy, Linux's dup_mmap and copy_page_range): a new address
// space with every mapping of the parent except wired and I/O ones. Private frames become
// copy-on-write in both (read-only, one more reference each); demand-zero pages stay demand-zero.
//
// One operation, not one per page: with the parent's space lock held alone (no mapping change in
// flight), one VS_FORK entry in the parent's log makes its shareable mappings copy-on-write on
// every replica as each applies it (forkcopy.ts); the child's replicas are then built in bulk
// from the forker's up-to-date replica — tables copied table by table onto each node, the
// mapping database copied whole — before anyone can run the child, so they need no log of their
// own; one pass adds the child's references; one shootdown (a whole-PCID flush) removes the
// parent's now stale writable translations. A child that cannot be completed (out of memory)
// is undone whole, before it holds any reference.

import type { Cpu } from '../hw/cpu.js';
import { forEachLeaf } from '../hw/pagetable.js';
import { vaHi, vaJoin, vaLo } from '../hw/vaddr.js';
import type { Kernel } from './context.js';
import type { MapEntry } from './mapdb.js';
import { copyUserTables, notShared } from './forkcopy.js';
import { sharedSlots } from './slots.js';
import { S_FORKS, S_LOCK_PROGRESS, S_PKEYS, SR_TABLES } from './layout.js';
import { OUT_OF_MEMORY, R_ZERO, RS_FORK_NARROWED, VS_FORK } from './ops.js';
import { addRef, ownerAdd } from './refs.js';
import { SHOOTDOWN_FULL_FLUSH_PAGES, shootdown } from './shootdown.js';
import { createSpace, destroySpace, lockExclusive, unlockExclusive } from './space.js';

/**
 * Where the last fork on this thread spent its time, in ms (`nrvm bench fork` reports it):
 * the VS_FORK entry through the parent's log (appended, applied to the forker's replica), each
 * child replica's build (tables and mapping database), and the pass adding the child's references.
 */
export const forkPhases = { protect: 0, replicas: [] as number[], refs: 0 };

/** Forks `parent` on cpu (which runs it). Returns the child's space, or -1 - OUT_OF_MEMORY (or no free space). */
export function fork(kx: Kernel, cpu: Cpu, parent: number): number {
  kx.checkSpace(parent);
  const child = createSpace(kx);
  if (child < 0) return child;
  lockExclusive(kx, parent, cpu);
  const progress = kx.v.klayout.spaceBase(parent) + S_LOCK_PROGRESS;
  let narrowed = false;
  let forking = false;
  try {
    // A seqlock for MH's state oracle: odd while the fork changes the parent's pages, bumped again when done.
    Atomics.add(kx.v.k, kx.v.klayout.spaceBase(parent) + S_FORKS, 1);
    forking = true;
    const t = performance.now();
    kx.exec(parent, cpu.id, cpu, VS_FORK);
    forkPhases.protect = performance.now() - t;
    // From here the parent's writable translations of shared pages are stale, child or no child.
    narrowed = kx.resp[RS_FORK_NARROWED] > 0;
    Atomics.add(kx.v.k, progress, 1); // the lock's waiters see the fork moving
    if (!buildChild(kx, cpu, parent, child, progress)) {
      // Out of memory: the child holds no reference yet; the parent keeps its copy-on-write rights.
      destroySpace(kx, child, () => {});
      return -1 - OUT_OF_MEMORY;
    }
    // The child has the parent's protection keys (its leaves carry them).
    Atomics.store(kx.v.k, kx.v.klayout.spaceBase(child) + S_PKEYS, Atomics.load(kx.v.k, kx.v.klayout.spaceBase(parent) + S_PKEYS));
    return child;
  } finally {
    // One shootdown for all of the parent's now read-only pages (as Linux flushes the mm after
    // copying it): the whole PCID on every core running the parent.
    // The lock's waiters see it move with every request sent and every ack (with hundreds of
    // cores on a few CPUs this shootdown alone can take longer than their wait limit).
    if (narrowed) shootdown(kx, cpu, parent, 0, 0, SHOOTDOWN_FULL_FLUSH_PAGES + 1, () => void Atomics.add(kx.v.k, progress, 1));
    if (forking) Atomics.add(kx.v.k, kx.v.klayout.spaceBase(parent) + S_FORKS, 1);
    unlockExclusive(kx, parent);
  }
}

/** Reused by buildChild's passes. */
const scratch: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };

/**
 * Builds every replica of the (empty, not yet running) child from cpu's replica of the parent,
 * which has applied the fork: tables and mapping database copied, wired and I/O mappings taken
 * out, then a reference and the child's ownership added to every shared frame. Returns false,
 * having added no reference, when a node has no frame for a table.
 */
function buildChild(kx: Kernel, cpu: Cpu, parent: number, child: number, progress: number): boolean {
  const { k, klayout, mem, frames } = kx.v;
  const r0 = kx.beginRead(parent, cpu.id, cpu);
  try {
    const from = kx.vspace(parent);
    const to = kx.vspace(child);
    const replicas = kx.lockMode ? 1 : klayout.config.nodes;
    // RPAL: the slots of other spaces shared into the parent are theirs, not copied (rpal.ts).
    const shared = sharedSlots(kx, parent);
    forkPhases.replicas.length = 0;
    for (let r = 0; r < replicas; r++) {
      const t = performance.now();
      const made = copyUserTables(mem, frames, from.root(r0), to.root(r), r, shared);
      if (made === null) return false;
      k[klayout.replicaBase(child, r) + SR_TABLES] += made.length;
      to.db(r).copyFrom(from.db(r0));
      Atomics.add(k, progress, 1);
      forkPhases.replicas.push(performance.now() - t);
    }
    const t = performance.now();
    const db = to.db(0);
    const left: MapEntry[] = [];
    for (let at = db.firstSlot(); at >= 0; at = db.nextSlot(at)) {
      const rights = db.slotRights(at);
      if (notShared(rights)) left.push({ va: vaJoin(db.slotHi(at), db.slotLo(at)), pfn: db.slotPfn(at), pages: db.slotPages(at), rights });
      else if ((rights & R_ZERO) === 0) {
        const pfn = db.slotPfn(at);
        for (let p = 0, n = db.slotPages(at); p < n; p++) {
          addRef(kx, pfn + p);
          ownerAdd(kx, pfn + p, child);
        }
      }
    }
    forkPhases.refs = performance.now() - t;
    for (const e of left) {
      for (let r = 0; r < replicas; r++) {
        to.db(r).remove(vaHi(e.va), vaLo(e.va), scratch);
        clearLeaves(mem, to.root(r), e);
      }
    }
    return true;
  } finally {
    kx.endRead(parent, cpu.id);
  }
}

/** Clears the leaves of mapping e under root (the child's copy of a mapping it does not inherit). */
function clearLeaves(mem: Int32Array, root: number, e: MapEntry): void {
  forEachLeaf(mem, root, vaHi(e.va), vaLo(e.va), e.pfn, e.pages, (word) => {
    if (word >= 0) {
      mem[word] = 0;
      mem[word + 1] = 0;
    }
  });
}
