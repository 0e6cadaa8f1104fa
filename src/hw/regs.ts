// Architectural registers that paging depends on (SDM Vol. 3A 2.5 "Control registers", 4.1.1,
// 4.6.2 "Protection keys"), decoded once per write into the fields the walker and the TLB use.
// A core's registers live in its control block (layout R_*); a Regs is the executing thread's
// decoded copy, refreshed by Cpu whenever it writes a register.

import { hiReservedMask } from './pte.js';
import { ACC_FETCH, ACC_IMPLICIT_READ, ACC_IMPLICIT_WRITE, ACC_READ, ACC_WRITE, F_CLEAN, F_NOMEM, F_NW, F_PK_SHIFT, F_SUPER, F_USER, F_XD } from './fault.js';

/**
 * CR3's halves for a root table at frame pfn with PCID `pcid` (bits 11:0), and the no-flush bit
 * (bit 63, as hi bit 31) when asked: the root's address needs the high half once the frame is at
 * or above 2^20 (a physical address at or above 4 GiB). The only place that builds a CR3.
 */
export function cr3Hi(pfn: number, noFlush: boolean): number {
  return (Math.floor(pfn / 0x100000) | (noFlush ? CR3_NOFLUSH_HI : 0)) | 0;
}

/** CR3's low half for a root table at frame pfn with PCID `pcid` (see cr3Hi). */
export function cr3Lo(pfn: number, pcid: number): number {
  return ((pfn % 0x100000) * 4096 + (pcid & 0xfff)) | 0;
}

export const CR0_WP = 1 << 16;
export const CR0_PG = 1 << 31;
export const CR4_PSE = 1 << 4;
export const CR4_PAE = 1 << 5;
export const CR4_PGE = 1 << 7;
export const CR4_LA57 = 1 << 12;
export const CR4_PCIDE = 1 << 17;
export const CR4_SMEP = 1 << 20;
export const CR4_SMAP = 1 << 21;
export const CR4_PKE = 1 << 22;
export const EFER_LME = 1 << 8;
export const EFER_LMA = 1 << 10;
export const EFER_NXE = 1 << 11;
/** MOV to CR3 with bit 63 set (CR4.PCIDE = 1): no TLB invalidation. */
export const CR3_NOFLUSH_HI = 1 << 31;

/**
 * The paging mode (SDM 4.1.1), decoded from CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57: none (linear
 * = physical), 32-bit (two levels of 4-byte entries), PAE (four PDPTE registers, then two levels
 * of 8-byte entries), 4-level and 5-level (IA-32e).
 */
export const enum Paging {
  NONE = 0,
  B32 = 1,
  PAE = 2,
  L4 = 3,
  L5 = 4,
}

/** The paging modes as dumps and options name them. */
export const PAGING_NAMES = ['none', '32bit', 'pae', '4level', '5level'] as const;

/** PDPTE bits reserved (SDM 4.4.1, Table 4-8): 2:1 and 8:5 in the low half; 63:MAXPHYADDR in the high half. */
const PDPTE_RSVD_LO = 0x1e6;

/**
 * Reads the four PDPTEs of PAE paging from the 32-byte aligned table CR3 names (bits 31:5) into
 * `out` (low, high per entry), as MOV to CR3 and the CR0/CR4 moves that enter or change PAE paging
 * load them (SDM 4.4.1). Returns false when a present one has a reserved bit set (the instruction
 * is then #GP(0)); memory that is not installed reads as all ones.
 */
export function readPdptes(mem: Int32Array, cr3lo: number, maxPhysAddr: number, out: Int32Array): boolean {
  const w = (cr3lo >>> 5) * 8;
  const hiRsvd = ~((1 << (Math.min(maxPhysAddr, 52) - 32)) - 1);
  let ok = true;
  for (let i = 0; i < 4; i++) {
    const inside = w + 2 * i + 1 < mem.length;
    const lo = inside ? mem[w + 2 * i] : -1;
    const hi = inside ? mem[w + 2 * i + 1] : -1;
    out[2 * i] = lo;
    out[2 * i + 1] = hi;
    if ((lo & 1) !== 0 && ((lo & PDPTE_RSVD_LO) !== 0 || (hi & hiRsvd) !== 0)) ok = false;
  }
  return ok;
}

/** Register values as the controller sets them; every field optional. CR3 as a 64-bit value. */
export interface RegisterValues {
  cr0?: number;
  cr3?: bigint;
  cr4?: number;
  efer?: number;
  pkru?: number;
  cpl?: 0 | 3;
  ac?: boolean;
  /** CR2, the address of the last #PF (MOV to CR2 may set it too). */
  cr2?: bigint;
}

/** Long-mode defaults: paging on, WP on, PAE, NXE; no PCID, no global pages, no SMEP/SMAP/PKE. */
export const DEFAULT_REGS = {
  cr0: (CR0_PG | CR0_WP | 1) | 0,
  cr4: CR4_PAE,
  efer: EFER_LME | EFER_LMA | EFER_NXE,
  pkru: 0,
  cpl: 0,
  ac: 0,
} as const;

