// RPAL's address-space sharing (seeds/rpal-address-space-sharing.txt; behaviours 25, 26, 28, 29 of
// reference/seed-behaviours.md): user space is partitioned into 512 GiB slots, one top-level
// (PML4) entry each; a process in RPAL mode gets a slot, and every mapping it makes stays inside
// it. share(A, B) copies B's top-level entry into A's top-level table — in NR terms into every
// replica: A's replica on node r points at B's replica-r PDPT, so a core walks the shared slot in
// its own node's replica, and sees B's writes and B's later mappings there. A fault by A in B's
// slot is handled in B's address space (fault.ts); a shootdown of B's pages reaches the cores of
// every space that shares B's slot (shootdown.ts, with the owner's replica synced first).
//
// The links are written beside the NR logs, as the kernel half's entries are (khalf.ts): they are
// structure, not mappings — no replica's mapping database holds another space's pages, and the
// entry a link occupies is one the space's own operations never touch (its maps stay in its slot).
// Sharing covers spaces 0-31 (one mask word, as the frame owners' shadow does).

import type { Cpu } from '../hw/cpu.js';
import { missingTables } from '../hw/pagetable.js';
import { panic } from '../hw/panic.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import type { Kernel } from './context.js';
import { S_PKEYS, S_RPAL_SHARED, S_RPAL_SHARERS, S_RPAL_SLOT } from './layout.js';
import { A_KEY, A_RESERVED, A_VA, EINVAL, OK, OUT_OF_MEMORY, RS_ADJ_NEW, RS_ADJ_OLD, RS_ADJ_PAGES, RS_CODE, VS_PKEY, VS_TOP, keyOf } from './ops.js';
import { shootdown } from './shootdown.js';
import { MAX_SLOT, RPAL_SPACES, SLOT_BYTES, inSlot, slotOf, topWord, unlink } from './slots.js';
import { lockShared, syncAll, unlockShared } from './space.js';

export { MAX_SLOT, RPAL_SPACES, SLOT_BYTES, inSlot, ownerIn, sharedSlots, slotOf } from './slots.js';

/**
 * Puts space s in RPAL mode with slot n: from here on its mappings must lie inside [n * 512 GiB,
 * (n + 1) * 512 GiB) (INVALID_BASE otherwise), and the slot's PDPT exists in every replica. EINVAL
 * for a space that is not live, above 31, already in RPAL mode, with a mapping outside the slot, a
 * slot outside 1-255 or one another live space has; OUT_OF_MEMORY when no table could be had.
 */
export function enterSlot(kx: Kernel, s: number, n: number, cpu?: Cpu): number {
  const { k, klayout } = kx.v;
  if (!kx.isLive(s) || s >= RPAL_SPACES || slotOf(kx, s) >= 0 || !Number.isInteger(n) || n < 1 || n > MAX_SLOT) return kx.err({ code: EINVAL }).code;
  for (let t = 0; t < RPAL_SPACES && t < kx.maxSpaces; t++) if (t !== s && kx.isLive(t) && slotOf(kx, t) === n) return kx.err({ code: EINVAL }).code;
  const c = cpu?.id ?? kx.v.replicaOf.indexOf(0);
  lockShared(kx, s, cpu);
  try {
    const r = kx.beginRead(s, c, cpu);
    const outside = kx.vspace(s).db(r).entries().some((e) => !inSlot(n, e.va, e.pages * 4096));
    kx.endRead(s, c);
    if (outside) return kx.err({ code: EINVAL }).code;
    const va = n * SLOT_BYTES;
    const vs = kx.vspace(s);
    const need = missingTables(kx.v.mem, vs.root(kx.replicaFor(c)), vaHi(va), vaLo(va), 1) > 0 ? 1 : 0;
    if (!vs.reserveTables(need, kx.lockMode ? 1 : klayout.config.nodes)) return kx.err({ code: OUT_OF_MEMORY }).code;
    kx.args[A_VA] = vaHi(va);
    kx.args[A_VA + 1] = vaLo(va);
    kx.args[A_RESERVED] = need;
    kx.exec(s, c, cpu, VS_TOP);
    if (kx.resp[RS_CODE] !== OK) return kx.err({ code: kx.resp[RS_CODE] }).code;
    // Every replica has the slot's PDPT before anyone can link it (share copies each replica's entry).
    syncAll(kx, s);
    Atomics.store(k, klayout.spaceBase(s) + S_RPAL_SLOT, n + 1);
    return OK;
  } finally {
    unlockShared(kx, s);
  }
}

