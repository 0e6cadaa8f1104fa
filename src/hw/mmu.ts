// A core's memory-management unit: the access path (translate through the three TLB arrays, the
// walk of a miss, the faults it raises), the 8-byte loads, stores and fetches built on it, and the
// TLB-invalidation instructions and effects (INVLPG, INVPCID, a CR3 load's PCID flush, a CR4
// change's full flush). It reads the core's decoded registers (regs.ts) and owns the core's TLB
// arrays (tlb.ts) in the control block; the architectural walk is walk.ts.
//
// The owning thread of the core only. No allocation on any path: results land in fields (valLo,
// valHi, cr2hi, cr2lo, lastWord).

import { CTR, TLB_ENTRY_WORDS, type Layout } from './layout.js';
import type { Regs } from './regs.js';
import { Tlbe, TLB_GLOBAL, TLB_VALID, TlbArray, tagHiOf, tagLoOf } from './tlb.js';
import { WalkOut, walk } from './walk.js';
import { ACC_FETCH, ACC_READ, ACC_WRITE, F_CLEAN, F_NOMEM, F_PK_ALL, FAULT_NOMEM, PF_P, PF_PK, VEC_PF, accessErrorBits, fault, faultVector } from './fault.js';
import { FRAME_WORDS } from './pte.js';
import { panic } from './panic.js';
import { PH_BEGIN, PH_END, TR_WALK, type TraceRing } from './trace.js';
import type { Device } from './device.js';

/** What the MMU uses of its core: counters and the trace ring (the core's, shared with its APIC). */
export interface MmuCore {
  readonly ctr: Float64Array;
  tracer: TraceRing | null;
}

export class Mmu {
  readonly tlb4k: TlbArray;
  readonly tlb2m: TlbArray;
  readonly tlb1g: TlbArray;
  readonly walkOut = new WalkOut();
  readonly totalFrames: number;
  readonly memWords: number;
  // hot-path copies
  private readonly e4k: number;
  private readonly e2m: number;
  private readonly e1g: number;
  private readonly set4k: number;
  private readonly set2m: number;
  private readonly set1g: number;
  /** Words per 4 KiB set (ways x entry words). */
  private readonly setWords4k: number;
  /** Access masks for ACC_READ, ACC_WRITE, ACC_FETCH (copies of the Regs masks). */
  private readonly masks = new Int32Array(3);
  private readonly ways2m: number;
  private readonly ways1g: number;
  /** TLB match word of the current PCID's non-global entries. */
  private pcidTag = TLB_VALID;
  // results of the last access and fault (no allocation on any path)
  valLo = 0;
  valHi = 0;
  cr2hi = 0;
  cr2lo = 0;
  /** Word the last load64/store64/fetch64 reached in physical memory (-1: none, or memory not installed). */
  lastWord = -1;
  /** The device above RAM (null: none): accesses past RAM inside its register pages reach it. */
  bus: Device | null = null;
  /** Physical word of the last access past RAM (set with FAULT_NOMEM). */
  private busWord = -1;

  constructor(
    layout: Layout,
    /** The control block (the TLB arrays live in the core's part of it) and physical memory. */
    private readonly ctl: Int32Array,
    readonly mem: Int32Array,
    base: number,
    /** The core's decoded registers (the Cpu writes them, then calls registersChanged()). */
    readonly regs: Regs,
    private readonly cpu: MmuCore,
  ) {
    this.totalFrames = layout.totalFrames;
    this.memWords = mem.length;
    this.tlb4k = new TlbArray(ctl, base, layout.tlb4k);
    this.tlb2m = new TlbArray(ctl, base, layout.tlb2m);
    this.tlb1g = new TlbArray(ctl, base, layout.tlb1g);
    this.e4k = this.tlb4k.entries;
    this.e2m = this.tlb2m.entries;
    this.e1g = this.tlb1g.entries;
    this.set4k = this.tlb4k.setMask;
    this.set2m = this.tlb2m.setMask;
    this.set1g = this.tlb1g.setMask;
    this.setWords4k = this.tlb4k.ways * TLB_ENTRY_WORDS;
    this.ways2m = this.tlb2m.ways;
    this.ways1g = this.tlb1g.ways;
  }

