// The per-core TLB (SDM Vol. 3A 4.10 "Caching translation information"). One set-associative
// array per page size (4 KiB, 2 MiB, 1 GiB), in the core's control block so the controller can
// read it. Only the owning core writes it, with plain stores; the lookup itself is inlined in
// Cpu.translate so that a hit is a few plain loads, one mask and one compare.
//
// Entry (TLB_ENTRY_WORDS words):
//   0 tagLo  linear address bits (shift+31):shift     1 tagHi  bits 63:(shift+32)
//   2 match  VALID | GLOBAL | PCID(11:0); 0 = invalid  3 flags  negative-sense rights (walk.ts F_*)
//   4 pfn    first frame of the page
// A global entry (leaf G = 1 with CR4.PGE = 1) matches any PCID.
//
// Invalidation rules (4.10.4): INVLPG drops the page's entries of the current PCID and its global
// entries; INVPCID 0 one address in one PCID (non-global), 1 one PCID (non-global), 2 everything,
// 3 everything but globals; MOV to CR3 drops the new PCID's non-global entries (PCID 0 when
// PCIDE = 0) unless bit 63 is set; a #PF drops the faulting page's entries. Non-present
// translations are never cached. No paging-structure caches are modelled.
//
// In front of these arrays the MMU keeps a software fast path (mmu.ts, as QEMU's softmmu TLB): a
// strict subset of them that changes nothing architectural.

import { TLB_ENTRY_WORDS, type TlbArrayLayout } from './layout.js';

export const TLB_VALID = 1 << 12;
export const TLB_GLOBAL = 1 << 13;
export const TLB_PCID_MASK = 0xfff;

/** Words of a TLB entry (TLB_ENTRY_WORDS each): tags, match word (valid, global, PCID), negative-sense flags, frame. */
export const enum Tlbe {
  TAG_LO = 0,
  TAG_HI = 1,
  MATCH = 2,
  FLAGS = 3,
  PFN = 4,
}

/** Low tag of a linear address for pages of 2^shift bytes. */
export function tagLoOf(vhi: number, vlo: number, shift: number): number {
  return ((vlo >>> shift) | (vhi << (32 - shift))) | 0;
}

/** High tag of a linear address for pages of 2^shift bytes. */
export function tagHiOf(vhi: number, shift: number): number {
  return (vhi >>> shift) | 0;
}

/** One page-size array of a core's TLB, with absolute word offsets into the control buffer. */
export class TlbArray {
  readonly entries: number;
  readonly victims: number;
  readonly setMask: number;
  readonly ways: number;
  readonly shift: number;
  readonly size: number;

  constructor(readonly ctl: Int32Array, coreBase: number, a: TlbArrayLayout) {
    this.entries = coreBase + a.entries;
    this.victims = coreBase + a.victims;
    this.setMask = a.sets - 1;
    this.ways = a.ways;
    this.shift = a.shift;
    this.size = a.sets * a.ways;
  }

  /** Invalidates every entry. Owning core only (or the controller while the core is offline). */
  clear(): void {
    const t = this.ctl;
    for (let i = 0, e = this.entries; i < this.size; i++, e += TLB_ENTRY_WORDS) {
      t[e + Tlbe.MATCH] = 0;
      t[e + Tlbe.TAG_HI] = -1;
    }
  }

  /** Word offset of the first entry of the set for this tag. */
  setBase(tagLo: number): number {
    return this.entries + (tagLo & this.setMask) * this.ways * TLB_ENTRY_WORDS;
  }

  /** The low tag of the entry the last fill() evicted (valid when it returned true). */
  evictedTagLo = 0;

  /**
   * Inserts a translation, evicting round-robin within the set when it is full. Returns whether a
   * valid entry was evicted (its low tag in evictedTagLo). Owning core only.
   */
  fill(tagLo: number, tagHi: number, match: number, flags: number, pfn: number): boolean {
    const t = this.ctl;
    const set = tagLo & this.setMask;
    const base = this.entries + set * this.ways * TLB_ENTRY_WORDS;
    let e = -1;
    for (let w = 0, x = base; w < this.ways; w++, x += TLB_ENTRY_WORDS) {
      if (t[x + Tlbe.MATCH] === 0) {
        e = x;
        break;
      }
    }
    let evicted = false;
    if (e < 0) {
      const v = t[this.victims + set];
      e = base + v * TLB_ENTRY_WORDS;
      t[this.victims + set] = v + 1 === this.ways ? 0 : v + 1;
      this.evictedTagLo = t[e + Tlbe.TAG_LO];
      evicted = true;
    }
    t[e + Tlbe.TAG_LO] = tagLo;
    t[e + Tlbe.TAG_HI] = tagHi;
    t[e + Tlbe.FLAGS] = flags;
    t[e + Tlbe.PFN] = pfn;
    t[e + Tlbe.MATCH] = match;
    return evicted;
  }

