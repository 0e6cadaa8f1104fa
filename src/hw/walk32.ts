// 32-bit paging (Intel SDM Vol. 3A 4.3; CR0.PG = 1, CR4.PAE = 0): a page directory of 1024
// 4-byte entries at CR3 bits 31:12 indexed by linear-address bits 31:22, then a page table of
// 1024 4-byte entries indexed by bits 21:12. With CR4.PSE a PDE with PS = 1 maps a 4 MiB page
// whose address bits 39:32 come from PDE bits 20:13 (PSE-36, up to MAXPHYADDR 40; the PDE bits
// between them and bit 21 are reserved). No execute-disable, no protection keys; R/W and U/S are
// ANDed over both levels, A is set in the PDE used, A (and D on a write) in the leaf for an
// allowed access, as walk.ts does for the other modes.
//
// A 4 MiB page is cached as the 2 MiB half that holds the address (the SDM lets a processor cache
// a large page as several smaller entries, 4.10.2.3); the MMU then drops both halves wherever it
// drops the page. Results as walk.ts: 0 with `out` filled, or a fault code.

import { Pte } from './pte.js';
import type { Regs } from './regs.js';
import { Acc, Fl, PF_P, PF_RSVD, VEC_PF, accessErrorBits, fault } from './fault.js';
import type { WalkOut } from './walk.js';

/** Walks 32-bit paging for linear address vlo (the caller has refused a non-zero high half). */
export function walk32(
  mem: Int32Array, totalFrames: number, regs: Regs, vlo: number, acc: number, out: WalkOut, setAD: boolean, checkRights: boolean,
): number {
  const pd = regs.rootPfn;
  // A table outside installed memory reads as all ones (present, every bit set).
  const pdWord = pd < totalFrames ? pd * Pte.FRAME_WORDS + (vlo >>> 22) : -1;
  const pde = pdWord >= 0 ? mem[pdWord] : -1;
  if ((pde & Pte.P) === 0) return fault(VEC_PF, accessErrorBits(regs, acc));
  let rights = pde & 6;
  let leaf: number;
  let word: number;
  let pfn: number;
  let shift: number;
  if (regs.pse && (pde & Pte.PS) !== 0) {
    // 4 MiB page: address bits 31:22 from PDE bits 31:22, bits (M-1):32 from bits (M-19):13.
    const high = Math.min(regs.maxPhysAddr, 40) - 32;
    const rsvd = (1 << 22) - (1 << (13 + high));
    if ((pde & rsvd) !== 0) return fault(VEC_PF, accessErrorBits(regs, acc) | PF_P | PF_RSVD);
    leaf = pde;
    word = pdWord;
    // The 2 MiB half that holds vlo.
    pfn = (pde >>> 22) * 1024 + ((pde >>> 13) & ((1 << high) - 1)) * 0x100000 + ((vlo >>> 21) & 1) * 512;
    shift = 21;
  } else {
    if (setAD && (pde & Pte.A) === 0 && pdWord >= 0) Atomics.or(mem, pdWord, Pte.A);
    const pt = pde >>> 12;
    word = pt < totalFrames ? pt * Pte.FRAME_WORDS + ((vlo >>> 12) & 1023) : -1;
    leaf = word >= 0 ? mem[word] : -1;
    if ((leaf & Pte.P) === 0) return fault(VEC_PF, accessErrorBits(regs, acc));
    rights &= leaf;
    pfn = leaf >>> 12;
    shift = 12;
  }
  let flags = (rights & 2) === 0 ? Fl.NW : 0;
  flags |= (rights & 4) !== 0 ? Fl.USER | (1 << Fl.PK_SHIFT) : Fl.SUPER;
  if ((leaf & Pte.D) === 0) flags |= Fl.CLEAN;
  if (word < 0 || pfn + (1 << (shift - 12)) > totalFrames) flags |= Fl.NOMEM;
  if (checkRights || setAD) {
    const violation = flags & regs.accessMask(acc) & ~(Fl.CLEAN | Fl.NOMEM);
    if (violation !== 0) return fault(VEC_PF, accessErrorBits(regs, acc) | PF_P);
  }
  if (setAD && word >= 0) {
    const write = acc === Acc.WRITE || acc === Acc.IMPLICIT_WRITE;
    const need = write ? Pte.A | Pte.D : Pte.A;
    if ((leaf & need) !== need) {
      if (regs.atomicAD) Atomics.or(mem, word, need);
      else mem[word] = mem[word] | need;
    }
    if (write) flags &= ~Fl.CLEAN;
  }
  out.pfn = pfn;
  out.shift = shift;
  out.flags = flags;
  out.global = regs.pge && (leaf & Pte.G) !== 0;
  out.leafWord = word;
  out.lo = leaf;
  out.hi = 0;
  return 0;
}