  /** Refreshes what the hot path copies from the decoded registers (after every register write). */
  registersChanged(): void {
    const r = this.regs;
    this.pcidTag = TLB_VALID | r.pcid;
    this.masks[ACC_READ] = r.maskRead;
    this.masks[ACC_WRITE] = r.maskWrite;
    this.masks[ACC_FETCH] = r.maskFetch;
  }

  // ---- access path ----------------------------------------------------------------------

  /**
   * Translates vhi:vlo for an access of kind acc: returns the word index of the byte's 4-byte
   * word in physical memory, or a fault code (< 0; FAULT_NOMEM for memory that is not
   * installed). A hit is plain loads of this core's TLB and stores nothing (a store on this path
   * costs more than the lookup): the caller counts accesses with countAccesses(), and hits are
   * accesses minus misses. The owning thread only.
   */
  translate(vhi: number, vlo: number, acc: number): number {
    const t = this.ctl;
    const tagLo = (vlo >>> 12) | (vhi << 20);
    let e = this.e4k + (tagLo & this.set4k) * this.setWords4k;
    const end = e + this.setWords4k;
    for (; e < end; e += TLB_ENTRY_WORDS) {
      if (t[e + Tlbe.TAG_LO] === tagLo && t[e + Tlbe.TAG_HI] === vhi >>> 12) {
        const m = t[e + Tlbe.MATCH];
        if (m === this.pcidTag || (m & TLB_GLOBAL) !== 0) {
          if ((t[e + Tlbe.FLAGS] & this.masks[acc]) === 0) return t[e + Tlbe.PFN] * FRAME_WORDS + ((vlo & 0xfff) >>> 2);
          return this.hitDenied(e, vhi, vlo, acc);
        }
      }
    }
    return this.translateHuge(vhi, vlo, acc);
  }

  /** The 2 MiB and 1 GiB arrays, then the walk: kept apart so translate() stays small enough to inline. */
  private translateHuge(vhi: number, vlo: number, acc: number): number {
    const t = this.ctl;
    const mask = this.masks[acc];
    const pcidTag = this.pcidTag;
    let tagLo = (vlo >>> 21) | (vhi << 11);
    let tagHi = vhi >>> 21;
    let e = this.e2m + (tagLo & this.set2m) * this.ways2m * TLB_ENTRY_WORDS;
    for (let w = 0; w < this.ways2m; w++, e += TLB_ENTRY_WORDS) {
      if (t[e + Tlbe.TAG_LO] === tagLo && t[e + Tlbe.TAG_HI] === tagHi) {
        const m = t[e + Tlbe.MATCH];
        if (m === pcidTag || (m & TLB_GLOBAL) !== 0) {
          if ((t[e + Tlbe.FLAGS] & mask) === 0) return t[e + Tlbe.PFN] * FRAME_WORDS + ((vlo & 0x1fffff) >>> 2);
          return this.hitDenied(e, vhi, vlo, acc);
        }
      }
    }
    tagLo = (vlo >>> 30) | (vhi << 2);
    tagHi = vhi >>> 30;
    e = this.e1g + (tagLo & this.set1g) * this.ways1g * TLB_ENTRY_WORDS;
    for (let w = 0; w < this.ways1g; w++, e += TLB_ENTRY_WORDS) {
      if (t[e + Tlbe.TAG_LO] === tagLo && t[e + Tlbe.TAG_HI] === tagHi) {
        const m = t[e + Tlbe.MATCH];
        if (m === pcidTag || (m & TLB_GLOBAL) !== 0) {
          if ((t[e + Tlbe.FLAGS] & mask) === 0) return t[e + Tlbe.PFN] * FRAME_WORDS + ((vlo & 0x3fffffff) >>> 2);
          return this.hitDenied(e, vhi, vlo, acc);
        }
      }
    }
    return this.miss(vhi, vlo, acc);
  }

