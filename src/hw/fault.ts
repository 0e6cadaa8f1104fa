// What an access is and how it fails (Intel SDM Vol. 3A 4.6 "Access rights", 4.7 "Page-fault
// exceptions"): the access kinds, the negative-sense flags a translation carries and an access is
// checked against, the #PF error-code bits, and faults encoded as negative numbers so that every
// result on a hot path stays a number.

import type { Regs } from './regs.js';

// ---- access kinds ----
/** The access kinds and flags below as const enums, for the hot paths (see pte.ts's Pte). */
export const enum Acc {
  READ = 0,
  WRITE = 1,
  FETCH = 2,
  IMPLICIT_READ = 3,
  IMPLICIT_WRITE = 4,
}
export const enum Fl {
  NW = 1 << 0,
  SUPER = 1 << 1,
  USER = 1 << 2,
  XD = 1 << 3,
  CLEAN = 1 << 4,
  NOMEM = 1 << 5,
  PK_SHIFT = 16,
}
export const ACC_READ = Acc.READ;
export const ACC_WRITE = Acc.WRITE;
export const ACC_FETCH = Acc.FETCH;
/**
 * Implicit supervisor-mode accesses (SDM 4.6: descriptor tables, the TSS, ... accessed at any CPL):
 * supervisor rules, SMAP regardless of EFLAGS.AC, U/S = 0 in a #PF's error code. They never take
 * the MMU's fast path.
 */
export const ACC_IMPLICIT_READ = Acc.IMPLICIT_READ;
export const ACC_IMPLICIT_WRITE = Acc.IMPLICIT_WRITE;

// ---- translation flags, negative sense (v86 style): an access is allowed iff (flags & mask) == 0
/** Combined R/W = 0. */
export const F_NW = Fl.NW;
/** Supervisor-mode address (some level has U/S = 0). */
export const F_SUPER = Fl.SUPER;
/** User-mode address (U/S = 1 at every level): SMAP, SMEP and protection keys apply. */
export const F_USER = Fl.USER;
/** Execute-disable (XD at some level, EFER.NXE = 1). */
export const F_XD = Fl.XD;
/** Leaf D = 0: a write must walk again to set D. */
export const F_CLEAN = Fl.CLEAN;
/** The page lies (partly) outside installed memory: every access takes the slow path, which bounds it. */
export const F_NOMEM = Fl.NOMEM;
/** Bits 16..31: one-hot protection key of a user-mode page (bit 16 + key). */
export const F_PK_SHIFT = Fl.PK_SHIFT;
export const F_PK_ALL = 0xffff << 16;

// ---- #PF error code (SDM 4.7) ----
export const PF_P = 1 << 0;
export const PF_W = 1 << 1;
export const PF_U = 1 << 2;
export const PF_RSVD = 1 << 3;
export const PF_ID = 1 << 4;
export const PF_PK = 1 << 5;

export const VEC_GP = 13;
export const VEC_PF = 14;
/** Not an x86 vector: an access to physical memory that is not installed (reads all ones, writes dropped). */
export const VEC_NOMEM = 255;

/** Encodes a fault as a negative number: -1 - (vector << 16 | errorCode). */
export function fault(vector: number, error: number): number {
  return -1 - ((vector << 16) | error);
}
export function faultVector(r: number): number {
  return (-1 - r) >>> 16;
}
export function faultError(r: number): number {
  return (-1 - r) & 0xffff;
}
export const FAULT_GP0 = fault(VEC_GP, 0);
export const FAULT_NOMEM = fault(VEC_NOMEM, 0);

/** Error-code bits that describe the access rather than the entry: W, U, I/D. */
export function accessErrorBits(regs: Regs, acc: number): number {
  let e = 0;
  if (acc === ACC_WRITE || acc === ACC_IMPLICIT_WRITE) e |= PF_W;
  if (regs.cpl === 3 && acc !== ACC_IMPLICIT_READ && acc !== ACC_IMPLICIT_WRITE) e |= PF_U;
  // I/D: a fetch, with SMEP on, or with NXE under PAE, 4- or 5-level paging (SDM 4.7).
  if (acc === ACC_FETCH && (regs.smep || (regs.nxe && regs.pae))) e |= PF_ID;
  return e;
}
