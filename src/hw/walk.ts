// The page walker (Intel SDM Vol. 3A 4.5 "4-level and 5-level paging", 4.6 "Access rights",
// 4.7 "Page-fault exceptions", 4.8 "Accessed and dirty flags"), modelled on QEMU's mmu_translate.
//
// It walks PML5 (CR4.LA57) / PML4 -> PDPT -> PD -> PT over shifts 48, 39, 30, 21, 12, checks P and
// the reserved bits of each entry, combines rights (R/W and U/S by AND, XD by OR), sets A in every
// non-leaf entry it uses, and at the leaf checks the access against CR0.WP, CR4.SMEP/SMAP with
// EFLAGS.AC, EFER.NXE and CR4.PKE with PKRU. Only an allowed access sets the leaf's A (and D for a
// write). A/D updates are Atomics.or on the entry's low half: hardware's locked update. PAE paging
// (4.4) is the same walk begun at a PDPTE register; 32-bit paging (4.3) is walk32() below; the
// leaf's checks, A/D and result are finishLeaf(), shared by both.
//
// Torn entries: an entry's low half is read first and the high half after it, with plain loads
// (an Atomics.load costs 10-20x a plain one on Node 20: see README "Memory ordering"). V8 keeps
// typed-array loads in program order on the effect chain and x86 (TSO) never reorders two loads,
// so the walker sees the writer's stores in the order they were made. A writer publishes a
// present entry high half first, low half last (Atomics.store: a full fence), and changes the
// high half of a present entry only by break-before-make (clear P, wait until no core is inside
// a walk, store hi, then lo): see Cpu.updateEntry. So a walker that saw P=1 in lo reads the hi
// that goes with it. The torn-translation test checks this under contention, and catches the
// injected in-place update ('torn-pte-update').
//
// Physical memory that is not installed reads as all ones, as on a PC bus.
//
// Results are numbers, never objects: 0 for a translation (written into a WalkOut the caller
// owns) or a fault code, see fault().

import { Pte } from './pte.js';
import type { PdeCache } from './psc.js';
import { Paging, type Regs } from './regs.js';
import { Acc, FAULT_GP0, F_PK_ALL, Fl, PF_P, PF_PK, PF_RSVD, VEC_PF, accessErrorBits, fault } from './fault.js';

/** Where a successful walk writes its translation. Owned by one thread; reused, never reallocated. */
export class WalkOut {
  /** First frame of the page (the page's physical address >> 12). */
  pfn = 0;
  /** log2 of the page size: 12, 21 or 30. */
  shift = 12;
  /** Negative-sense flags, see F_*. */
  flags = 0;
  /** Leaf G = 1 and CR4.PGE = 1. */
  global = false;
  /** Word index of the leaf entry's low half in physical memory, or -1 if not installed. */
  leafWord = -1;
  /** The leaf entry as read (before this walk's own A/D update). */
  lo = 0;
  hi = 0;
}

/** Sets bits in an entry's low half: Atomics.or, or (injected fault) a plain read-modify-write that can lose a racing update. */
function setEntryBits(mem: Int32Array, word: number, bits: number, atomic: boolean): void {
  if (atomic) Atomics.or(mem, word, bits);
  else mem[word] = mem[word] | bits;
}


/**
 * Walks the page tables rooted at regs' CR3 for an access of kind acc at linear address vhi:vlo.
 * Returns 0 and fills `out`, or a fault code (#GP(0) for a non-canonical address, #PF with its
 * error code). With setAD false it has no side effects at all (dumps, checkers, debuggers) and
 * does not check the access's rights beyond P and reserved bits unless checkRights is true.
 * With a PDE cache (the MMU's, when the machine has tlb.psc) it uses and fills it.
 * Any thread; hot on a TLB miss.
 */
