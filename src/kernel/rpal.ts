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
import { S_PKEYS, S_RPAL_KEY, S_RPAL_LINKSEQ, S_RPAL_SHARED, S_RPAL_SHARERS, S_RPAL_SLOT } from './layout.js';
import { A_KEY, A_RESERVED, A_VA, EINVAL, OK, OUT_OF_MEMORY, RS_ADJ_NEW, RS_ADJ_OLD, RS_ADJ_PAGES, RS_CODE, VS_PKEY, VS_TOP, keyOf } from './ops.js';
import { shootdown, syncForLink } from './shootdown.js';
import { MAX_SLOT, RPAL_SPACES, SLOT_BYTES, inSlot, slotOf, topWord, unlink } from './slots.js';
import { lockExclusive, lockShared, syncAll, unlockExclusive, unlockShared } from './space.js';

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
 * half first), with A's lock held alone (A's maps see the link or not, never half of it; two
 * shares or unshares of A take turns). EINVAL: a or b not an RPAL space, a === b, or B already
 * shared into A.
 */
export function share(kx: Kernel, a: number, b: number, cpu?: Cpu): number {
  if (a === b || !isRpal(kx, a) || !isRpal(kx, b)) return kx.err({ code: EINVAL }).code;
  lockExclusive(kx, a, cpu);
  try {
    return link(kx, a, b, cpu);
  } finally {
    unlockExclusive(kx, a);
  }
}

/**
 * Links space b's slot into space a (share, and mshare's attach): the masks set (b's shootdowns
 * reach a's cores from here on), b's replicas brought up to date where a's cores run (from cpu;
 * without one, all of them), then b's top-level entry copied into every replica of a, high half
 * first. EINVAL when it is linked already.
 */
export function link(kx: Kernel, a: number, b: number, cpu?: Cpu): number {
  const { k, klayout, mem } = kx.v;
  const bit = 1 << b;
  if ((Atomics.load(k, klayout.spaceBase(a) + S_RPAL_SHARED) & bit) !== 0) return kx.err({ code: EINVAL }).code;
  // Odd while the link is under way (the callers hold a's lock alone; slots.ts unlink does the same).
  Atomics.add(k, klayout.spaceBase(a) + S_RPAL_LINKSEQ, 1);
  Atomics.or(k, klayout.spaceBase(a) + S_RPAL_SHARED, bit);
  const slot = slotOf(kx, b);
  // b's shootdowns reach a's cores from before the first entry is written: a core of a may cache
  // b's pages as soon as it can walk there — in b's replica on its node, brought up to date first.
  Atomics.or(k, klayout.spaceBase(b) + S_RPAL_SHARERS, 1 << a);
  if (cpu) syncForLink(kx, cpu, a, b);
  else syncAll(kx, b);
  for (let r = 0; r < klayout.config.nodes; r++) {
    const from = topWord(kx, b, r, slot);
    const to = topWord(kx, a, r, slot);
    if ((Atomics.load(mem, from) & 1) === 0) panic(`rpal.share: space ${b}'s replica ${r} has no table for slot ${slot}`);
    Atomics.store(mem, to + 1, Atomics.load(mem, from + 1));
    Atomics.store(mem, to, Atomics.load(mem, from));
  }
  Atomics.add(k, klayout.spaceBase(a) + S_RPAL_LINKSEQ, 1);
  return OK;
}

/**
 * unshare(A, B): B's slot leaves A — the entry cleared in every replica of A, then A's cores
 * flush A's PCID (cpu sends the shootdown; without a cpu, no core may run A, and A's TLB
 * generation makes cores flush when they switch in). EINVAL when B is not shared into A.
 */
export function unshare(kx: Kernel, a: number, b: number, cpu?: Cpu): number {
  const { k, klayout } = kx.v;
  if (!Number.isInteger(a) || a < 0 || a >= RPAL_SPACES || !Number.isInteger(b) || b < 0 || b >= RPAL_SPACES) return kx.err({ code: EINVAL }).code;
  lockExclusive(kx, a, cpu);
  try {
    if ((Atomics.load(k, klayout.spaceBase(a) + S_RPAL_SHARED) & (1 << b)) === 0) return kx.err({ code: EINVAL }).code;
    unlink(kx, a, b, cpu);
    return OK;
  } finally {
    unlockExclusive(kx, a);
  }
}

function isRpal(kx: Kernel, s: number): boolean {
  return Number.isInteger(s) && s >= 0 && s < RPAL_SPACES && kx.isLive(s) && slotOf(kx, s) >= 0;
}

/**
 * pkey_alloc: a protection key (1-15) of space s's own — the lowest free one, or `want` (an RPAL
 * kernel hands each process of a group keys no other has) — or -1 - OUT_OF_MEMORY when all
 * fifteen are taken (Linux's ENOSPC), -1 - EINVAL when `want` is not 1-15 or is taken. Key 0 is
 * every page's default and never allocated.
 */
export function pkeyAlloc(kx: Kernel, s: number, want = 0): number {
  kx.checkSpace(s);
  if (want !== 0 && (!Number.isInteger(want) || want < 1 || want > 15)) return -1 - kx.err({ code: EINVAL }).code;
  const word = kx.v.klayout.spaceBase(s) + S_PKEYS;
  for (;;) {
    const m = Atomics.load(kx.v.k, word);
    let key = want === 0 ? 1 : want;
    if (want === 0) while (key < 16 && ((m >>> key) & 1) !== 0) key++;
    else if (((m >>> key) & 1) !== 0) return -1 - kx.err({ code: EINVAL }).code;
    if (key === 16) return -1 - kx.err({ code: OUT_OF_MEMORY }).code;
    if (Atomics.compareExchange(kx.v.k, word, m, m | (1 << key)) === m) return key;
  }
}

/**
 * RPAL: every mapping space s makes in its slot from now on takes key `key` (one s allocated;
 * EINVAL otherwise, or when s is not in RPAL mode): the slot's pages carry the owner's key, so
 * that a thread of another process whose PKRU denies it cannot touch them though the slot is
 * shared (behaviour 27). Mappings made before keep theirs (pkeyMprotect changes them).
 */
export function setSlotKey(kx: Kernel, s: number, key: number): number {
  if (!isRpal(kx, s) || !Number.isInteger(key) || key < 1 || key > 15 || ((Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_PKEYS) >>> key) & 1) === 0) {
    return kx.err({ code: EINVAL }).code;
  }
  Atomics.store(kx.v.k, kx.v.klayout.spaceBase(s) + S_RPAL_KEY, key);
  return OK;
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