/**
 * share(A, B): B's slot appears in A — B's top-level entry copied into every replica of A (high
 * half first). EINVAL: a or b not an RPAL space, a === b, or B already shared into A.
 */
export function share(kx: Kernel, a: number, b: number): number {
  if (a === b || !isRpal(kx, a) || !isRpal(kx, b)) return kx.err({ code: EINVAL }).code;
  return link(kx, a, b);
}

/**
 * Links space b's slot into space a (share, and mshare's attach): b's top-level entry copied into
 * every replica of a, high half first, and the masks set. EINVAL when it is linked already.
 */
export function link(kx: Kernel, a: number, b: number): number {
  const { k, klayout, mem } = kx.v;
  const bit = 1 << b;
  if ((Atomics.or(k, klayout.spaceBase(a) + S_RPAL_SHARED, bit) & bit) !== 0) return kx.err({ code: EINVAL }).code;
  const slot = slotOf(kx, b);
  for (let r = 0; r < klayout.config.nodes; r++) {
    const from = topWord(kx, b, r, slot);
    const to = topWord(kx, a, r, slot);
    if ((Atomics.load(mem, from) & 1) === 0) panic(`rpal.share: space ${b}'s replica ${r} has no table for slot ${slot}`);
    Atomics.store(mem, to + 1, Atomics.load(mem, from + 1));
    Atomics.store(mem, to, Atomics.load(mem, from));
  }
  Atomics.or(k, klayout.spaceBase(b) + S_RPAL_SHARERS, 1 << a);
  return OK;
}

/**
 * unshare(A, B): B's slot leaves A — the entry cleared in every replica of A, then A's cores
 * flush A's PCID (cpu sends the shootdown; without a cpu, no core may run A, and A's TLB
 * generation makes cores flush when they switch in). EINVAL when B is not shared into A.
 */
export function unshare(kx: Kernel, a: number, b: number, cpu?: Cpu): number {
  const { k, klayout } = kx.v;
  if (a < 0 || a >= RPAL_SPACES || b < 0 || b >= RPAL_SPACES || (Atomics.load(k, klayout.spaceBase(a) + S_RPAL_SHARED) & (1 << b)) === 0) {
    return kx.err({ code: EINVAL }).code;
  }
  unlink(kx, a, b, cpu);
  return OK;
}

function isRpal(kx: Kernel, s: number): boolean {
  return Number.isInteger(s) && s >= 0 && s < RPAL_SPACES && kx.isLive(s) && slotOf(kx, s) >= 0;
}

/**
 * pkey_alloc: a protection key (1-15) of space s's own, or -1 - OUT_OF_MEMORY when all fifteen
 * are taken (Linux's ENOSPC). Key 0 is every page's default and never allocated.
 */
export function pkeyAlloc(kx: Kernel, s: number): number {
  kx.checkSpace(s);
  const word = kx.v.klayout.spaceBase(s) + S_PKEYS;
  for (;;) {
    const m = Atomics.load(kx.v.k, word);
    let key = 1;
    while (key < 16 && ((m >>> key) & 1) !== 0) key++;
    if (key === 16) return -1 - kx.err({ code: OUT_OF_MEMORY }).code;
    if (Atomics.compareExchange(kx.v.k, word, m, m | (1 << key)) === m) return key;
  }
}

/**
 * pkey_mprotect: the mapping of space s based at vhi:vlo takes protection key `key` (1-15, one s
 * allocated; EINVAL otherwise), in every replica, its leaves' bits 62:59 included; a changed key
 * is shot down (keys can take rights away), in the sharers of s's slot too. NOT_MAPPED when no
 * mapping is based there.
 */
export function pkeyMprotect(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number, key: number): number {
  kx.checkSpace(s);
  if (!Number.isInteger(key) || key < 1 || key > 15 || ((Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_PKEYS) >>> key) & 1) === 0) {
    return kx.err({ code: EINVAL }).code;
  }
  lockShared(kx, s, cpu);
  try {
    kx.args[A_VA] = vhi;
    kx.args[A_VA + 1] = vlo;
    kx.args[A_KEY] = key;
    kx.exec(s, cpu.id, cpu, VS_PKEY);
    if (kx.resp[RS_CODE] !== OK) return kx.err({ code: kx.resp[RS_CODE] }).code;
    if (keyOf(kx.resp[RS_ADJ_OLD]) !== keyOf(kx.resp[RS_ADJ_NEW])) shootdown(kx, cpu, s, vhi, vlo, kx.resp[RS_ADJ_PAGES]);
    return OK;
  } finally {
    unlockShared(kx, s);
  }
}
