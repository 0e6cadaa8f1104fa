// x86-64 paging-structure entries and linear addresses, bit-exact (Intel SDM Vol. 3A, 4.5 and
// tables 4-15 to 4-20). A 64-bit entry is handled as two 32-bit halves: `lo` = bits 31:0 and
// `hi` = bits 63:32, as little-endian memory holds them (entry at physical address pa: lo is the
// Int32 at pa>>2, hi the one after it). BigInt appears only in the helpers at the public edge.
//
//  63  62..59 58..52  51........M M-1.........12 11..9  8  7   6  5  4   3   2   1  0
// +---+------+------+-----------+---------------+-----+---+---+---+--+---+---+---+---+--+
// |XD | PKEY | ign. | reserved  | frame address | ign.| G |PS/| D | A|PCD|PWT|U/S|R/W| P|
// |   |(leaf)|      |  (51:M)   |               | (sw)|   |PAT|   |  |   |   |   |   |  |
// +---+------+------+-----------+---------------+-----+---+---+---+--+---+---+---+---+--+
//  hi bit 31, 30..27, 26..20, 19..M-32, 19..0 | lo bits 31..12 hold frame address bits 31:12.
//
// Huge leaves (PDPTE with PS=1: 1 GiB, PDE with PS=1: 2 MiB) have PAT at bit 12 and reserved
// low address bits 29:13 (1 GiB) or 20:13 (2 MiB). PML5E/PML4E: PS (bit 7) is reserved.

/**
 * The bits the walker and the MMU's hot paths use, as a const enum: TypeScript writes each use as
 * a literal, where an imported const is loaded from its module cell (with a hole check) on every
 * use in V8. The exported names below are these same values.
 */
export const enum Pte {
  P = 1 << 0,
  A = 1 << 5,
  D = 1 << 6,
  PS = 1 << 7,
  G = 1 << 8,
  PAT_HUGE = 1 << 12,
  HI_ADDR = 0x000fffff,
  HI_PKEY_SHIFT = 27,
  RSVD_2M = 0x001fe000,
  RSVD_1G = 0x3fffe000,
  FRAME_WORDS = 1024,
}

export const PTE_P = Pte.P;
export const PTE_RW = 1 << 1;
export const PTE_US = 1 << 2;
export const PTE_PWT = 1 << 3;
export const PTE_PCD = 1 << 4;
export const PTE_A = Pte.A;
export const PTE_D = Pte.D;
/** Bit 7: PS in PDPTE/PDE, PAT in a 4 KiB PTE, reserved in PML4E/PML5E. */
export const PTE_PS = Pte.PS;
export const PTE_PAT4K = 1 << 7;
export const PTE_G = Pte.G;
/** Bits 11:9, ignored by hardware, free for software. */
export const PTE_AVAIL_SHIFT = 9;
export const PTE_AVAIL_MASK = 7 << 9;
/** Bit 12 of a huge leaf: PAT. */
export const PTE_PAT_HUGE = Pte.PAT_HUGE;

/** lo bits 31:12: frame address bits 31:12. */
export const LO_ADDR_MASK = 0xfffff000 | 0;
/** hi bits 19:0: frame address bits 51:32. */
export const HI_ADDR_MASK = Pte.HI_ADDR;
/** hi bits 30:27: protection key (entry bits 62:59). */
export const HI_PKEY_SHIFT = Pte.HI_PKEY_SHIFT;
export const HI_PKEY_MASK = 0xf << 27;
/** hi bit 31: XD (entry bit 63). */
export const HI_XD = 1 << 31;

/** Reserved low address bits of a 2 MiB leaf (20:13) and a 1 GiB leaf (29:13). */
export const LO_RSVD_2M = Pte.RSVD_2M;
export const LO_RSVD_1G = Pte.RSVD_1G;

export const PAGE_SHIFT_4K = 12;
export const PAGE_SHIFT_2M = 21;
export const PAGE_SHIFT_1G = 30;
export const FRAME_BYTES = 4096;
export const FRAME_WORDS = Pte.FRAME_WORDS;
export const ENTRIES_PER_TABLE = 512;

/** Reserved-bit mask of the high half for MAXPHYADDR = m (bits 51:m). Assumes 36 <= m <= 52. */
export function hiReservedMask(maxPhysAddr: number): number {
  return (HI_ADDR_MASK & ~((1 << (maxPhysAddr - 32)) - 1)) | 0;
}

/** Frame number (physical address >> 12) named by an entry; for a huge leaf the PAT bit 12 must be masked by the caller. */
export function entryFrame(lo: number, hi: number): number {
  return (lo >>> 12) + (hi & HI_ADDR_MASK) * 0x100000;
}

/** Low half of an entry pointing at frame `pfn` with the given low flag bits. */
export function makeLo(pfn: number, flags: number): number {
  return ((pfn % 0x100000) << 12) | (flags & 0xfff);
}

/** High half of an entry pointing at frame `pfn` with protection key and XD. */
export function makeHi(pfn: number, pkey: number, xd: boolean): number {
  return (Math.floor(pfn / 0x100000) & HI_ADDR_MASK) | ((pkey & 0xf) << HI_PKEY_SHIFT) | (xd ? HI_XD : 0);
}

/** Protection key of a leaf entry (bits 62:59). */
export function entryPkey(hi: number): number {
  return (hi >>> HI_PKEY_SHIFT) & 0xf;
}
