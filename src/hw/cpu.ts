// One simulated core as executed by some thread: its decoded registers, its access path through
// its own TLB and walker, its TLB-invalidation instructions, and its interrupt controller (the
// pending word checked at every instruction boundary, the doorbell a halted core sleeps on, and
// a bounded multi-producer IPI queue per core, after Vyukov's bounded queue).
//
// A core is data; a Cpu is an executor's handle on it. Exactly one thread may drive a core at a
// time (the run state word enforces it: see attach/detach). Other threads touch a core only
// through its pending word, doorbell, queue tail and ack counter.
//
// Waits are bounded: spin briefly, then sleep on the doorbell in short slices; after the
// machine's waitLimitMs, give up with a value that names what was awaited (the caller reports
// it), or stop at once when another core of the run set the abort flag.

import {
  C_ACK, C_BP_ARMED, C_BP_PARKED, C_BP_RESUME, C_COUNTERS, C_DOORBELL, C_PENDING, C_QHEAD, C_QTAIL, C_STATE, CORE_HALTED, CORE_OFF,
  CORE_RUNNING, COUNTER_NAMES, CTR, G_ABORT, G_BARRIER, G_PARTICIPANTS, G_STARTED, Layout, R_AC, R_CPL, R_CR0,
  R_CR3_HI, R_CR3_LO, R_CR4, R_EFER, R_NODE, R_PKRU, SLOT_WORDS, TLB_ENTRY_WORDS,
} from './layout.js';
import { CR3_NOFLUSH_HI, CR4_PCIDE, CR4_PGE, CR4_LA57, Regs } from './regs.js';
import { Tlbe, TLB_GLOBAL, TLB_VALID, TlbArray, tagHiOf, tagLoOf } from './tlb.js';
import { WalkOut, walk } from './walk.js';
import { ACC_FETCH, ACC_READ, ACC_WRITE, F_CLEAN, F_NOMEM, F_PK_ALL, FAULT_NOMEM, PF_P, PF_PK, VEC_PF, accessErrorBits, fault, faultVector } from './fault.js';
import { PTE_P, FRAME_WORDS } from './pte.js';
import { panic } from './panic.js';
import { PH_BEGIN, PH_END, PH_INSTANT, TR_IPI, TR_IPI_SEND, TR_PARKED, TR_WALK, TraceRing } from './trace.js';
import { BoundedWait, STEP_EXPIRED, STEP_SLEEP } from './wait.js';

// ---- IPI message types. 1..15 are the hardware layer's; higher types belong to the kernel. ----
/** Acknowledge and do nothing else (tests, latency). */
export const IPI_PING = 1;
/** Acknowledge at an instruction boundary: proves the core is inside no walk (break-before-make). */
export const IPI_SYNC = 2;
/** Ask the core to end its current program at the next operation boundary, then acknowledge. */
export const IPI_STOP = 5;
export const IPI_TYPES = 64;

/** Pending-word bits. */
export const PENDING_IPI = 1;

// ---- wait outcomes ----
export const WAIT_OK = 0;
export const WAIT_TIMEOUT = 1;
export const WAIT_ABORTED = 2;
export const IPI_OK = 0;
export const IPI_TARGET_OFFLINE = 3;
export const IPI_QUEUE_FULL = 4;

/** Handler for an IPI type. It must call cpu.ack(sender) exactly once. */
export type IpiHandler = (cpu: Cpu, sender: number, a0: number, a1: number, a2: number, a3: number, a4: number) => void;

/** A core's waits spin this many steps before they sleep on the doorbell, in slices of SLICE_MS (notified: long slices cost nothing). */
const SPINS = 200;
const SLICE_MS = 2;
/** HLT and a parked breakpoint sleep in slices this long (woken by the doorbell or the resume word). */
const HALT_SLICE_MS = 50;

/** The shared views of one machine, as every executor of its cores holds them. */
export interface MachineViews {
  layout: Layout;
  ctl: Int32Array;
  mem: Int32Array;
  /** The trace buffer, when the machine traces. */
  trace?: SharedArrayBuffer;
}

