// The MMU's fast path in front of the architectural TLB (mmu.ts).
//
// As QEMU's softmmu CPUTLBEntry and v86's per-page table: a direct-mapped table private to the
// thread, indexed by page-number bits 12..21, one compared word per access kind
// (read, write, fetch) and the 4 KiB frame. The compared word is the page number's bits 22..53
// when the current mode (CPL, WP, SMAP/AC, PKRU, NX, a clean page's D) allows that kind, and
// Fast.NEVER otherwise, so a hit is one load and one compare (plus a register test that bits
// 47..63 are equal: a canonical 4-level address) before the data load. It is a strict subset of
// the architectural TLB below it: filled only from an entry of it (on a hit there, or the fill
// after a walk), emptied of a page whenever the arrays lose or narrow that page (INVLPG, INVPCID
// 0, a #PF's drop, a clean entry dropped, eviction by a fill), and wholly on every register
// change (CR3, CR4, CR0, EFER, PKRU, CPL/AC: the mode and PCID it was computed for) and every
// PCID-wide or full flush, or when a 2 MiB or 1 GiB entry goes (its 4 KiB pieces are spread over
// the table). A second, 64-entry table does the same for 2 MiB pieces of 2 MiB and 1 GiB
// translations. Off with LA57 (the compared word covers 48-bit addresses). Statistics, tlbHolds
// and stale translations are the architectural TLB's: a fast hit is a TLB hit.

import { ACC_FETCH, ACC_READ, ACC_WRITE } from './fault.js';
import type { Regs } from './regs.js';

/** The fast path's geometry (const enum: inlined, not loaded from module cells). */
export const enum Fast {
  /** Page-number bits of the index (12..21). */
  BITS = 10,
  ENTRIES = 1 << BITS,
  MASK = ENTRIES - 1,
  /** Words per entry: the compared words for ACC_READ, ACC_WRITE, ACC_FETCH, then the 4 KiB frame. */
  WORDS = 4,
  PFN = 3,
  /**
   * A compared word no canonical address computes: in both tables its top two bits stand for
   * address bits above 47 (53:52 for 4 KiB, 58:57 for 2 MiB), and they differ.
   */
  NEVER = 0x4000_0000,
  /** The 2 MiB table: page-number bits 21..26 index it; its compared word is bits 27..58. */
  BITS_2M = 6,
  ENTRIES_2M = 1 << BITS_2M,
  MASK_2M = ENTRIES_2M - 1,
  /** FRAME_WORDS as a literal (an imported constant is loaded from its module cell on every use). */
  FRAME_WORDS = 1024,
}

/** A fast entry as tests see it. */
export interface FastEntryView {
  va: bigint;
  shift: number;
  pfn: number;
  read: boolean;
  write: boolean;
  fetch: boolean;
}

/** One core's fast path: its two tables and their upkeep. The owning thread only. */
export class FastPath {
  /** The 4 KiB table (Fast.ENTRIES x Fast.WORDS), private to the owning thread. */
  readonly t4k = new Int32Array(Fast.ENTRIES * Fast.WORDS).fill(Fast.NEVER);
  /** The same for 2 MiB pieces of 2 MiB and 1 GiB translations (small: emptied whole when used). */
  readonly t2m = new Int32Array(Fast.ENTRIES_2M * Fast.WORDS).fill(Fast.NEVER);
  /** Indexes of t4k filled since it was last emptied (so that emptying it costs what was filled). */
  private readonly used = new Int32Array(Fast.ENTRIES);
  private count = 0;
  private used2m = false;

  /** masks: the MMU's access masks per kind (the same array: it changes them, then calls clear()). */
  constructor(private readonly masks: Int32Array, private readonly regs: Regs) {}