  /**
   * Slow path of a TLB hit whose flags deny the access: a write to a clean page walks again to
   * set D; memory that is not installed is FAULT_NOMEM; any other denial is a protection #PF
   * raised from the cached entry (as hardware may, SDM 4.10.4.3), which drops the page's entries.
   */
  private hitDenied(e: number, vhi: number, vlo: number, acc: number): number {
    const flags = this.ctl[e + Tlbe.FLAGS];
    const mask = this.masks[acc];
    const violation = flags & mask & ~(F_CLEAN | F_NOMEM);
    if (violation !== 0) {
      const err = accessErrorBits(this.regs, acc) | PF_P | ((violation & F_PK_ALL) !== 0 ? PF_PK : 0);
      return this.raisePageFault(vhi, vlo, err);
    }
    if ((flags & mask & F_CLEAN) !== 0) {
      // Cached without write permission: drop it and walk again to set D.
      this.ctl[e + Tlbe.MATCH] = 0;
      this.ctl[e + Tlbe.TAG_HI] = -1;
      return this.miss(vhi, vlo, acc);
    }
    const shift = e >= this.e1g && e < this.e1g + this.tlb1g.size * TLB_ENTRY_WORDS ? 30
      : e >= this.e2m && e < this.e2m + this.tlb2m.size * TLB_ENTRY_WORDS ? 21 : 12;
    return this.boundedWord(this.ctl[e + Tlbe.PFN], shift, vlo);
  }

  /** Word index of vlo's offset in a page that is not wholly installed, or FAULT_NOMEM past the end. */
  private boundedWord(pfn: number, shift: number, vlo: number): number {
    const w = pfn * FRAME_WORDS + ((vlo & ((1 << shift) - 1)) >>> 2);
    if (w + 1 < this.memWords) return w;
    this.busWord = w;
    return FAULT_NOMEM;
  }

  /** TLB miss: walk (setting A/D), fill the TLB, or raise the walk's fault. */
  private miss(vhi: number, vlo: number, acc: number): number {
    this.cpu.ctr[CTR.tlbMisses]++;
    this.cpu.ctr[CTR.walks]++;
    const o = this.walkOut;
    if (this.cpu.tracer !== null) this.cpu.tracer.emit(PH_BEGIN, TR_WALK, 0);
    const r = walk(this.mem, this.totalFrames, this.regs, vhi, vlo, acc, o, true, true);
    if (this.cpu.tracer !== null) this.cpu.tracer.emit(PH_END, TR_WALK, 0);
    if (r !== 0) {
      if (faultVector(r) === VEC_PF) return this.raisePageFault(vhi, vlo, (-1 - r) & 0xffff);
      this.cpu.ctr[CTR.gpFaults]++;
      this.cr2hi = vhi;
      this.cr2lo = vlo;
      return r;
    }
    const arr = o.shift === 12 ? this.tlb4k : o.shift === 21 ? this.tlb2m : this.tlb1g;
    const match = o.global ? TLB_VALID | TLB_GLOBAL | this.regs.pcid : this.pcidTag;
    arr.fill(tagLoOf(vhi, vlo, o.shift), tagHiOf(vhi, o.shift), match, o.flags, o.pfn);
    if ((o.flags & F_NOMEM) !== 0) return this.boundedWord(o.pfn, o.shift, vlo);
    const offMask = o.shift === 12 ? 0xfff : o.shift === 21 ? 0x1fffff : 0x3fffffff;
    return o.pfn * FRAME_WORDS + ((vlo & offMask) >>> 2);
  }

  /** Delivers a #PF: CR2 = the address, the page's TLB entries are dropped (SDM 4.10.4.1). */
  private raisePageFault(vhi: number, vlo: number, err: number): number {
    this.cpu.ctr[CTR.pageFaults]++;
    this.cr2hi = vhi;
    this.cr2lo = vlo;
    this.dropPage(vhi, vlo);
    return fault(VEC_PF, err);
  }

  /** Adds accesses counted by an instruction loop (hits = accesses - misses). */
  countAccesses(loads: number, stores: number, fetches: number): void {
    this.cpu.ctr[CTR.loads] += loads;
    this.cpu.ctr[CTR.stores] += stores;
    this.cpu.ctr[CTR.fetches] += fetches;
  }

  /** 8-byte load; the value lands in valHi:valLo. Returns 0 or a fault code. vlo must be 8-aligned. */
  load64(vhi: number, vlo: number): number {
    this.cpu.ctr[CTR.loads]++;
    const w = this.translate(vhi, vlo, ACC_READ);
    this.lastWord = w;
    if (w < 0) return this.busOrFault(w, false);
    this.valLo = this.mem[w];
    this.valHi = this.mem[w + 1];
    return 0;
  }