export class Cpu {
  readonly layout: Layout;
  readonly ctl: Int32Array;
  readonly mem: Int32Array;
  readonly id: number;
  readonly node: number;
  readonly base: number;
  readonly totalFrames: number;
  readonly memWords: number;
  readonly regs: Regs;
  readonly tlb4k: TlbArray;
  readonly tlb2m: TlbArray;
  readonly tlb1g: TlbArray;
  readonly walkOut = new WalkOut();
  /** Local counters; publishCounters() adds them into the control block. */
  readonly ctr = new Float64Array(COUNTER_NAMES.length);
  readonly handlers: (IpiHandler | undefined)[] = new Array(IPI_TYPES).fill(undefined);
  readonly waitLimitMs: number;
  /** This core's bounded wait (acks, a full queue, barriers, HLT), and a breakpoint's own. */
  private readonly bw: BoundedWait;
  private readonly bpWait: BoundedWait;
  readonly tornPteUpdate: boolean;
  // hot-path copies
  /** Word index of this core's pending-interrupt word (instruction loops test it inline). */
  readonly pendingWord: number;
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
  // results of the last access, fault and message (no allocation on any path)
  valLo = 0;
  valHi = 0;
  cr2hi = 0;
  cr2lo = 0;
  msgType = 0;
  msgSender = 0;
  /** Number of acks this core must have received before its current IPI wait ends. */
  private ackTarget = 0;
  /** This core's trace ring, or null when the machine does not trace. */
  tracer: TraceRing | null;
  /** Word the last load64/store64/fetch64 reached in physical memory (-1: none, or memory not installed). */
  lastWord = -1;
  /** Set by IPI_STOP: the executor ends the program at its next check. */
  stopRequested = false;
  /** Cores the last bounded wait was waiting for, for the error message. */
  lastWaitWhat = '';

  constructor(views: MachineViews, id: number) {
    const l = views.layout;
    this.layout = l;
    this.ctl = views.ctl;
    this.mem = views.mem;
    this.id = id;
    this.base = l.coreBase(id);
    this.node = this.ctl[this.base + R_NODE];
    this.totalFrames = l.totalFrames;
    this.memWords = views.mem.length;
    this.regs = new Regs(l.config.maxPhysAddr);
    this.regs.atomicAD = !l.config.inject.includes('non-atomic-ad');
    this.tornPteUpdate = l.config.inject.includes('torn-pte-update');
    this.waitLimitMs = l.config.waitLimitMs;
    this.bw = new BoundedWait(this.waitLimitMs, 1);
    this.bpWait = new BoundedWait(this.waitLimitMs, 1);
    this.tracer = views.trace ? new TraceRing(views.trace, id) : null;
    this.tlb4k = new TlbArray(this.ctl, this.base, l.tlb4k);
    this.tlb2m = new TlbArray(this.ctl, this.base, l.tlb2m);
    this.tlb1g = new TlbArray(this.ctl, this.base, l.tlb1g);
    this.pendingWord = this.base + C_PENDING;
    this.e4k = this.tlb4k.entries;
    this.e2m = this.tlb2m.entries;
    this.e1g = this.tlb1g.entries;
    this.set4k = this.tlb4k.setMask;
    this.set2m = this.tlb2m.setMask;
    this.set1g = this.tlb1g.setMask;
    this.setWords4k = this.tlb4k.ways * TLB_ENTRY_WORDS;
    this.ways2m = this.tlb2m.ways;
    this.ways1g = this.tlb1g.ways;
    this.handlers[IPI_PING] = (cpu, sender) => cpu.ack(sender);
    this.handlers[IPI_SYNC] = (cpu, sender) => cpu.ack(sender);
    this.handlers[IPI_STOP] = (cpu, sender) => {
      cpu.stopRequested = true;
      cpu.ack(sender);
    };
    this.loadRegisters();
  }

  // ---- ownership ------------------------------------------------------------------------