  /** Word offset of the entry that would translate vhi:vlo in `pcid` (or a global one), or -1. */
  find(vhi: number, vlo: number, pcid: number): number {
    const t = this.ctl;
    const tagLo = tagLoOf(vhi, vlo, this.shift);
    const tagHi = tagHiOf(vhi, this.shift);
    for (let w = 0, e = this.setBase(tagLo); w < this.ways; w++, e += TLB_ENTRY_WORDS) {
      const m = t[e + Tlbe.MATCH];
      if (m === 0 || t[e + Tlbe.TAG_LO] !== tagLo || t[e + Tlbe.TAG_HI] !== tagHi) continue;
      if ((m & TLB_GLOBAL) !== 0 || (m & TLB_PCID_MASK) === pcid) return e;
    }
    return -1;
  }

  /**
   * Drops the entries that translate vhi:vlo and whose match word satisfies the rule:
   * pcid >= 0 selects that PCID; withGlobals also drops global entries; onlyNonGlobal keeps them.
   * Returns how many entries were dropped.
   */
  invalidateAddress(vhi: number, vlo: number, pcid: number, withGlobals: boolean): number {
    const t = this.ctl;
    const tagLo = tagLoOf(vhi, vlo, this.shift);
    const tagHi = tagHiOf(vhi, this.shift);
    let n = 0;
    for (let w = 0, e = this.setBase(tagLo); w < this.ways; w++, e += TLB_ENTRY_WORDS) {
      const m = t[e + Tlbe.MATCH];
      if (m === 0 || t[e + Tlbe.TAG_LO] !== tagLo || t[e + Tlbe.TAG_HI] !== tagHi) continue;
      const global = (m & TLB_GLOBAL) !== 0;
      if (global ? withGlobals : (m & TLB_PCID_MASK) === pcid) {
        t[e + Tlbe.MATCH] = 0;
        t[e + Tlbe.TAG_HI] = -1;
        n++;
      }
    }
    return n;
  }

  /** Drops all entries matching: pcid (-1 = any PCID) among non-globals, and globals if withGlobals. */
  invalidateWhere(pcid: number, withGlobals: boolean): number {
    const t = this.ctl;
    let n = 0;
    for (let i = 0, e = this.entries; i < this.size; i++, e += TLB_ENTRY_WORDS) {
      const m = t[e + Tlbe.MATCH];
      if (m === 0) continue;
      const global = (m & TLB_GLOBAL) !== 0;
      if (global ? withGlobals : pcid < 0 || (m & TLB_PCID_MASK) === pcid) {
        t[e + Tlbe.MATCH] = 0;
        t[e + Tlbe.TAG_HI] = -1;
        n++;
      }
    }
    return n;
  }

  /** Valid entries, for the controller and tests: side-effect free. */
  snapshot(): TlbEntryView[] {
    const t = this.ctl;
    const out: TlbEntryView[] = [];
    for (let i = 0, e = this.entries; i < this.size; i++, e += TLB_ENTRY_WORDS) {
      const m = t[e + Tlbe.MATCH];
      if (m === 0) continue;
      const page = (BigInt(t[e + Tlbe.TAG_HI] >>> 0) << BigInt(32 + this.shift)) | (BigInt(t[e + Tlbe.TAG_LO] >>> 0) << BigInt(this.shift));
      out.push({
        va: page & ((1n << 64n) - 1n),
        shift: this.shift,
        pcid: m & TLB_PCID_MASK,
        global: (m & TLB_GLOBAL) !== 0,
        flags: t[e + Tlbe.FLAGS],
        pfn: t[e + Tlbe.PFN],
      });
    }
    return out;
  }
}

/** A TLB entry as the controller sees it. */
export interface TlbEntryView {
  va: bigint;
  shift: number;
  pcid: number;
  global: boolean;
  flags: number;
  pfn: number;
}