export function walk(
  mem: Int32Array,
  totalFrames: number,
  regs: Regs,
  vhi: number,
  vlo: number,
  acc: number,
  out: WalkOut,
  setAD: boolean,
  checkRights: boolean,
  psc: PdeCache | null = null,
): number {
  // Bit 63 (XD) of every entry is reserved when EFER.NXE = 0: one mask tests both.
  const rsvdHi = regs.nxe ? regs.rsvdHi : regs.rsvdHi | (1 << 31);
  let table = regs.rootPfn;
  /** R/W (bit 1) and U/S (bit 2) of every level so far, ANDed (in the entry's own bit places). */
  let rights = 6;
  /** Bit 31 set when some level's XD (bit 63) is set. */
  let xd = 0;
  let shift = regs.la57 ? 48 : 39;
  if (regs.mode < Paging.L4) {
    // Legacy modes: 32-bit linear addresses. 32-bit paging is its own walk; PAE paging starts at
    // the PDPTE register bits 31:30 name (SDM 4.4.2: no rights, no A bit, not present is a #PF).
    if (vhi !== 0) return FAULT_GP0;
    if (regs.mode === Paging.B32) return walk32(mem, totalFrames, regs, vlo, acc, out, setAD, checkRights);
    const i = vlo >>> 30;
    const plo = regs.pdpte[2 * i];
    if ((plo & Pte.P) === 0) return fault(VEC_PF, accessErrorBits(regs, acc));
    table = (plo >>> 12) + (regs.pdpte[2 * i + 1] & Pte.HI_ADDR) * 0x100000;
    shift = 21;
  } else {
    // Canonical (SDM 3.3.7.1): bits 63:47 (63:56 with LA57) all equal, else #GP(0).
    const top = regs.la57 ? vhi >> 24 : vhi >> 15;
    if (top !== 0 && top !== -1) return FAULT_GP0;
  }
  // The PDE cache (psc.ts, SDM 4.10.3.2): a hit starts the walk at the page table it names.
  if (psc !== null && psc.lookup(vhi, vlo, regs.pcid)) {
    table = psc.pt;
    rights = psc.rights;
    xd = psc.xd;
    shift = 12;
  }
  // Constants are literals or const enums (Pte, Fl, Acc): an imported const is a module-cell load.
  for (;;) {
    const idx = (shift >= 32 ? vhi >>> (shift - 32) : shift <= 23 ? vlo >>> shift : (vlo >>> shift) | (vhi << (32 - shift))) & 511;
    // A table outside installed memory reads as all ones (present, every bit set).
    let word = -1;
    let lo = -1;
    let hi = -1;
    if (table < totalFrames) {
      word = table * Pte.FRAME_WORDS + idx * 2;
      lo = mem[word];
      if ((lo & Pte.P) === 0) return fault(VEC_PF, accessErrorBits(regs, acc));
      hi = mem[word + 1];
    }
    if ((hi & rsvdHi) !== 0) return fault(VEC_PF, accessErrorBits(regs, acc) | PF_P | PF_RSVD);
    rights &= lo;
    xd |= hi;
    if (shift !== 12 && (lo & Pte.PS) === 0) {
      if (setAD && (lo & Pte.A) === 0 && word >= 0) setEntryBits(mem, word, Pte.A, regs.atomicAD);
      table = (lo >>> 12) + (hi & Pte.HI_ADDR) * 0x100000;
      if (psc !== null && shift === 21) psc.fill(vhi, vlo, regs.pcid, table, rights, xd);
      shift -= 9;
      continue;
    }
    // PS is reserved in a PML5E/PML4E; in a PDPTE/PDE it maps a 1 GiB/2 MiB page.
    if (shift !== 12 && (shift >= 39 || (lo & (shift === 30 ? Pte.RSVD_1G : Pte.RSVD_2M)) !== 0)) return fault(VEC_PF, accessErrorBits(regs, acc) | PF_P | PF_RSVD);
    // Leaf: build the negative-sense flags and check the access.
    let flags = (rights & 2) === 0 ? Fl.NW : 0;
    flags |= (rights & 4) !== 0 ? Fl.USER | (1 << (Fl.PK_SHIFT + ((hi >>> Pte.HI_PKEY_SHIFT) & 0xf))) : Fl.SUPER;
    if (xd < 0 && regs.nxe) flags |= Fl.XD;
    if ((lo & Pte.D) === 0) flags |= Fl.CLEAN;
    const pfn = ((shift === 12 ? lo : lo & ~Pte.PAT_HUGE) >>> 12) + (hi & Pte.HI_ADDR) * 0x100000;
    if (word < 0 || pfn + (1 << (shift - 12)) > totalFrames) flags |= Fl.NOMEM;
    return finishLeaf(mem, regs, acc, out, setAD, checkRights, flags, pfn, shift, word, lo, hi);
  }
}

/**
 * The end of a walk of any mode at its leaf (the entry at `word`, lo:hi as read; `flags` built
 * from the rights of the whole path): the access checked (a protection #PF, with PK when a key
 * denied it), A — and D for a write — set in the leaf when the access is allowed, the translation
 * written to `out`. Returns 0 or the fault.
 */
export function finishLeaf(
  mem: Int32Array, regs: Regs, acc: number, out: WalkOut, setAD: boolean, checkRights: boolean,
  flags: number, pfn: number, shift: number, word: number, lo: number, hi: number,
): number {
  if (checkRights || setAD) {
    const violation = flags & regs.accessMask(acc) & ~(Fl.CLEAN | Fl.NOMEM);
    if (violation !== 0) return fault(VEC_PF, accessErrorBits(regs, acc) | PF_P | ((violation & F_PK_ALL) !== 0 ? PF_PK : 0));
  }
  if (setAD && word >= 0) {
    const write = acc === Acc.WRITE || acc === Acc.IMPLICIT_WRITE;
    const need = write ? Pte.A | Pte.D : Pte.A;
    if ((lo & need) !== need) setEntryBits(mem, word, need, regs.atomicAD);
    if (write) flags &= ~Fl.CLEAN;
  }
  out.pfn = pfn;
  out.shift = shift;
  out.flags = flags;
  out.global = regs.pge && (lo & Pte.G) !== 0;
  out.leafWord = word;
  out.lo = lo;
  out.hi = hi;
  return 0;
}

// ---- 32-bit paging (Intel SDM Vol. 3A 4.3; CR0.PG = 1, CR4.PAE = 0): a page directory of 1024
// 4-byte entries at CR3 bits 31:12 indexed by linear-address bits 31:22, then a page table of
// 1024 4-byte entries indexed by bits 21:12. With CR4.PSE a PDE with PS = 1 maps a 4 MiB page
// whose address bits 39:32 come from PDE bits 20:13 (PSE-36, up to MAXPHYADDR 40; the PDE bits
// between them and bit 21 are reserved). No execute-disable, no protection keys; R/W and U/S are
// ANDed over both levels, A is set in the PDE used, A (and D on a write) in the leaf for an
// allowed access, as walk() does for the other modes.
//
// A 4 MiB page is cached as the 2 MiB half that holds the address (the SDM lets a processor cache
// a large page as several smaller entries, 4.10.2.3); the MMU then drops both halves wherever it
// drops the page. Results as walk(): 0 with `out` filled, or a fault code.

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
  return finishLeaf(mem, regs, acc, out, setAD, checkRights, flags, pfn, shift, word, leaf, 0);
}