  /** Takes the core for this thread (OFF -> RUNNING). Returns false if another thread runs it. */
  attach(): boolean {
    if (Atomics.compareExchange(this.ctl, this.base + C_STATE, CORE_OFF, CORE_RUNNING) !== CORE_OFF) return false;
    this.loadRegisters();
    this.ackTarget = Atomics.load(this.ctl, this.base + C_ACK);
    this.stopRequested = false;
    return true;
  }

  /** Publishes counters and releases the core (-> OFF). */
  detach(): void {
    this.publishCounters();
    Atomics.store(this.ctl, this.base + C_STATE, CORE_OFF);
  }

  // ---- registers ------------------------------------------------------------------------

  /** Reloads the decoded registers from the control block. */
  loadRegisters(): void {
    const c = this.ctl;
    const b = this.base;
    const r = this.regs;
    r.cr0 = c[b + R_CR0];
    r.cr3lo = c[b + R_CR3_LO];
    r.cr3hi = c[b + R_CR3_HI];
    r.cr4 = c[b + R_CR4];
    r.efer = c[b + R_EFER];
    r.pkru = c[b + R_PKRU];
    r.cpl = c[b + R_CPL];
    r.ac = c[b + R_AC] !== 0;
    this.decoded();
  }

  /** Refreshes what the hot path copies from the decoded registers. */
  private decoded(): void {
    const r = this.regs;
    r.decode();
    this.pcidTag = TLB_VALID | r.pcid;
    this.masks[ACC_READ] = r.maskRead;
    this.masks[ACC_WRITE] = r.maskWrite;
    this.masks[ACC_FETCH] = r.maskFetch;
  }

  private storeRegisters(): void {
    const c = this.ctl;
    const b = this.base;
    const r = this.regs;
    c[b + R_CR0] = r.cr0;
    c[b + R_CR3_LO] = r.cr3lo;
    c[b + R_CR3_HI] = r.cr3hi;
    c[b + R_CR4] = r.cr4;
    c[b + R_EFER] = r.efer;
    c[b + R_PKRU] = r.pkru;
    c[b + R_CPL] = r.cpl;
    c[b + R_AC] = r.ac ? 1 : 0;
    this.decoded();
  }

  /** MOV to CR3 (SDM 4.10.4.1): hi bit 31 is the no-flush bit when CR4.PCIDE = 1. */
  movCr3(hi: number, lo: number): void {
    const r = this.regs;
    const noFlush = r.pcide && (hi & CR3_NOFLUSH_HI) !== 0;
    r.cr3hi = hi & ~CR3_NOFLUSH_HI;
    r.cr3lo = lo;
    this.storeRegisters();
    if (noFlush) {
      this.ctr[CTR.cr3NoFlush]++;
      return;
    }
    this.ctr[CTR.cr3Flushes]++;
    this.invalidatePcid(r.pcid);
  }

  /** MOV to CR4: changing PGE or clearing PCIDE (or LA57) flushes everything, globals included. */
  movCr4(v: number): void {
    const old = this.regs.cr4;
    this.regs.cr4 = v;
    this.storeRegisters();
    const changed = old ^ v;
    if ((changed & (CR4_PGE | CR4_LA57)) !== 0 || ((old & CR4_PCIDE) !== 0 && (v & CR4_PCIDE) === 0)) this.flushAll();
  }

  /** MOV to CR0. No TLB effect for WP. */
  movCr0(v: number): void {
    this.regs.cr0 = v;
    this.storeRegisters();
  }

  /** WRMSR EFER. */
  wrEfer(v: number): void {
    this.regs.efer = v;
    this.storeRegisters();
  }

  /** WRPKRU: new rights at once, no TLB flush (SDM 4.6.2). */
  wrpkru(v: number): void {
    this.regs.pkru = v;
    this.storeRegisters();
  }

  /** Changes CPL (a privilege transition) and EFLAGS.AC (STAC/CLAC). */
  setMode(cpl: number, ac: boolean): void {
    this.regs.cpl = cpl;
    this.regs.ac = ac;
    this.storeRegisters();
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
    return w + 1 < this.memWords ? w : FAULT_NOMEM;
  }

