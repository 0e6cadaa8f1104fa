// A core's memory-management unit: the access path (translate through the fast path of
// fastpath.ts, then the three TLB arrays, the walk of a miss, the faults it raises; none with
// CR0.PG = 0), the loads, stores and fetches built on it (8-byte, sized, implicit supervisor), and
// the TLB-invalidation instructions and effects. It reads the core's decoded registers (regs.ts)
// and owns the core's TLB arrays (tlb.ts) in the control block; the walk is walk.ts. The owning
// thread of the core only. No allocation on any path: results land in fields (valLo, valHi, cr2hi,
// cr2lo, lastWord).

import { CTR, R_CR2_HI, R_CR2_LO, TLB_ENTRY_WORDS, type Layout } from './layout.js';
import { Paging, type Regs } from './regs.js';
import { Tlbe, TLB_GLOBAL, TLB_VALID, TlbArray, tagHiOf, tagLoOf } from './tlb.js';
import { WalkOut, walk } from './walk.js';
import { Fast, FastPath, type FastEntryView } from './fastpath.js';
import { PdeCache } from './psc.js';
import { sizedAccess } from './sized.js';
import { isCanonical } from './vaddr.js';
import { ACC_FETCH, ACC_IMPLICIT_READ, ACC_IMPLICIT_WRITE, ACC_READ, ACC_WRITE, F_CLEAN, F_NOMEM, F_PK_ALL, FAULT_GP0, FAULT_NOMEM, PF_P, PF_PK, VEC_PF, accessErrorBits, fault, faultVector } from './fault.js';
import { FRAME_WORDS } from './pte.js';
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
  /** Access masks for ACC_READ, ACC_WRITE, ACC_FETCH, ACC_IMPLICIT_READ, ACC_IMPLICIT_WRITE (copies of the Regs masks). */
  private readonly masks = new Int32Array(5);
  private readonly ways2m: number;
  private readonly ways1g: number;
  /** TLB match word of the current PCID's non-global entries. */
  private pcidTag = TLB_VALID;
  // results of the last access and fault (no allocation on any path)
  valLo = 0;
  valHi = 0;
  /** CR2: loaded by a #PF only (a #GP leaves it as it was, SDM 6.15); kept in the control block too. */
  cr2hi = 0;
  cr2lo = 0;
  /** The linear address of the last fault of any vector (the fault log's address). */
  faultHi = 0;
  faultLo = 0;
  /** Word the last load64/store64/fetch64 reached in physical memory (-1: none, or memory not installed). */
  lastWord = -1;
  /** For an access that crossed a page boundary (access()), the word it reached in the second page (-1 otherwise). */
  lastWord2 = -1;
  /** The device above RAM (null: none): accesses past RAM inside its register pages reach it. */
  bus: Device | null = null;
  /** Physical word of the last access past RAM (set with FAULT_NOMEM). */
  private busWord = -1;
  /** The fast path (fastpath.ts), and its two tables, read by translate() from fields of its own. */
  private readonly fp: FastPath;
  private readonly fast: Int32Array;
  private readonly fast2m: Int32Array;
  /** The paging-structure cache (psc.ts) when the machine has tlb.psc, else null. */
  readonly psc: PdeCache | null;

  constructor(
    layout: Layout,
    /** The control block (the TLB arrays live in the core's part of it) and physical memory. */
    private readonly ctl: Int32Array,
    readonly mem: Int32Array,
    private readonly base: number,
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
    this.fp = new FastPath(this.masks, regs);
    this.fast = this.fp.t4k;
    this.fast2m = this.fp.t2m;
    this.psc = layout.config.tlb.psc ? new PdeCache() : null;
  }

  /** Refreshes what the hot path copies from the decoded registers (after every register write). */
  registersChanged(): void {
    this.fp.clear();
    const r = this.regs;
    this.pcidTag = TLB_VALID | r.pcid;
    this.masks[ACC_READ] = r.maskRead;
    this.masks[ACC_WRITE] = r.maskWrite;
    this.masks[ACC_FETCH] = r.maskFetch;
    this.masks[ACC_IMPLICIT_READ] = r.maskImplicitRead;
    this.masks[ACC_IMPLICIT_WRITE] = r.maskImplicitWrite;
  }

  // ---- access path ----------------------------------------------------------------------

  /**
   * Translates vhi:vlo for an access of kind acc: returns the word index of the byte's 4-byte
   * word in physical memory, or a fault code (< 0; FAULT_NOMEM for memory that is not
   * installed). A hit is plain loads of this core's TLB and stores nothing (a store on this path
   * costs more than the lookup): the caller counts accesses with countAccesses(), and hits are
   * accesses minus misses. The owning thread only. acc is ACC_READ, ACC_WRITE or ACC_FETCH (the
   * fast path's kinds); implicit supervisor accesses go through translateImplicit().
   */
  translate(vhi: number, vlo: number, acc: number): number {
    const f = this.fast;
    const e = ((vlo >>> 12) & Fast.MASK) * Fast.WORDS;
    if (f[e + acc] === ((vlo >>> 22) | (vhi << 10)) && vhi >> 15 === vhi >> 31) return f[e + Fast.PFN] * Fast.FRAME_WORDS + ((vlo & 0xfff) >>> 2);
    const g = this.fast2m;
    const e2 = ((vlo >>> 21) & Fast.MASK_2M) * Fast.WORDS;
    if (g[e2 + acc] === ((vlo >>> 27) | (vhi << 5)) && vhi >> 15 === vhi >> 31) return g[e2 + Fast.PFN] * Fast.FRAME_WORDS + ((vlo & 0x1fffff) >>> 2);
    return this.translateTlb(vhi, vlo, acc);
  }

  /** translate() for an implicit supervisor-mode access (ACC_IMPLICIT_READ or _WRITE): the architectural TLB and the walk, never the fast path. */
  translateImplicit(vhi: number, vlo: number, write: boolean): number {
    return this.translateTlb(vhi, vlo, write ? ACC_IMPLICIT_WRITE : ACC_IMPLICIT_READ);
  }

  /** An implicit supervisor-mode 8-byte load (SDM 4.6) into valHi:valLo, or a store of hi:lo. Returns 0 or a fault code. */
  implicit64(vhi: number, vlo: number, write: boolean, hi = 0, lo = 0): number {
    this.cpu.ctr[CTR.translations]++;
    const w = this.translateImplicit(vhi, vlo, write);
    this.lastWord = w;
    if (w < 0) return this.busOrFault(w, write, hi, lo);
    if (write) {
      this.mem[w] = lo;
      this.mem[w + 1] = hi;
    } else {
      this.valLo = this.mem[w];
      this.valHi = this.mem[w + 1];
    }
    return 0;
  }

  /** The architectural TLB's 4 KiB array (a hit fills the fast path), then the large arrays. */
  private translateTlb(vhi: number, vlo: number, acc: number): number {
    if (!this.regs.pg) return this.unpaged(vhi, vlo);
    const t = this.ctl;
    const tagLo = (vlo >>> 12) | (vhi << 20);
    let e = this.e4k + (tagLo & this.set4k) * this.setWords4k;
    const end = e + this.setWords4k;
    for (; e < end; e += TLB_ENTRY_WORDS) {
      if (t[e + Tlbe.TAG_LO] === tagLo && t[e + Tlbe.TAG_HI] === vhi >>> 12) {
        const m = t[e + Tlbe.MATCH];
        if (m === this.pcidTag || (m & TLB_GLOBAL) !== 0) {
          const flags = t[e + Tlbe.FLAGS];
          if ((flags & this.masks[acc]) !== 0) return this.hitDenied(e, vhi, vlo, acc);
          const pfn = t[e + Tlbe.PFN];
          this.fp.fill(vhi, vlo, flags, pfn);
          return pfn * FRAME_WORDS + ((vlo & 0xfff) >>> 2);
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
          const flags = t[e + Tlbe.FLAGS];
          if ((flags & mask) !== 0) return this.hitDenied(e, vhi, vlo, acc);
          const pfn = t[e + Tlbe.PFN];
          this.fp.fill2m(vhi, vlo, flags, pfn);
          return pfn * FRAME_WORDS + ((vlo & 0x1fffff) >>> 2);
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
          const flags = t[e + Tlbe.FLAGS];
          if ((flags & mask) !== 0) return this.hitDenied(e, vhi, vlo, acc);
          const pfn = t[e + Tlbe.PFN];
          this.fp.fill2m(vhi, vlo, flags, pfn + (((vlo & 0x3fffffff) >>> 21) << 9));
          return pfn * FRAME_WORDS + ((vlo & 0x3fffffff) >>> 2);
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
      if (e >= this.e4k && e < this.e4k + this.tlb4k.size * TLB_ENTRY_WORDS) this.fp.drop(this.ctl[e + Tlbe.TAG_LO]);
      else this.fp.clear();
      return this.miss(vhi, vlo, acc);
    }
    const shift = e >= this.e1g && e < this.e1g + this.tlb1g.size * TLB_ENTRY_WORDS ? 30
      : e >= this.e2m && e < this.e2m + this.tlb2m.size * TLB_ENTRY_WORDS ? 21 : 12;
    return this.boundedWord(this.ctl[e + Tlbe.PFN], shift, vlo);
  }

  /**
   * CR0.PG = 0 (SDM 4.1.1): no translation, no TLB; the linear address is the physical one. Such
   * a core runs outside IA-32e mode, where linear addresses have 32 bits: one above 4 GiB is #GP(0).
   */
  private unpaged(vhi: number, vlo: number): number {
    if (vhi !== 0) return this.generalProtection(vhi, vlo);
    const w = vlo >>> 2;
    if (w + 1 < this.memWords) return w;
    this.busWord = w;
    return FAULT_NOMEM;
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
    const r = walk(this.mem, this.totalFrames, this.regs, vhi, vlo, acc, o, true, true, this.psc);
    if (this.cpu.tracer !== null) this.cpu.tracer.emit(PH_END, TR_WALK, 0);
    if (r !== 0) {
      if (faultVector(r) === VEC_PF) return this.raisePageFault(vhi, vlo, (-1 - r) & 0xffff);
      return this.generalProtection(vhi, vlo); // the walk's only other fault: a non-canonical address
    }
    const arr = o.shift === 12 ? this.tlb4k : o.shift === 21 ? this.tlb2m : this.tlb1g;
    const match = o.global ? TLB_VALID | TLB_GLOBAL | this.regs.pcid : this.pcidTag;
    if (arr.fill(tagLoOf(vhi, vlo, o.shift), tagHiOf(vhi, o.shift), match, o.flags, o.pfn)) {
      // The evicted translation leaves the fast path too.
      if (o.shift === 12) this.fp.drop(arr.evictedTagLo);
      else this.fp.clear();
    }
    if ((o.flags & F_NOMEM) !== 0) return this.boundedWord(o.pfn, o.shift, vlo);
    const offMask = o.shift === 12 ? 0xfff : o.shift === 21 ? 0x1fffff : 0x3fffffff;
    if (o.shift === 12) this.fp.fill(vhi, vlo, o.flags, o.pfn);
    else this.fp.fill2m(vhi, vlo, o.flags, o.shift === 21 ? o.pfn : o.pfn + (((vlo & 0x3fffffff) >>> 21) << 9));
    return o.pfn * FRAME_WORDS + ((vlo & offMask) >>> 2);
  }

  /** The fast path's entries as the architectural TLB must back them (tests; see FastPath.entries). */
  fastEntries(): FastEntryView[] {
    return this.fp.entries();
  }

  /**
   * Raises #GP(0), for an access (a non-canonical or, without paging, a too-high address) or an
   * instruction (the Cpu's control-register moves, INVPCID): counted, CR2 not loaded (SDM 6.15),
   * hi:lo (the address, or the instruction's operand) kept for the fault log.
   */
  generalProtection(hi: number, lo: number): number {
    this.cpu.ctr[CTR.gpFaults]++;
    this.faultHi = hi;
    this.faultLo = lo;
    return FAULT_GP0;
  }

  /** Delivers a #PF: CR2 = the address, the page's TLB entries are dropped (SDM 4.10.4.1). */
  private raisePageFault(vhi: number, vlo: number, err: number): number {
    this.cpu.ctr[CTR.pageFaults]++;
    this.cr2hi = this.faultHi = vhi;
    this.cr2lo = this.faultLo = vlo;
    this.ctl[this.base + R_CR2_HI] = vhi;
    this.ctl[this.base + R_CR2_LO] = vlo;
    this.dropPage(vhi, vlo);
    this.psc?.dropAddress(vhi, vlo, this.regs.pcid); // the PSC entries that would translate it (SDM 4.10.4.1)
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

  /**
   * A data access of `size` bytes (1, 2, 4 or 8) at vhi:vlo, aligned or not, crossing a page
   * boundary or not (sized.ts). Returns 0 or a fault code; a load's value lands in valHi:valLo.
   */
  access(vhi: number, vlo: number, size: number, write: boolean, hi = 0, lo = 0): number {
    return sizedAccess(this, vhi, vlo, size, write, hi, lo);
  }

  // ---- TLB instructions and effects ------------------------------------------------------

  /** Drops every entry (all three arrays) for the page holding vhi:vlo in the current PCID and globally. */
  private dropPage(vhi: number, vlo: number): void {
    const p = this.regs.pcid;
    this.tlb4k.invalidateAddress(vhi, vlo, p, true);
    this.fp.drop((vlo >>> 12) | (vhi << 20));
    if (this.tlb2m.invalidateAddress(vhi, vlo, p, true) + this.tlb1g.invalidateAddress(vhi, vlo, p, true) + this.otherHalf(vhi, vlo, p, true) > 0) this.fp.clear();
  }

  /** 32-bit paging caches a 4 MiB page as 2 MiB halves (walk.ts, walk32): dropping one drops the other. */
  private otherHalf(vhi: number, vlo: number, pcid: number, globals: boolean): number {
    return this.regs.mode === Paging.B32 ? this.tlb2m.invalidateAddress(vhi, vlo ^ (1 << 21), pcid, globals) : 0;
  }

  /** INVLPG: the page's entries in the current PCID and its global entries; every PSC entry of the current PCID. */
  invlpg(vhi: number, vlo: number): void {
    this.cpu.ctr[CTR.invlpg]++;
    this.dropPage(vhi, vlo);
    this.psc?.dropPcid(this.regs.pcid);
  }

  /**
   * INVPCID (SDM Vol. 2 INVPCID): type 0 one address in pcid, 1 one pcid, 2 all with globals, 3
   * all but globals. #GP(0), invalidating nothing, for a type above 3, a PCID above 4095 (the
   * descriptor's reserved bits 63:12), a PCID other than 0 with CR4.PCIDE = 0 (types 0 and 1), and
   * a non-canonical type-0 address. Returns 0 or the fault.
   */
  invpcid(type: number, pcid: number, vhi: number, vlo: number): number {
    const bad = type < 0 || type > 3 ||
      ((type === 0 || type === 1) && (pcid < 0 || pcid > 0xfff || (pcid !== 0 && !this.regs.pcide))) ||
      (type === 0 && !isCanonical(vhi, this.regs.la57));
    if (bad) return this.generalProtection(vhi, vlo);
    switch (type) {
      case 0:
        this.cpu.ctr[CTR.invpcid0]++;
        this.psc?.dropAddress(vhi, vlo, pcid);
        this.tlb4k.invalidateAddress(vhi, vlo, pcid, false);
        this.fp.drop((vlo >>> 12) | (vhi << 20));
        if (this.tlb2m.invalidateAddress(vhi, vlo, pcid, false) + this.tlb1g.invalidateAddress(vhi, vlo, pcid, false) + this.otherHalf(vhi, vlo, pcid, false) > 0) this.fp.clear();
        return 0;
      case 1:
        this.cpu.ctr[CTR.invpcid1]++;
        this.invalidatePcid(pcid);
        return 0;
      case 2:
        this.cpu.ctr[CTR.invpcid2]++;
        this.flushAll();
        return 0;
      default:
        this.cpu.ctr[CTR.invpcid3]++;
        this.flushNonGlobal();
        return 0;
    }
  }

  /** Drops every non-global entry of one PCID (INVPCID type 1, a flushing CR3 load). */
  invalidatePcid(pcid: number): void {
    this.fp.clear();
    this.psc?.dropPcid(pcid);
    this.tlb4k.invalidateWhere(pcid, false);
    this.tlb2m.invalidateWhere(pcid, false);
    this.tlb1g.invalidateWhere(pcid, false);
  }

  /** Drops every non-global entry of every PCID. */
  flushNonGlobal(): void {
    this.fp.clear();
    this.psc?.clear();
    this.tlb4k.invalidateWhere(-1, false);
    this.tlb2m.invalidateWhere(-1, false);
    this.tlb1g.invalidateWhere(-1, false);
  }

  /** Drops everything, globals included. */
  flushAll(): void {
    this.cpu.ctr[CTR.fullFlushes]++;
    this.fp.clear();
    this.psc?.clear();
    this.tlb4k.clear();
    this.tlb2m.clear();
    this.tlb1g.clear();
  }
}