  /**
   * Puts the 4 KiB page at vhi:vlo, backed by an architectural entry with `flags`, in the fast
   * path as frame pfn4k: each access kind the current masks allow compares equal, the others never.
   */
  fill(vhi: number, vlo: number, flags: number, pfn4k: number): void {
    if (this.regs.la57) return;
    const f = this.t4k;
    const i = (vlo >>> 12) & Fast.MASK;
    const e = i * Fast.WORDS;
    if (f[e + ACC_READ] === Fast.NEVER && f[e + ACC_WRITE] === Fast.NEVER && f[e + ACC_FETCH] === Fast.NEVER) {
      if (this.count === Fast.ENTRIES) this.clear();
      this.used[this.count++] = i;
    }
    const key = (vlo >>> 22) | (vhi << 10);
    const m = this.masks;
    f[e + ACC_READ] = (flags & m[ACC_READ]) === 0 ? key : Fast.NEVER;
    f[e + ACC_WRITE] = (flags & m[ACC_WRITE]) === 0 ? key : Fast.NEVER;
    f[e + ACC_FETCH] = (flags & m[ACC_FETCH]) === 0 ? key : Fast.NEVER;
    f[e + Fast.PFN] = pfn4k;
  }

  /** The same for the 2 MiB piece at vhi:vlo of a 2 MiB or 1 GiB translation, first frame pfn2m. */
  fill2m(vhi: number, vlo: number, flags: number, pfn2m: number): void {
    if (this.regs.la57) return;
    const g = this.t2m;
    const e = ((vlo >>> 21) & Fast.MASK_2M) * Fast.WORDS;
    const key = (vlo >>> 27) | (vhi << 5);
    const m = this.masks;
    g[e + ACC_READ] = (flags & m[ACC_READ]) === 0 ? key : Fast.NEVER;
    g[e + ACC_WRITE] = (flags & m[ACC_WRITE]) === 0 ? key : Fast.NEVER;
    g[e + ACC_FETCH] = (flags & m[ACC_FETCH]) === 0 ? key : Fast.NEVER;
    g[e + Fast.PFN] = pfn2m;
    this.used2m = true;
  }

  /** Empties the fast entry of the 4 KiB page whose low tag (page number bits 12..43) is tagLo. */
  drop(tagLo: number): void {
    const e = (tagLo & Fast.MASK) * Fast.WORDS;
    const f = this.t4k;
    f[e + ACC_READ] = Fast.NEVER;
    f[e + ACC_WRITE] = Fast.NEVER;
    f[e + ACC_FETCH] = Fast.NEVER;
  }

  /** Empties the fast path: the entries filled since it was last emptied, or all of it. */
  clear(): void {
    const f = this.t4k;
    if (this.count === Fast.ENTRIES) f.fill(Fast.NEVER);
    else {
      for (let k = 0; k < this.count; k++) {
        const e = this.used[k] * Fast.WORDS;
        f[e + ACC_READ] = Fast.NEVER;
        f[e + ACC_WRITE] = Fast.NEVER;
        f[e + ACC_FETCH] = Fast.NEVER;
      }
    }
    this.count = 0;
    if (this.used2m) {
      this.t2m.fill(Fast.NEVER);
      this.used2m = false;
    }
  }

  /**
   * The entries as the architectural TLB must back them (tests): the page's linear address and
   * size, its frame, and the kinds it lets through.
   */
  entries(): FastEntryView[] {
    const out: FastEntryView[] = [];
    for (const [f, n, shift] of [[this.t4k, Fast.ENTRIES, 12], [this.t2m, Fast.ENTRIES_2M, 21]] as const) {
      const keyShift = BigInt(shift + Math.log2(n));
      for (let i = 0; i < n; i++) {
        const e = i * Fast.WORDS;
        const key = f[e + ACC_READ] !== Fast.NEVER ? f[e + ACC_READ] : f[e + ACC_WRITE] !== Fast.NEVER ? f[e + ACC_WRITE] : f[e + ACC_FETCH];
        if (key === Fast.NEVER) continue;
        // The key's bits above the index, the index, and above the key copies of its top bit (canonical).
        const va = ((BigInt(key) << keyShift) | (BigInt(i) << BigInt(shift))) & ((1n << 64n) - 1n);
        out.push({ va, shift, pfn: f[e + Fast.PFN], read: f[e + ACC_READ] === key, write: f[e + ACC_WRITE] === key, fetch: f[e + ACC_FETCH] === key });
      }
    }
    return out;
  }
}