  /** TLB miss: walk (setting A/D), fill the TLB, or raise the walk's fault. */
  private miss(vhi: number, vlo: number, acc: number): number {
    this.ctr[CTR.tlbMisses]++;
    this.ctr[CTR.walks]++;
    const o = this.walkOut;
    if (this.tracer !== null) this.tracer.emit(PH_BEGIN, TR_WALK, 0);
    const r = walk(this.mem, this.totalFrames, this.regs, vhi, vlo, acc, o, true, true);
    if (this.tracer !== null) this.tracer.emit(PH_END, TR_WALK, 0);
    if (r !== 0) {
      if (faultVector(r) === VEC_PF) return this.raisePageFault(vhi, vlo, (-1 - r) & 0xffff);
      this.ctr[CTR.gpFaults]++;
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
    this.ctr[CTR.pageFaults]++;
    this.cr2hi = vhi;
    this.cr2lo = vlo;
    this.dropPage(vhi, vlo);
    return fault(VEC_PF, err);
  }

  /** Adds accesses counted by an instruction loop (hits = accesses - misses). */
  countAccesses(loads: number, stores: number, fetches: number): void {
    this.ctr[CTR.loads] += loads;
    this.ctr[CTR.stores] += stores;
    this.ctr[CTR.fetches] += fetches;
  }

  /** 8-byte load; the value lands in valHi:valLo. Returns 0 or a fault code. vlo must be 8-aligned. */
  load64(vhi: number, vlo: number): number {
    this.ctr[CTR.loads]++;
    const w = this.translate(vhi, vlo, ACC_READ);
    this.lastWord = w;
    if (w < 0) return this.busOrFault(w, false);
    this.valLo = this.mem[w];
    this.valHi = this.mem[w + 1];
    return 0;
  }

  /** 8-byte store of hi:lo. Returns 0 or a fault code. vlo must be 8-aligned. */
  store64(vhi: number, vlo: number, hi: number, lo: number): number {
    this.ctr[CTR.stores]++;
    const w = this.translate(vhi, vlo, ACC_WRITE);
    this.lastWord = w;
    if (w < 0) return this.busOrFault(w, true);
    this.mem[w] = lo;
    this.mem[w + 1] = hi;
    return 0;
  }

  /** 8-byte instruction fetch; the bytes land in valHi:valLo. Returns 0 or a fault code. */
  fetch64(vhi: number, vlo: number): number {
    this.ctr[CTR.fetches]++;
    const w = this.translate(vhi, vlo, ACC_FETCH);
    this.lastWord = w;
    if (w < 0) return this.busOrFault(w, false);
    this.valLo = this.mem[w];
    this.valHi = this.mem[w + 1];
    return 0;
  }

  /** Memory that is not installed reads as all ones and ignores writes; other codes are faults. */
  private busOrFault(code: number, write: boolean): number {
    if (code !== FAULT_NOMEM) return code;
    if (!write) {
      this.valLo = -1;
      this.valHi = -1;
    }
    return 0;
  }

  // ---- TLB instructions -----------------------------------------------------------------

  /** Drops every entry (all three arrays) for the page holding vhi:vlo in the current PCID and globally. */
  private dropPage(vhi: number, vlo: number): void {
    const p = this.regs.pcid;
    this.tlb4k.invalidateAddress(vhi, vlo, p, true);
    this.tlb2m.invalidateAddress(vhi, vlo, p, true);
    this.tlb1g.invalidateAddress(vhi, vlo, p, true);
  }

  /** INVLPG: the page's entries in the current PCID and its global entries. */
  invlpg(vhi: number, vlo: number): void {
    this.ctr[CTR.invlpg]++;
    this.dropPage(vhi, vlo);
  }

  /** INVPCID (SDM Vol. 2 INVPCID): type 0 one address in pcid, 1 one pcid, 2 all with globals, 3 all but globals. */
  invpcid(type: number, pcid: number, vhi: number, vlo: number): void {
    switch (type) {
      case 0:
        this.ctr[CTR.invpcid0]++;
        this.tlb4k.invalidateAddress(vhi, vlo, pcid, false);
        this.tlb2m.invalidateAddress(vhi, vlo, pcid, false);
        this.tlb1g.invalidateAddress(vhi, vlo, pcid, false);
        return;
      case 1:
        this.ctr[CTR.invpcid1]++;
        this.invalidatePcid(pcid);
        return;
      case 2:
        this.ctr[CTR.invpcid2]++;
        this.flushAll();
        return;
      case 3:
        this.ctr[CTR.invpcid3]++;
        this.flushNonGlobal();
        return;
      default:
        panic(`Cpu.invpcid: type ${type} is not 0-3`);
    }
  }

  private invalidatePcid(pcid: number): void {
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
    this.ctr[CTR.fullFlushes]++;
    this.tlb4k.clear();
    this.tlb2m.clear();
    this.tlb1g.clear();
  }

  // ---- interrupts -----------------------------------------------------------------------

  /**
   * The interrupt check at an instruction boundary: one plain load of the pending word (an
   * Atomics.load costs 10-20x more here; see README "Memory ordering"). Seeing the bit, service()
   * takes it with Atomics.exchange, which orders every read of the queue after it.
   */
  poll(): void {
    if (this.ctl[this.pendingWord] !== 0) this.service();
  }

  /** Takes every queued message and runs its handler. Handlers acknowledge their senders. */
  service(): void {
    Atomics.exchange(this.ctl, this.pendingWord, 0);
    const c = this.ctl;
    const qb = this.base;
    const mask = this.layout.queueSlots - 1;
    const slots = this.base + this.layout.queueBase;
    for (;;) {
      const pos = c[qb + C_QHEAD];
      const slot = slots + (pos & mask) * SLOT_WORDS;
      if (((Atomics.load(c, slot) - (pos + 1)) | 0) !== 0) return;
      const type = c[slot + 1];
      const sender = c[slot + 2];
      const a0 = c[slot + 3];
      const a1 = c[slot + 4];
      const a2 = c[slot + 5];
      const a3 = c[slot + 6];
      const a4 = c[slot + 7];
      Atomics.store(c, qb + C_QHEAD, (pos + 1) | 0);
      Atomics.store(c, slot, (pos + mask + 1) | 0);
      this.ctr[CTR.ipisReceived]++;
      this.msgType = type;
      this.msgSender = sender;
      const h = this.handlers[type];
      if (h === undefined) panic(`Cpu.service: core ${this.id} got IPI type ${type} from core ${sender} with no handler`);
      this.trace(PH_BEGIN, TR_IPI, type);
      h(this, sender, a0, a1, a2, a3, a4);
      this.trace(PH_END, TR_IPI, type);
    }
  }

  /**
   * Acknowledges an IPI to its sender, and wakes it if it sleeps. The sender, before it sleeps,
   * marks itself HALTED and then looks at its ack word again (sleepSlice); this side adds the ack
   * and then looks at the state: with both sequentially consistent, one of the two sees the
   * other, so no ack is slept through. A polling sender costs no notify.
   */
  ack(sender: number): void {
    const sb = this.layout.coreBase(sender);
    Atomics.add(this.ctl, sb + C_ACK, 1);
    if (Atomics.load(this.ctl, sb + C_STATE) === CORE_HALTED) this.wake(sender);
  }

  /**
   * A named breakpoint site (race scripts): when breakpoint `id` is armed on this core, the core
   * parks here — it publishes where it is and waits, running nothing and servicing no interrupt,
   * until the controller resumes it (bounded by waitLimitMs). One load when not armed.
   */
  breakpoint(id: number): void {
    const c = this.ctl;
    if ((c[this.base + C_BP_ARMED] & (1 << id)) === 0) return;
    const resume = Atomics.load(c, this.base + C_BP_RESUME);
    this.trace(PH_BEGIN, TR_PARKED, id);
    Atomics.store(c, this.base + C_BP_PARKED, id + 1);
    Atomics.notify(c, this.base + C_BP_PARKED);
    // Its own wait: a breakpoint can be reached from a handler run inside another wait of this core.
    const w = this.bpWait;
    w.begin(0);
    while (Atomics.load(c, this.base + C_BP_RESUME) === resume) {
      if (w.step() === STEP_EXPIRED || Atomics.load(c, G_ABORT) !== 0) break;
      Atomics.wait(c, this.base + C_BP_RESUME, resume, HALT_SLICE_MS);
    }
    Atomics.store(c, this.base + C_BP_PARKED, 0);
    this.trace(PH_END, TR_PARKED, id);
  }

  /** Records a trace event when the machine traces (one load and a compare otherwise). */
  trace(phase: number, kind: number, arg = 0): void {
    if (this.tracer !== null) this.tracer.emit(phase, kind, arg);
  }

  /** Whether core c sleeps on its doorbell right now (HLT, or a long wait). */
  isHalted(c: number): boolean {
    return Atomics.load(this.ctl, this.layout.coreBase(c) + C_STATE) === CORE_HALTED;
  }

  /** Bumps core c's doorbell and wakes it if it sleeps there. */
  wake(c: number): void {
    const db = this.layout.coreBase(c) + C_DOORBELL;
    Atomics.add(this.ctl, db, 1);
    Atomics.notify(this.ctl, db);
  }

  /** Tries to put a message in target's queue. False when the queue is full. Any thread. */
  private enqueue(target: number, type: number, a0: number, a1: number, a2: number, a3: number, a4: number): boolean {
    const c = this.ctl;
    const tb = this.layout.coreBase(target);
    const mask = this.layout.queueSlots - 1;
    const slots = tb + this.layout.queueBase;
    for (;;) {
      const pos = Atomics.load(c, tb + C_QTAIL);
      const slot = slots + (pos & mask) * SLOT_WORDS;
      const dif = (Atomics.load(c, slot) - pos) | 0;
      if (dif === 0) {
        if (Atomics.compareExchange(c, tb + C_QTAIL, pos, (pos + 1) | 0) !== pos) continue;
        c[slot + 1] = type;
        c[slot + 2] = this.id;
        c[slot + 3] = a0;
        c[slot + 4] = a1;
        c[slot + 5] = a2;
        c[slot + 6] = a3;
        c[slot + 7] = a4;
        Atomics.store(c, slot, (pos + 1) | 0);
        return true;
      }
      if (dif < 0) return false;
    }
  }

  /**
   * Sends an IPI: queues the message (waiting, while servicing its own interrupts, when the
   * target's queue is full), sets the target's pending bit and wakes it if it is halted. The
   * caller later waits for the ack with waitAcks(). Returns IPI_OK, IPI_TARGET_OFFLINE, or a
   * wait outcome when the queue stayed full past the bound; with noWait, IPI_QUEUE_FULL at once.
   */
  sendIpi(target: number, type: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, noWait = false): number {
    const c = this.ctl;
    const tb = this.layout.coreBase(target);
    if (Atomics.load(c, tb + C_STATE) === CORE_OFF) return IPI_TARGET_OFFLINE;
    if (!this.enqueue(target, type, a0, a1, a2, a3, a4)) {
      if (noWait) return IPI_QUEUE_FULL;
      const w = this.bw;
      w.begin(SPINS);
      while (!this.enqueue(target, type, a0, a1, a2, a3, a4)) {
        this.poll();
        if (Atomics.load(c, G_ABORT) !== 0) return WAIT_ABORTED;
        const st = w.step();
        if (st === STEP_EXPIRED) {
          this.lastWaitWhat = `IPI queue of core ${target} stayed full`;
          return WAIT_TIMEOUT;
        }
        if (st === STEP_SLEEP) this.sleepSlice();
      }
    }
    this.ackTarget = (this.ackTarget + 1) | 0;
    this.ctr[CTR.ipisSent]++;
    this.trace(PH_INSTANT, TR_IPI_SEND, target);
    Atomics.or(c, tb + C_PENDING, PENDING_IPI);
    if (Atomics.load(c, tb + C_STATE) === CORE_HALTED) this.wake(target);
    return IPI_OK;
  }

  /**
   * Waits until every IPI sent so far is acknowledged, servicing this core's own interrupts
   * meanwhile (so two cores waiting on each other cannot deadlock). Returns a WAIT_* value.
   */
  waitAcks(): number {
    const c = this.ctl;
    const ackWord = this.base + C_ACK;
    const w = this.bw;
    w.begin(SPINS);
    while (((Atomics.load(c, ackWord) - this.ackTarget) | 0) < 0) {
      this.poll();
      if (Atomics.load(c, G_ABORT) !== 0) return WAIT_ABORTED;
      const st = w.step();
      if (st === STEP_EXPIRED) {
        this.lastWaitWhat = `acks for IPIs sent by core ${this.id} (${(this.ackTarget - Atomics.load(c, ackWord)) | 0} missing)`;
        return WAIT_TIMEOUT;
      }
      if (st === STEP_SLEEP) this.sleepSlice(ackWord, this.ackTarget);
    }
    return WAIT_OK;
  }

  /**
   * Sleeps on the doorbell for one short slice, marked HALTED so that whoever changes what it
   * waits for wakes it; not at all if an interrupt is pending or the awaited word has reached
   * `until` (checked after HALTED is visible: the other side changes the word, then looks at
   * the state, so one of the two sees the other). word < 0: only interrupts end the slice early.
   */
  private sleepSlice(word = -1, until = 0): void {
    const c = this.ctl;
    const db = this.base + C_DOORBELL;
    const d = Atomics.load(c, db);
    Atomics.store(c, this.base + C_STATE, CORE_HALTED);
    const done = word >= 0 && ((Atomics.load(c, word) - until) | 0) >= 0;
    if (!done && Atomics.load(c, this.pendingWord) === 0) Atomics.wait(c, db, d, SLICE_MS);
    Atomics.store(c, this.base + C_STATE, CORE_RUNNING);
  }

  /**
   * HLT: sleeps on the doorbell until an interrupt is pending, then services it. Bounded by
   * waitLimitMs. Returns a WAIT_* value.
   */
  halt(): number {
    const c = this.ctl;
    const db = this.base + C_DOORBELL;
    const w = this.bw;
    w.begin(0);
    this.ctr[CTR.halts]++;
    for (;;) {
      const d = Atomics.load(c, db);
      Atomics.store(c, this.base + C_STATE, CORE_HALTED);
      if (Atomics.load(c, this.pendingWord) !== 0) break;
      if (Atomics.load(c, G_ABORT) !== 0) {
        Atomics.store(c, this.base + C_STATE, CORE_RUNNING);
        return WAIT_ABORTED;
      }
      if (w.step() === STEP_EXPIRED) {
        Atomics.store(c, this.base + C_STATE, CORE_RUNNING);
        this.lastWaitWhat = `an interrupt for halted core ${this.id}`;
        return WAIT_TIMEOUT;
      }
      Atomics.wait(c, db, d, HALT_SLICE_MS);
    }
    Atomics.store(c, this.base + C_STATE, CORE_RUNNING);
    this.service();
    return WAIT_OK;
  }

  /**
   * Start-of-run barrier: waits until every core of the run is attached, so that no IPI of the
   * run finds its target offline. Services interrupts meanwhile. Returns a WAIT_* value.
   */
  startBarrier(): number {
    return this.barrierOn(G_STARTED, 'the start-of-run barrier');
  }

  /**
   * End-of-run barrier: arrives, then keeps servicing interrupts until every core of the run
   * has arrived, so that no core's IPI waits on a core that already left. Returns a WAIT_* value.
   */
  barrier(): number {
    return this.barrierOn(G_BARRIER, 'the end-of-run barrier');
  }

  private barrierOn(word: number, what: string): number {
    const c = this.ctl;
    const n = Atomics.load(c, G_PARTICIPANTS);
    // The last to arrive wakes the cores sleeping in the barrier (they re-read the word after
    // marking themselves HALTED: see sleepSlice).
    if (Atomics.add(c, word, 1) + 1 === n) {
      for (let i = 0; i < this.layout.config.cores; i++) if (i !== this.id && this.isHalted(i)) this.wake(i);
    }
    const w = this.bw;
    w.begin(SPINS);
    while (Atomics.load(c, word) < n) {
      this.poll();
      if (Atomics.load(c, G_ABORT) !== 0) return WAIT_ABORTED;
      const st = w.step();
      if (st === STEP_EXPIRED) {
        this.lastWaitWhat = `${what} (${Atomics.load(c, word)} of ${n} cores arrived)`;
        return WAIT_TIMEOUT;
      }
      if (st === STEP_SLEEP) this.sleepSlice(word, n);
    }
    this.poll();
    return WAIT_OK;
  }

  /** Sets the run's abort flag and wakes every core, after a failure on this core. */
  abortRun(): void {
    Atomics.store(this.ctl, G_ABORT, 1);
    for (let i = 0; i < this.layout.config.cores; i++) this.wake(i);
  }

  // ---- page-table entry updates ---------------------------------------------------------

  /**
   * Writes the paging-structure entry whose low half is at word `word` (as an OS does). A change
   * confined to the low half is one atomic exchange. A change of the high half of a present
   * entry is break-before-make: clear P, IPI_SYNC every core in `walkers` and wait for their acks
   * (none of them is inside a walk afterwards), store hi, then lo. Returns the old low half, or
   * a negative WAIT_* value (-1 timeout, -2 aborted) when a walker did not answer.
   * The caller invalidates TLBs (its shootdown); this only keeps walks untorn.
   */
  updateEntry(word: number, lo: number, hi: number, walkers: readonly number[]): number {
    const mem = this.mem;
    this.ctr[CTR.pteUpdates]++;
    const oldLo = Atomics.load(mem, word);
    if (mem[word + 1] === hi) return Atomics.exchange(mem, word, lo);
    if (this.tornPteUpdate) {
      // Injected fault: an in-place two-store update, with no break and no quiesce.
      mem[word + 1] = hi;
      return Atomics.exchange(mem, word, lo);
    }
    if ((oldLo & PTE_P) !== 0) {
      Atomics.store(mem, word, oldLo & ~PTE_P);
      const r = this.quiesce(walkers);
      if (r !== WAIT_OK) return -r;
    }
    Atomics.store(mem, word + 1, hi);
    Atomics.store(mem, word, lo);
    return oldLo;
  }

  /** Sends IPI_SYNC to every listed core but this one and waits for all acks. */
  quiesce(cores: readonly number[]): number {
    for (let i = 0; i < cores.length; i++) {
      if (cores[i] === this.id) continue;
      const s = this.sendIpi(cores[i], IPI_SYNC);
      if (s === IPI_TARGET_OFFLINE) continue;
      if (s !== IPI_OK) return s;
    }
    return this.waitAcks();
  }

  // ---- counters -------------------------------------------------------------------------

  /** Adds local counters into the control block (64-bit as two words) and zeroes them. */
  publishCounters(): void {
    const k = this.ctr;
    k[CTR.tlbHits] = k[CTR.loads] + k[CTR.stores] + k[CTR.fetches] + k[CTR.translations] - k[CTR.tlbMisses];
    const c = this.ctl;
    const b = this.base + C_COUNTERS;
    for (let i = 0; i < this.ctr.length; i++) {
      const add = this.ctr[i];
      if (add === 0) continue;
      const v = (c[b + 2 * i] >>> 0) + (c[b + 2 * i + 1] >>> 0) * 2 ** 32 + add;
      c[b + 2 * i] = v % 2 ** 32 | 0;
      c[b + 2 * i + 1] = Math.floor(v / 2 ** 32) | 0;
      this.ctr[i] = 0;
    }
  }
}

/** Reads core c's published counters from the control block. Any thread. */
export function readCounters(layout: Layout, ctl: Int32Array, c: number): Record<string, number> {
  const b = layout.coreBase(c) + C_COUNTERS;
  const out: Record<string, number> = {};
  COUNTER_NAMES.forEach((n, i) => {
    out[n] = (ctl[b + 2 * i] >>> 0) + (ctl[b + 2 * i + 1] >>> 0) * 2 ** 32;
  });
  return out;
}

export { ACC_READ, ACC_WRITE, ACC_FETCH };
