// RPAL's slots and the links between address spaces that sharing makes (rpal.ts shares; this
// module is what the rest of the kernel asks of them): a space's slot, the owner of a shared slot
// holding an address, the slots linked into a space, and unlinking — a link cleared in every
// replica of the sharer and the sharer's cores shot down — for unshare and before a space is
// destroyed. Below space.ts: it shoots down, and takes no space lock.

import type { Cpu } from '../hw/cpu.js';
import { FRAME_WORDS } from '../hw/pte.js';
import { panic } from '../hw/panic.js';
import type { Kernel } from './context.js';
import { S_RPAL_KEY, S_RPAL_SHARED, S_RPAL_SHARERS, S_RPAL_SLOT, S_RPAL_LINKSEQ, S_TLBGEN } from './layout.js';
import { R_KEY_MASK, R_KEY_SHIFT } from './ops.js';
import { SHOOTDOWN_FULL_FLUSH_PAGES, activeCores, shootdown } from './shootdown.js';

/** The spaces sharing can involve: 0-31. */
export const RPAL_SPACES = 32;
/** A slot's span: one top-level entry of 4-level paging. */
export const SLOT_BYTES = 2 ** 39;
/** Slots a process may take: 1-255 (slot 0 holds low addresses every process uses; 256-511 are the kernel half). */
export const MAX_SLOT = 255;

/** Space s's slot, or -1 when it is not in RPAL mode. */
export function slotOf(kx: Kernel, s: number): number {
  return Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_RPAL_SLOT) - 1;
}

/** Rights with the key of space s's slot (setSlotKey) in place of theirs, when the slot has one. */
export function withSlotKey(kx: Kernel, s: number, rights: number): number {
  const key = Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_RPAL_KEY);
  return key === 0 ? rights : (rights & ~R_KEY_MASK) | (key << R_KEY_SHIFT);
}

/** Whether [va, va + bytes) lies inside slot n. */
export function inSlot(n: number, va: number, bytes: number): boolean {
  return va >= n * SLOT_BYTES && va + bytes <= (n + 1) * SLOT_BYTES;
}

/** The word of top-level entry i of replica r of space s. */
export function topWord(kx: Kernel, s: number, r: number, i: number): number {
  return kx.vspace(s).root(r) * FRAME_WORDS + i * 2;
}

/**
 * Takes space b's slot out of space a: the entry cleared in every replica of a, then a's cores
 * flush a's PCID — shot down from cpu, or, without one (the controller), none may run a (a panic
 * names them) and a's TLB generation makes cores flush when they switch in — and only then the
 * masks cleared: until every core of a has flushed, a's cores may still hold b's translations,
 * so b's shootdowns must still reach them, and the oracles still count b's frames as a's to reach.
 */
export function unlink(kx: Kernel, a: number, b: number, cpu: Cpu | undefined): void {
  const { k, klayout, mem } = kx.v;
  const slot = slotOf(kx, b);
  // The links' sequence count, odd while an unlink (or a link, rpal.ts) is under way: a reader that
  // saw it even and unchanged around an access knows that a's links stayed as they were meanwhile.
  Atomics.add(k, klayout.spaceBase(a) + S_RPAL_LINKSEQ, 1);
  for (let r = 0; r < klayout.config.nodes; r++) {
    const w = topWord(kx, a, r, slot);
    Atomics.store(mem, w, 0);
    Atomics.store(mem, w + 1, 0);
  }
  if (cpu) shootdown(kx, cpu, a, 0, 0, SHOOTDOWN_FULL_FLUSH_PAGES + 1);
  else {
    const running = activeCores(kx, a);
    if (running.length > 0) panic(`rpal: space ${b}'s slot leaves space ${a} while cores ${running.join(',')} run it, and no core was given to shoot them down`);
    Atomics.add(k, klayout.spaceBase(a) + S_TLBGEN, 1);
  }
  Atomics.and(k, klayout.spaceBase(b) + S_RPAL_SHARERS, ~(1 << a));
  Atomics.and(k, klayout.spaceBase(a) + S_RPAL_SHARED, ~(1 << b));
  Atomics.add(k, klayout.spaceBase(a) + S_RPAL_LINKSEQ, 1);
}

/** The top-level indices of the slots shared into space s (fork copies none of them). */
export function sharedSlots(kx: Kernel, s: number): number[] {
  const m = s < RPAL_SPACES ? Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_RPAL_SHARED) : 0;
  const out: number[] = [];
  for (let b = 0; b < RPAL_SPACES; b++) if (((m >>> b) & 1) !== 0) out.push(slotOf(kx, b));
  return out;
}

/** Whether [va, va + bytes) overlaps a slot linked into space s (not the space's to map: an RPAL share or an mshare region). */
export function overlapsLinked(kx: Kernel, s: number, va: number, bytes: number): boolean {
  if (s >= RPAL_SPACES || Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_RPAL_SHARED) === 0) return false;
  for (const slot of sharedSlots(kx, s)) if (va < (slot + 1) * SLOT_BYTES && va + bytes > slot * SLOT_BYTES) return true;
  return false;
}

/**
 * The space whose slot holds address va in space s, when it is not s's own: the owner of a slot
 * shared into s (its faults are handled there), else -1.
 */
export function ownerIn(kx: Kernel, s: number, va: number): number {
  if (s >= RPAL_SPACES) return -1;
  const m = Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_RPAL_SHARED);
  if (m === 0) return -1;
  const slot = Math.floor(va / SLOT_BYTES);
  for (let b = 0; b < RPAL_SPACES; b++) if (((m >>> b) & 1) !== 0 && slotOf(kx, b) === slot) return b;
  return -1;
}

/**
 * Before space s is destroyed: every slot shared into it leaves it, and its own slot leaves every
 * space it is shared into (shot down from cpu, or, without one, flushed at their next switch);
 * then s leaves RPAL mode. Nothing to do for a space that never shared.
 */
export function detachAll(kx: Kernel, s: number, cpu?: Cpu): void {
  if (s >= RPAL_SPACES) return;
  const { k, klayout } = kx.v;
  const b = klayout.spaceBase(s);
  const shared = Atomics.load(k, b + S_RPAL_SHARED);
  for (let o = 0; o < RPAL_SPACES; o++) if (((shared >>> o) & 1) !== 0) unlink(kx, s, o, undefined);
  const sharers = Atomics.load(k, b + S_RPAL_SHARERS);
  for (let a = 0; a < RPAL_SPACES; a++) if (((sharers >>> a) & 1) !== 0) unlink(kx, a, s, cpu);
  Atomics.store(k, b + S_RPAL_SLOT, 0);
}
