// MH's mapping states (seeds/mh-mapping-states.txt), the kernel personality 'mh': a user page is
// Unmapped, I/O, Private RO, Private RW, Wired RO, Wired RW or RO-Shared (copy-on-write), with the
// executable bit orthogonal. The state is not stored apart: it is the mapping's rights word in the
// mapping database (R_IO, R_COW, the wiring count, R_WRITE), so every replica derives the same
// state from its own copy. This module holds the derivation, the rules every replica applies in
// log order (errors as values: EINVAL, EPERM, EBUSY), and the operations MH adds: I/O mappings of
// the device above RAM, export to the device for DMA (wiring, nested), unexport, and move (the
// user-level copy-on-write's substitution of a private copy for a shared page).
//
// The rules, as the seed's kernel returns them:
//   change-protection to writable (or any change) on an RO-Shared page   EINVAL
//   change-protection on a page that is not present                      EPERM
//   change, unmap or move of a wired or I/O page                          EBUSY
//   export of an RO-Shared page (copy-on-write is the only sharing)       EINVAL
//   unexport of a range that was never exported                           EINVAL
//   a range that does not cover exactly one mapping (a state boundary)    EINVAL

import type { Cpu } from '../hw/cpu.js';
import { NO_FRAME } from '../hw/frames.js';
import { vaJoin } from '../hw/vaddr.js';
import type { Kernel } from './context.js';
import {
  A_MOVE_FROM, A_VA, A_WIRE_DELTA, A_WIRE_PAGES, EINVAL, EPERM, INVALID_FRAME, OK, OUT_OF_MEMORY, PAGE, R_ACCESS, R_IO,
  RS_CODE, RS_MOVE_OLD_PFN, VS_MOVE, VS_WIRE,
} from './ops.js';
import { release } from './refs.js';
import { shootdown } from './shootdown.js';
import { lockShared, unlockShared } from './space.js';
import { lookup, map } from './vm.js';
import { wireRule } from './mhstate.js';

export * from './mhstate.js';

// ---- the operations -------------------------------------------------------------------------

/**
 * Maps `pages` register pages of the device, from its page `first`, at vhi:vlo in space s (an I/O
 * mapping: R_IO, the leaf with PCD and PWT). Errors: INVALID_FRAME when there is no such device
 * page, and MapFrame's others.
 */
export function mapIo(kx: Kernel, c: number, s: number, vhi: number, vlo: number, first: number, pages: number, rights: number, cpu?: Cpu): number {
  const dev = kx.v.device;
  if (!dev || !Number.isInteger(first) || !Number.isInteger(pages) || first < 0 || pages < 1 || first + pages > dev.pages) return kx.err({ code: INVALID_FRAME }).code;
  return map(kx, c, s, vhi, vlo, (dev.layout.deviceFrame + first) * PAGE, pages * PAGE, (rights & R_ACCESS) | R_IO, cpu).code;
}

/** Runs VS_WIRE on the mapping based at vhi:vlo of `pages` pages; the outcome (count in kx.resp). */
function wire(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number, pages: number, delta: number): number {
  const a = kx.args;
  a[A_VA] = vhi;
  a[A_VA + 1] = vlo;
  a[A_WIRE_PAGES] = pages;
  a[A_WIRE_DELTA] = delta;
  kx.exec(s, cpu.id, cpu, VS_WIRE);
  return kx.resp[RS_CODE];
}

/**
 * Exports the mapping based at vhi:vlo (exactly `pages` pages) of space s to the device for DMA:
 * wires it (one more nesting level) and records it in the device's export table. Returns the
 * export slot (>= 0), or minus an outcome: EPERM (not mapped), EINVAL (not exactly one mapping;
 * RO-Shared; nesting too deep; not the MH personality), EBUSY (I/O), OUT_OF_MEMORY (table full).
 */
export function exportRange(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number, pages: number): number {
  kx.checkSpace(s);
  const dev = kx.v.device;
  if (!kx.mh || !dev) return -kx.err({ code: EINVAL }).code;
  lockShared(kx, s, cpu);
  try {
    const e = kx.found;
    if (!lookup(kx, cpu.id, s, vhi, vlo, e, cpu)) return -kx.err({ code: EPERM }).code;
    if (e.va !== vaJoin(vhi, vlo) || e.pages !== pages) return -kx.err({ code: EINVAL }).code;
    const pfn = e.pfn;
    // The injected bug: export records the frames without wiring them.
    const code = kx.unwiredDma ? wireRule(e.rights, 1) : wire(kx, cpu, s, vhi, vlo, pages, 1);
    if (code !== OK) return -kx.err({ code }).code;
    const slot = dev.claim(s, pfn, pages, vhi, vlo);
    if (slot < 0) {
      if (!kx.unwiredDma) wire(kx, cpu, s, vhi, vlo, pages, -1);
      return -kx.err({ code: OUT_OF_MEMORY }).code;
    }
    kx.stats.exports++;
    return slot;
  } finally {
    unlockShared(kx, s);
  }
}

/**
 * Ends space s's export `slot`: waits for a DMA transfer on it to end, takes it out of the
 * device's table and unwires the mapping once (the last unwire leaves it Private, its protection
 * unchanged). EINVAL when s never exported that slot (or it was ended).
 */
export function unexport(kx: Kernel, cpu: Cpu, s: number, slot: number): number {
  kx.checkSpace(s);
  const dev = kx.v.device;
  if (!kx.mh || !dev) return kx.err({ code: EINVAL }).code;
  const ex = dev.exportAt(slot);
  if (!ex || !dev.release(slot, s)) return kx.err({ code: EINVAL }).code;
  kx.stats.unexports++;
  if (kx.unwiredDma) return OK;
  lockShared(kx, s, cpu);
  try {
    const code = wire(kx, cpu, s, ex.vhi, ex.vlo, ex.pages, -1);
    return code === OK ? OK : kx.err({ code }).code;
  } finally {
    unlockShared(kx, s);
  }
}

/**
 * Move: the one-page mapping at shi:slo replaces the one-page mapping at dhi:dlo, atomically on
 * every replica (one logged operation); the source is unmapped and the destination's old frame
 * loses space s's reference (after the shootdown of both pages). Errors: EPERM (either not mapped),
 * EINVAL (not one page, the same page, or a shared source), EBUSY (wired or I/O).
 */
export function move(kx: Kernel, cpu: Cpu, s: number, dhi: number, dlo: number, shi: number, slo: number): number {
  kx.checkSpace(s);
  if (!kx.mh) return kx.err({ code: EINVAL }).code;
  lockShared(kx, s, cpu);
  try {
    const a = kx.args;
    a[A_VA] = dhi;
    a[A_VA + 1] = dlo;
    a[A_MOVE_FROM] = shi;
    a[A_MOVE_FROM + 1] = slo;
    kx.exec(s, cpu.id, cpu, VS_MOVE);
    const code = kx.resp[RS_CODE];
    if (code !== OK) return kx.err({ code }).code;
    const old = kx.resp[RS_MOVE_OLD_PFN];
    shootdown(kx, cpu, s, dhi, dlo, 1);
    shootdown(kx, cpu, s, shi, slo, 1);
    if (old !== NO_FRAME) release(kx, old, s);
    kx.stats.moves++;
    return OK;
  } finally {
    unlockShared(kx, s);
  }
}
