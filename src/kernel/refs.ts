// Data frames with references: how many mappings (in any address space) hold each frame, freed
// when the last lets go (fork and copy-on-write share frames); the checked mode's shadow owner of
// each frame (the stale-tlb oracle's record of which spaces may reach it); and the single
// read-only zero page of demand-zero mappings (allocated on first use, never freed). Every word
// is in the kernel's shared region and updated with Atomics by any thread.

import { NO_FRAME } from '../hw/frames.js';
import { panic } from '../hw/panic.js';
import type { Kernel } from './context.js';
import { R_IO, R_ZERO } from './ops.js';

/** Spaces the shadow-owner bit mask covers (0-31); frames of spaces above are not tracked. */
export const OWNER_SPACES = 32;

/** Records that space s maps frame pfn (the oracle's shadow owners). */
export function ownerAdd(kx: Kernel, pfn: number, s: number): void {
  if (s < OWNER_SPACES) Atomics.or(kx.v.k, kx.v.klayout.ownerBase + pfn, 1 << s);
}

/** Records that space s no longer maps frame pfn (after its shootdown returned). */
export function ownerRemove(kx: Kernel, pfn: number, s: number): void {
  if (s < OWNER_SPACES) Atomics.and(kx.v.k, kx.v.klayout.ownerBase + pfn, ~(1 << s));
}

/** The shadow owners of frame pfn (bit s: space s maps it). */
export function ownerMask(kx: Kernel, pfn: number): number {
  return Atomics.load(kx.v.k, kx.v.klayout.ownerBase + pfn);
}

/** References to data frame pfn from mappings. */
export function refcount(kx: Kernel, pfn: number): number {
  return Atomics.load(kx.v.k, kx.v.klayout.refBase + pfn);
}

/** Sets a new frame's references (the thread that allocated it, before publishing it). */
export function setRefcount(kx: Kernel, pfn: number, n: number): void {
  Atomics.store(kx.v.k, kx.v.klayout.refBase + pfn, n);
}

/** Adds one reference to pfn (a new sharer). */
export function addRef(kx: Kernel, pfn: number): void {
  Atomics.add(kx.v.k, kx.v.klayout.refBase + pfn, 1);
}

/** Drops one reference to pfn; frees the frame when it was the last. Returns the references left. */
export function dropRef(kx: Kernel, pfn: number): number {
  const left = Atomics.sub(kx.v.k, kx.v.klayout.refBase + pfn, 1) - 1;
  if (left < 0) panic(`dropRef: frame ${pfn} had no reference`);
  if (left === 0) kx.v.frames.free(pfn);
  return left;
}

/** A fresh data frame of space s: one reference, s its owner. The caller zeroes or fills it. */
export function holdNew(kx: Kernel, pfn: number, s: number): void {
  setRefcount(kx, pfn, 1);
  ownerAdd(kx, pfn, s);
}

/** Drops space s's hold on a data frame: its owner bit, then its reference (freed at zero). */
export function release(kx: Kernel, pfn: number, s: number): void {
  ownerRemove(kx, pfn, s);
  dropRef(kx, pfn);
}

/** The frames a dying space s held, as destroySpace reports them: all but the zero page and device pages lose a reference. */
export function releaseMapping(kx: Kernel, s: number, pfn: number, pages: number, rights: number): void {
  if ((rights & (R_ZERO | R_IO)) !== 0) return;
  for (let p = 0; p < pages; p++) release(kx, pfn + p, s);
}

/** The single read-only zero page (allocated on first use, never freed), or NO_FRAME. Any thread. */
export function zeroPage(kx: Kernel): number {
  const { k, klayout, frames } = kx.v;
  const z = Atomics.load(k, klayout.zeroPageWord);
  if (z !== 0) return z - 1;
  const f = frames.allocZeroed(0);
  if (f === NO_FRAME) return NO_FRAME;
  const prev = Atomics.compareExchange(k, klayout.zeroPageWord, 0, f + 1);
  if (prev !== 0) {
    frames.free(f);
    return prev - 1;
  }
  Atomics.store(k, klayout.ownerBase + f, -1); // every space may read it
  return f;
}