  /** 8-byte store of hi:lo. Returns 0 or a fault code. vlo must be 8-aligned. */
  store64(vhi: number, vlo: number, hi: number, lo: number): number {
    this.cpu.ctr[CTR.stores]++;
    const w = this.translate(vhi, vlo, ACC_WRITE);
    this.lastWord = w;
    if (w < 0) return this.busOrFault(w, true, hi, lo);
    this.mem[w] = lo;
    this.mem[w + 1] = hi;
    return 0;
  }

  /** 8-byte instruction fetch; the bytes land in valHi:valLo. Returns 0 or a fault code. */
  fetch64(vhi: number, vlo: number): number {
    this.cpu.ctr[CTR.fetches]++;
    const w = this.translate(vhi, vlo, ACC_FETCH);
    this.lastWord = w;
    if (w < 0) return this.busOrFault(w, false);
    this.valLo = this.mem[w];
    this.valHi = this.mem[w + 1];
    return 0;
  }

  /**
   * Past RAM: the device's register pages reach the device (device.ts); memory that is not
   * installed reads as all ones and ignores writes. Other codes are faults.
   */
  private busOrFault(code: number, write: boolean, hi = 0, lo = 0): number {
    if (code !== FAULT_NOMEM) return code;
    const bus = this.bus;
    if (bus !== null && bus.contains(this.busWord)) {
      if (write) bus.write(this.busWord, hi, lo);
      else {
        bus.read(this.busWord);
        this.valLo = bus.valLo;
        this.valHi = bus.valHi;
      }
      return 0;
    }
    if (!write) {
      this.valLo = -1;
      this.valHi = -1;
    }
    return 0;
  }

  // ---- TLB instructions and effects ------------------------------------------------------

  /** Drops every entry (all three arrays) for the page holding vhi:vlo in the current PCID and globally. */
  private dropPage(vhi: number, vlo: number): void {
    const p = this.regs.pcid;
    this.tlb4k.invalidateAddress(vhi, vlo, p, true);
    this.tlb2m.invalidateAddress(vhi, vlo, p, true);
    this.tlb1g.invalidateAddress(vhi, vlo, p, true);
  }

  /** INVLPG: the page's entries in the current PCID and its global entries. */
  invlpg(vhi: number, vlo: number): void {
    this.cpu.ctr[CTR.invlpg]++;
    this.dropPage(vhi, vlo);
  }

  /** INVPCID (SDM Vol. 2 INVPCID): type 0 one address in pcid, 1 one pcid, 2 all with globals, 3 all but globals. */
  invpcid(type: number, pcid: number, vhi: number, vlo: number): void {
    switch (type) {
      case 0:
        this.cpu.ctr[CTR.invpcid0]++;
        this.tlb4k.invalidateAddress(vhi, vlo, pcid, false);
        this.tlb2m.invalidateAddress(vhi, vlo, pcid, false);
        this.tlb1g.invalidateAddress(vhi, vlo, pcid, false);
        return;
      case 1:
        this.cpu.ctr[CTR.invpcid1]++;
        this.invalidatePcid(pcid);
        return;
      case 2:
        this.cpu.ctr[CTR.invpcid2]++;
        this.flushAll();
        return;
      case 3:
        this.cpu.ctr[CTR.invpcid3]++;
        this.flushNonGlobal();
        return;
      default:
        panic(`Mmu.invpcid: type ${type} is not 0-3`);
    }
  }

  /** Drops every non-global entry of one PCID (INVPCID type 1, a flushing CR3 load). */
  invalidatePcid(pcid: number): void {
    this.tlb4k.invalidateWhere(pcid, false);
    this.tlb2m.invalidateWhere(pcid, false);
    this.tlb1g.invalidateWhere(pcid, false);
  }

  /** Drops every non-global entry of every PCID. */
  flushNonGlobal(): void {
    this.tlb4k.invalidateWhere(-1, false);
    this.tlb2m.invalidateWhere(-1, false);
    this.tlb1g.invalidateWhere(-1, false);
  }

  /** Drops everything, globals included. */
  flushAll(): void {
    this.cpu.ctr[CTR.fullFlushes]++;
    this.tlb4k.clear();
    this.tlb2m.clear();
    this.tlb1g.clear();
  }
}
