// MH's states and rules as data (kernel/mh.ts has the operations): the derivation of a page's
// state from its mapping's rights word, and the outcome of each change as every replica decides
// it in log order (vspace.ts). Pure functions over the rights word; imports only ops.ts.

import {
  EBUSY, EINVAL, OK, R_ACCESS, R_COW, R_IO, R_WIRE_MASK, R_WIRE_MAX, R_WIRE_SHIFT, R_WIRED, R_WRITE, R_ZERO,
} from './ops.js';

/** MH's states (the seed's Refinement 3). */
export const ST_UNMAPPED = 0;
export const ST_IO = 1;
export const ST_PRIVATE_RO = 2;
export const ST_PRIVATE_RW = 3;
export const ST_WIRED_RO = 4;
export const ST_WIRED_RW = 5;
export const ST_SHARED = 6;
export const STATE_NAMES = ['Unmapped', 'I/O', 'Private RO', 'Private RW', 'Wired RO', 'Wired RW', 'RO-Shared'];

/** The wiring count in a rights word. */
export function wireCount(rights: number): number {
  return (rights & R_WIRE_MASK) >>> R_WIRE_SHIFT;
}

/** The rights word with the wiring count n (R_WIRED set while n > 0). */
export function withWireCount(rights: number, n: number): number {
  return (rights & ~(R_WIRE_MASK | R_WIRED)) | (n << R_WIRE_SHIFT) | (n > 0 ? R_WIRED : 0);
}

/** The MH state of a mapping with these rights (-1: no mapping). */
export function stateOf(rights: number): number {
  if (rights < 0) return ST_UNMAPPED;
  if ((rights & R_IO) !== 0) return ST_IO;
  if ((rights & (R_COW | R_ZERO)) !== 0) return ST_SHARED;
  const w = (rights & R_WRITE) !== 0;
  if ((rights & R_WIRED) !== 0) return w ? ST_WIRED_RW : ST_WIRED_RO;
  return w ? ST_PRIVATE_RW : ST_PRIVATE_RO;
}

/** Unmap of a mapping with these rights: EBUSY when wired or I/O (unless the check is skipped: the injected bug). */
export function unmapRule(rights: number, skipWireCheck: boolean): number {
  if ((rights & R_IO) !== 0) return EBUSY;
  if ((rights & R_WIRED) !== 0 && !skipWireCheck) return EBUSY;
  return OK;
}

/** A program's change-protection from `old` to `rights` (R_ACCESS bits): EBUSY, EINVAL or OK. */
export function adjustRule(old: number, rights: number): number {
  if ((old & (R_IO | R_WIRED)) !== 0) return EBUSY;
  if ((old & (R_COW | R_ZERO)) !== 0 && ((rights & R_WRITE) !== 0 || (old & R_ACCESS) !== (rights & R_ACCESS))) return EINVAL;
  return OK;
}

/** Export (delta +1) or unexport (-1) of a mapping with these rights: the outcome. */
export function wireRule(rights: number, delta: number): number {
  if ((rights & R_IO) !== 0) return EBUSY;
  if ((rights & (R_COW | R_ZERO)) !== 0) return EINVAL;
  const n = wireCount(rights) + delta;
  return n < 0 || n > R_WIRE_MAX ? EINVAL : OK;
}

/** Move of the one-page mapping `src` over `dst`: EBUSY when either is wired or I/O, EINVAL when src is shared. */
export function moveRule(dst: number, src: number): number {
  if (((dst | src) & (R_IO | R_WIRED)) !== 0) return EBUSY;
  if ((src & (R_COW | R_ZERO)) !== 0) return EINVAL;
  return OK;
}