/** Decoded paging state of one core. Fields are plain numbers/booleans for monomorphic hot paths. */
export class Regs {
  cr0 = 0;
  cr3lo = 0;
  cr3hi = 0;
  cr4 = 0;
  efer = 0;
  pkru = 0;
  cpl = 0;
  ac = false;
  // decoded
  wp = false;
  /** CR0.PG: paging on. With it off there is no translation at all (linear = physical, SDM 4.1.1). */
  pg = true;
  pge = false;
  pcide = false;
  la57 = false;
  smep = false;
  smap = false;
  pke = false;
  nxe = false;
  pse = false;
  pae = false;
  /** EFER.LMA: IA-32e mode (4- or 5-level paging when PG = 1). */
  ia32e = false;
  /** The paging mode (Paging). */
  mode: number = Paging.L4;
  /** PAE paging's four PDPTE registers (low, high each), loaded by the Cpu (readPdptes). */
  readonly pdpte = new Int32Array(8);
  rootPfn = 0;
  pcid = 0;
  rsvdHi = 0;
  /** Whether A/D updates are locked (false only under the injected fault 'non-atomic-ad'). */
  atomicAD = true;
  /** Access masks for read, write and fetch at the current CPL, see accessMask(). */
  maskRead = 0;
  maskWrite = 0;
  maskFetch = 0;
  /** The same for implicit supervisor-mode reads and writes (at any CPL; SMAP whatever AC says). */
  maskImplicitRead = 0;
  maskImplicitWrite = 0;

  constructor(readonly maxPhysAddr: number) {
    this.rsvdHi = hiReservedMask(maxPhysAddr);
  }

  /** Recomputes every decoded field from the raw registers. */
  decode(): void {
    this.wp = (this.cr0 & CR0_WP) !== 0;
    this.pg = (this.cr0 & CR0_PG) !== 0;
    this.pge = (this.cr4 & CR4_PGE) !== 0;
    this.pcide = (this.cr4 & CR4_PCIDE) !== 0;
    this.la57 = (this.cr4 & CR4_LA57) !== 0;
    this.smep = (this.cr4 & CR4_SMEP) !== 0;
    this.smap = (this.cr4 & CR4_SMAP) !== 0;
    this.pke = (this.cr4 & CR4_PKE) !== 0;
    this.nxe = (this.efer & EFER_NXE) !== 0;
    this.pse = (this.cr4 & CR4_PSE) !== 0;
    this.pae = (this.cr4 & CR4_PAE) !== 0;
    this.ia32e = (this.efer & EFER_LMA) !== 0;
    this.mode = !this.pg ? Paging.NONE : !this.pae ? Paging.B32 : !this.ia32e ? Paging.PAE : this.la57 ? Paging.L5 : Paging.L4;
    // PAE paging's entries reserve bits 62:52 too (IA-32e paging ignores them, or keeps keys there).
    this.rsvdHi = hiReservedMask(this.maxPhysAddr) | (this.mode === Paging.PAE ? 0x7ff00000 : 0);
    // CR3 bits 51:12 hold the root table's address; bits 11:0 the PCID when CR4.PCIDE = 1.
    const addrHi = this.cr3hi & ((1 << (this.maxPhysAddr - 32)) - 1);
    this.rootPfn = (this.cr3lo >>> 12) + addrHi * 0x100000;
    this.pcid = this.pcide ? this.cr3lo & 0xfff : 0;
    this.computeMasks();
  }

  /** Rebuilds the per-access masks from CPL, WP, SMEP, SMAP, AC, PKE and PKRU (SDM 4.6). */
  computeMasks(): void {
    let ad = 0;
    let wd = 0;
    // Protection keys exist in IA-32e paging only (SDM 4.6.2).
    if (this.pke && this.ia32e) {
      for (let k = 0; k < 16; k++) {
        if ((this.pkru >>> (2 * k)) & 1) ad |= 1 << (F_PK_SHIFT + k);
        if ((this.pkru >>> (2 * k + 1)) & 1) wd |= 1 << (F_PK_SHIFT + k);
      }
    }
    const user = this.cpl === 3;
    const smapBlocks = this.smap && !this.ac ? F_USER : 0;
    if (user) {
      this.maskRead = F_SUPER | ad;
      this.maskWrite = F_SUPER | F_NW | F_CLEAN | ad | wd;
      this.maskFetch = F_SUPER | F_XD;
    } else {
      this.maskRead = smapBlocks | ad;
      this.maskWrite = (this.wp ? F_NW | wd : 0) | F_CLEAN | smapBlocks | ad;
      this.maskFetch = F_XD | (this.smep ? F_USER : 0);
    }
    this.maskRead |= F_NOMEM;
    this.maskWrite |= F_NOMEM;
    this.maskFetch |= F_NOMEM;
    const smapAlways = this.smap ? F_USER : 0;
    this.maskImplicitRead = smapAlways | ad | F_NOMEM;
    this.maskImplicitWrite = (this.wp ? F_NW | wd : 0) | F_CLEAN | smapAlways | ad | F_NOMEM;
  }

  /** The mask for access kind acc: an access is allowed by a translation iff (flags & mask) == 0. */
  accessMask(acc: number): number {
    return acc === ACC_READ ? this.maskRead : acc === ACC_WRITE ? this.maskWrite : acc === ACC_FETCH ? this.maskFetch
      : acc === ACC_IMPLICIT_READ ? this.maskImplicitRead : acc === ACC_IMPLICIT_WRITE ? this.maskImplicitWrite : 0;
  }
}
