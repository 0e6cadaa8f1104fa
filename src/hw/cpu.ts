// One simulated core as executed by some thread: its register file (decoded, with the TLB effects
// of loading CR3 and CR4), its MMU (mmu.ts: translate, the walk of a miss, loads, stores,
// fetches, INVLPG/INVPCID), its interrupt controller (apic.ts: IPIs, acks, HLT), its debug unit
// (debug.ts: breakpoints) and its counters. Run barriers (machine/runctl.ts) and break-before-make
// entry writes (machine/ptwrite.ts) are the machine's, built on these.
//
// A core is data; a Cpu is an executor's handle on it. Exactly one thread may drive a core at a
// time (the run state word enforces it: see attach/detach).

import {
  C_COUNTERS, C_STATE, CORE_OFF, CORE_RUNNING, COUNTER_NAMES, CTR, Layout, R_AC, R_CPL, R_CR0,
  R_CR2_HI, R_CR2_LO, R_CR3_HI, R_CR3_LO, R_CR4, R_EFER, R_NODE, R_PKRU,
} from './layout.js';
import { CR0_PG, CR3_NOFLUSH_HI, CR4_PAE, CR4_PCIDE, CR4_PGE, CR4_PSE, CR4_LA57, CR4_SMEP, EFER_LMA, EFER_LME, Paging, Regs, readPdptes } from './regs.js';
import { TraceRing } from './trace.js';
import { Mmu } from './mmu.js';
import { Apic } from './apic.js';
import { DebugUnit } from './debug.js';
import { Device } from './device.js';

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
  /** Word index of this core's part of the control block. */
  readonly base: number;
  readonly regs: Regs;
  /** Local counters; publishCounters() adds them into the control block. */
  readonly ctr = new Float64Array(COUNTER_NAMES.length);
  readonly waitLimitMs: number;
  /** This core's trace ring, or null when the machine does not trace. */
  tracer: TraceRing | null;
  /** Set by IPI_STOP: the executor ends the program at its next check. */
  stopRequested = false;
  /** What the last bounded wait of this core that gave up was waiting for (the error message). */
  lastWaitWhat = '';
  readonly mmu: Mmu;
  readonly apic: Apic;
  readonly debug: DebugUnit;

  constructor(views: MachineViews, id: number) {
    const l = views.layout;
    this.layout = l;
    this.ctl = views.ctl;
    this.mem = views.mem;
    this.id = id;
    this.base = l.coreBase(id);
    this.node = this.ctl[this.base + R_NODE];
    this.regs = new Regs(l.config.maxPhysAddr);
    this.regs.atomicAD = !l.config.inject.includes('non-atomic-ad');
    this.waitLimitMs = l.config.waitLimitMs;
    this.tracer = views.trace ? new TraceRing(views.trace, id) : null;
    this.mmu = new Mmu(l, this.ctl, this.mem, this.base, this.regs, this);
    if (l.devicePages > 0) this.mmu.bus = new Device(l, this.ctl, this.mem);
    this.apic = new Apic(l, this.ctl, this.base, this);
    this.debug = new DebugUnit(this.ctl, this.base, this);
    this.loadRegisters();
  }

  // ---- ownership ------------------------------------------------------------------------

  /** Takes the core for this thread (OFF -> RUNNING). Returns false if another thread runs it. */
  attach(): boolean {
    if (Atomics.compareExchange(this.ctl, this.base + C_STATE, CORE_OFF, CORE_RUNNING) !== CORE_OFF) return false;
    this.loadRegisters();
    this.apic.resetAcks();
    this.stopRequested = false;
    return true;
  }

  /** Publishes counters and releases the core (-> OFF). */
  detach(): void {
    this.publishCounters();
    Atomics.store(this.ctl, this.base + C_STATE, CORE_OFF);
  }

  /** Records a trace event when the machine traces (one load and a compare otherwise). */
  trace(phase: number, kind: number, arg = 0): void {
    if (this.tracer !== null) this.tracer.emit(phase, kind, arg);
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
    this.mmu.cr2lo = c[b + R_CR2_LO];
    this.mmu.cr2hi = c[b + R_CR2_HI];
    this.decoded();
    // The PDPTE registers are not in the control block: a core attached in PAE paging loads them
    // as a MOV to CR3 would (Machine.setRegisters refuses PDPTEs such a load would #GP on).
    if (r.mode === Paging.PAE) readPdptes(this.mem, r.cr3lo, r.maxPhysAddr, r.pdpte);
  }

  /** PDPTEs read for a move that loads them, kept until the move commits. */
  private readonly pdptes = new Int32Array(8);

  /**
   * For a control-register move whose result is PAE paging and that loads the PDPTEs (SDM 4.4.1):
   * reads them from the table `cr3lo` names. Returns false (#GP) when a present one has a reserved
   * bit set; the caller commits them with commitPdptes() once nothing else can fault.
   */
  private loadPdptes(cr3lo: number): boolean {
    return readPdptes(this.mem, cr3lo, this.regs.maxPhysAddr, this.pdptes);
  }

  private commitPdptes(): void {
    this.regs.pdpte.set(this.pdptes);
  }

  /** Decodes the registers and refreshes what the MMU's hot path copies from them. */
  private decoded(): void {
    this.regs.decode();
    this.mmu.registersChanged();
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

  /**
   * MOV to CR3 (SDM 4.10.4.1): hi bit 31 is the no-flush bit when CR4.PCIDE = 1. A 1 in a reserved
   * bit (63:MAXPHYADDR, bit 63 included when PCIDE = 0) is #GP(0) and changes nothing (SDM Vol. 2
   * MOV CRn, as QEMU's helper_write_crN). Returns 0 or the fault.
   */
  movCr3(hi: number, lo: number): number {
    const r = this.regs;
    // Outside IA-32e mode CR3 has 32 bits; in PAE paging the load reads the four PDPTEs too.
    const rsvd = !r.ia32e ? -1 : ~((1 << (r.maxPhysAddr - 32)) - 1) & (r.pcide ? ~CR3_NOFLUSH_HI : -1);
    if ((hi & rsvd) !== 0) return this.mmu.generalProtection(hi, lo);
    if (r.mode === Paging.PAE && !this.loadPdptes(lo)) return this.mmu.generalProtection(hi, lo);
    const noFlush = r.pcide && (hi & CR3_NOFLUSH_HI) !== 0;
    r.cr3hi = hi & ~CR3_NOFLUSH_HI;
    r.cr3lo = lo;
    if (r.mode === Paging.PAE) this.commitPdptes();
    this.storeRegisters();
    if (noFlush) {
      this.ctr[CTR.cr3NoFlush]++;
      return 0;
    }
    this.ctr[CTR.cr3Flushes]++;
    this.mmu.invalidatePcid(r.pcid);
    return 0;
  }

  /**
   * MOV to CR4. #GP(0), changing nothing, for what the SDM forbids in IA-32e mode: clearing PAE,
   * changing LA57 with paging on, setting PCIDE while CR3[11:0] is not 0. TLB effects (SDM
   * 4.10.4.1): changing PGE, or clearing PCIDE (or changing LA57), drops everything, globals
   * included; changing PAE, or setting SMEP, drops the current PCID's entries. Returns 0 or the fault.
   */
  movCr4(v: number): number {
    const r = this.regs;
    const old = r.cr4;
    const changed = old ^ v;
    const ia32e = (r.efer & EFER_LMA) !== 0;
    if (ia32e && (v & CR4_PAE) === 0) return this.mmu.generalProtection(0, v);
    if ((changed & CR4_LA57) !== 0 && (r.cr0 & CR0_PG) !== 0) return this.mmu.generalProtection(0, v);
    if ((v & CR4_PCIDE) !== 0 && (old & CR4_PCIDE) === 0 && (r.cr3lo & 0xfff) !== 0) return this.mmu.generalProtection(0, v);
    // PCIDE exists in IA-32e mode only.
    if ((v & CR4_PCIDE) !== 0 && !ia32e) return this.mmu.generalProtection(0, v);
    // A move that leaves PAE paging on and changes PAE, PGE, PSE or SMEP loads the PDPTEs (SDM 4.4.1).
    const paeAfter = (r.cr0 & CR0_PG) !== 0 && (v & CR4_PAE) !== 0 && !ia32e;
    const loads = paeAfter && (changed & (CR4_PAE | CR4_PGE | CR4_PSE | CR4_SMEP)) !== 0;
    if (loads && !this.loadPdptes(r.cr3lo)) return this.mmu.generalProtection(0, v);
    r.cr4 = v;
    if (loads) this.commitPdptes();
    this.storeRegisters();
    if ((changed & (CR4_PGE | CR4_LA57)) !== 0 || ((old & CR4_PCIDE) !== 0 && (v & CR4_PCIDE) === 0)) this.mmu.flushAll();
    else if ((changed & (CR4_PAE | CR4_PSE)) !== 0 || ((v & CR4_SMEP) !== 0 && (old & CR4_SMEP) === 0)) this.mmu.invalidatePcid(r.pcid);
    return 0;
  }

  /**
   * MOV to CR0. No TLB effect for WP. Clearing PG is #GP(0) in 64-bit mode (nrvm's cores run
   * 64-bit code whenever EFER.LMA = 1); otherwise it drops every entry, globals included (SDM
   * 4.10.4.1). Returns 0 or the fault.
   */
  movCr0(v: number): number {
    const r = this.regs;
    const clearsPg = (r.cr0 & CR0_PG) !== 0 && (v & CR0_PG) === 0;
    const setsPg = (r.cr0 & CR0_PG) === 0 && (v & CR0_PG) !== 0;
    if (clearsPg && (r.efer & EFER_LMA) !== 0) return this.mmu.generalProtection(0, v);
    // Setting PG with EFER.LME enters IA-32e mode (LMA), which needs PAE; without LME it enters
    // 32-bit or PAE paging, and PAE paging loads the PDPTEs (SDM 4.1.2, 4.4.1).
    const lme = (r.efer & EFER_LME) !== 0;
    if (setsPg && lme && (r.cr4 & CR4_PAE) === 0) return this.mmu.generalProtection(0, v);
    const loads = setsPg && !lme && (r.cr4 & CR4_PAE) !== 0;
    if (loads && !this.loadPdptes(r.cr3lo)) return this.mmu.generalProtection(0, v);
    r.cr0 = v;
    if (setsPg && lme) r.efer |= EFER_LMA;
    if (loads) this.commitPdptes();
    this.storeRegisters();
    if (clearsPg) this.mmu.flushAll();
    return 0;
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

