// The one device of the machine (MH's hwdev): register pages at the physical frames just above
// RAM, reached by loads and stores through the MMU (an I/O mapping's leaf carries PCD and PWT),
// never RAM; a table of memory exported to it for DMA; and a DMA engine that takes requests from
// a ring and reads or writes the exported frames concurrently with the cores (machine/dma.ts
// runs it on its own thread). Everything is in the control buffer's device block (layout.ts).
//
// Registers: 8-byte, at byte offset 8 * i of the first register page.
//   REG_ID        read: DEVICE_ID
//   REG_ACCESSES  read: every access the device has taken (reads and writes of any register page)
//   REG_DMA       write: starts a DMA: low half = export slot | command << 16, high half = the value
//                 a write DMA fills the frames with; a bad slot or command, or a full ring, counts
//                 in REG_DMA_ERRORS instead
//   REG_DMA_DONE  read: DMA requests finished;  REG_DMA_POSTED: requests posted
//   REG_DMA_ERRORS read: requests refused or failed (slot not exported at transfer time)
//   REG_DMA_SUM   read: the sum of the words the last read DMA read
//   REG_SCRATCH   read/write: a plain register
// Any other offset of the register pages reads as all ones and ignores writes (no register
// decodes it), as an unclaimed bus cycle.

import {
  DEV_BP_ARMED, DEV_BP_PARKED, DEV_BP_RESUME, DEV_DMA_DONE, DEV_DMA_HEAD, DEV_DMA_TAIL, DEV_EXPORTS, DEV_REG_COUNT, DEV_REGS, DEV_RING,
  DEV_VIOLATION_PFN, DEV_VIOLATION_SPACE, DEV_VIOLATIONS, DMA_REQ_WORDS, DMA_RING_SLOTS, DQ_CMD, DQ_SEQ, DQ_SLOT, DQ_VALUE,
  EX_PAGES, EX_PFN, EX_SPACE, EX_STATE, EX_VA, EXPORT_SLOTS, EXPORT_WORDS, type Layout,
} from './layout.js';
import { FRAME_WORDS } from './pte.js';
import { BoundedWait, STEP_EXPIRED, STEP_SLEEP, sleepOn } from './wait.js';

export const REG_ID = 0;
export const REG_ACCESSES = 1;
export const REG_DMA = 2;
export const REG_DMA_DONE = 3;
export const REG_DMA_ERRORS = 4;
export const REG_DMA_SUM = 5;
export const REG_SCRATCH = 6;
export const REG_DMA_POSTED = 7;
/** What REG_ID reads: "MHDV". */
export const DEVICE_ID = 0x4d484456;

/** DMA commands: the device writes the value into every word of the exported frames, or sums them. */
export const DMA_WRITE = 1;
export const DMA_READ = 2;

/** Export slot states. A busy slot is being transferred: it cannot be released until the transfer ends. */
export const EXPORT_FREE = 0;
export const EXPORT_READY = 1;
export const EXPORT_BUSY = 2;

/** A request the engine took: what it did, for its caller. */
export interface DmaDone {
  slot: number;
  cmd: number;
  ok: boolean;
}

export class Device {
  readonly base: number;
  /** First and one-past-last physical word of the register pages. */
  readonly firstWord: number;
  readonly endWord: number;
  readonly pages: number;
  /** The result of the last read(). */
  valLo = 0;
  valHi = 0;
  private readonly bw: BoundedWait;

  constructor(readonly layout: Layout, readonly ctl: Int32Array, readonly mem: Int32Array) {
    this.base = layout.devBase;
    this.pages = layout.devicePages;
    this.firstWord = layout.deviceFrame * FRAME_WORDS;
    this.endWord = this.firstWord + this.pages * FRAME_WORDS;
    this.bw = new BoundedWait(layout.config.waitLimitMs, 1);
  }

  /** Whether physical word `word` is one of the device's. */
  contains(word: number): boolean {
    return word >= this.firstWord && word < this.endWord;
  }

  private reg(i: number): number {
    return this.base + DEV_REGS + 2 * i;
  }

  /** An 8-byte read at physical word `word` of the register pages; the value lands in valLo/valHi. */
  read(word: number): void {
    const ctl = this.ctl;
    Atomics.add(ctl, this.reg(REG_ACCESSES), 1);
    const off = word - this.firstWord;
    const i = off >>> 1;
    if ((off & 1) !== 0 || i >= DEV_REG_COUNT) {
      this.valLo = -1;
      this.valHi = -1;
      return;
    }
    this.valHi = 0;
    switch (i) {
      case REG_ID: this.valLo = DEVICE_ID; return;
      case REG_DMA_DONE: this.valLo = Atomics.load(ctl, this.base + DEV_DMA_DONE); return;
      case REG_DMA_POSTED: this.valLo = Atomics.load(ctl, this.base + DEV_DMA_TAIL); return;
      default:
        this.valLo = Atomics.load(ctl, this.reg(i));
        this.valHi = Atomics.load(ctl, this.reg(i) + 1);
    }
  }

  /** An 8-byte write of hi:lo at physical word `word` of the register pages. */
  write(word: number, hi: number, lo: number): void {
    const ctl = this.ctl;
    Atomics.add(ctl, this.reg(REG_ACCESSES), 1);
    const off = word - this.firstWord;
    const i = off >>> 1;
    if ((off & 1) !== 0 || i >= DEV_REG_COUNT) return;
    if (i === REG_SCRATCH) {
      Atomics.store(ctl, this.reg(i), lo);
      Atomics.store(ctl, this.reg(i) + 1, hi);
    } else if (i === REG_DMA) {
      if (!this.post(lo & 0xffff, lo >>> 16, hi)) Atomics.add(ctl, this.reg(REG_DMA_ERRORS), 1);
    }
  }

  /** Reads register i without counting an access (the controller, tests). */
  peek(i: number): number {
    if (i === REG_DMA_DONE) return Atomics.load(this.ctl, this.base + DEV_DMA_DONE);
    if (i === REG_DMA_POSTED) return Atomics.load(this.ctl, this.base + DEV_DMA_TAIL);
    if (i === REG_ID) return DEVICE_ID;
    return Atomics.load(this.ctl, this.reg(i));
  }

  // ---- the export table ------------------------------------------------------------------

  private slotBase(slot: number): number {
    return this.base + DEV_EXPORTS + slot * EXPORT_WORDS;
  }

  /** Records an export of `pages` frames from pfn (space s, at vhi:vlo). Returns its slot, or -1 when the table is full. */
  claim(s: number, pfn: number, pages: number, vhi: number, vlo: number): number {
    const ctl = this.ctl;
    for (let slot = 0; slot < EXPORT_SLOTS; slot++) {
      const b = this.slotBase(slot);
      if (Atomics.compareExchange(ctl, b + EX_STATE, EXPORT_FREE, -1) !== EXPORT_FREE) continue;
      ctl[b + EX_SPACE] = s;
      ctl[b + EX_PFN] = pfn;
      ctl[b + EX_PAGES] = pages;
      ctl[b + EX_VA] = vhi;
      ctl[b + EX_VA + 1] = vlo;
      Atomics.store(ctl, b + EX_STATE, EXPORT_READY);
      return slot;
    }
    return -1;
  }

  /** The export in `slot` (state, space, pfn, pages, va halves), or null when the slot is out of range. */
  exportAt(slot: number): { state: number; space: number; pfn: number; pages: number; vhi: number; vlo: number } | null {
    if (!Number.isInteger(slot) || slot < 0 || slot >= EXPORT_SLOTS) return null;
    const b = this.slotBase(slot);
    const c = this.ctl;
    return { state: Atomics.load(c, b + EX_STATE), space: c[b + EX_SPACE], pfn: c[b + EX_PFN], pages: c[b + EX_PAGES], vhi: c[b + EX_VA], vlo: c[b + EX_VA + 1] };
  }

  /** Slots space s has exported (at vhi:vlo only, when given). */
  slotsOf(s: number, vhi?: number, vlo?: number): number[] {
    const out: number[] = [];
    for (let slot = 0; slot < EXPORT_SLOTS; slot++) {
      const b = this.slotBase(slot);
      const st = Atomics.load(this.ctl, b + EX_STATE);
      if ((st !== EXPORT_READY && st !== EXPORT_BUSY) || this.ctl[b + EX_SPACE] !== s) continue;
      if (vhi !== undefined && (this.ctl[b + EX_VA] !== vhi || this.ctl[b + EX_VA + 1] !== vlo)) continue;
      out.push(slot);
    }
    return out;
  }

  /**
   * Ends space s's export in `slot`, waiting (bounded) for a transfer in progress on it to end:
   * a frame is never handed back while the device writes it. Returns false when the slot is not
   * an export of s. Throws naming the slot when the transfer does not end within the bound.
   */
  release(slot: number, s: number): boolean {
    if (!Number.isInteger(slot) || slot < 0 || slot >= EXPORT_SLOTS) return false;
    const b = this.slotBase(slot);
    const ctl = this.ctl;
    this.bw.begin();
    for (;;) {
      const st = Atomics.load(ctl, b + EX_STATE);
      if ((st !== EXPORT_READY && st !== EXPORT_BUSY) || ctl[b + EX_SPACE] !== s) return false;
      if (st === EXPORT_READY && Atomics.compareExchange(ctl, b + EX_STATE, EXPORT_READY, EXPORT_FREE) === EXPORT_READY) return true;
      const step = this.bw.step();
      if (step === STEP_EXPIRED) throw new Error(`device: export slot ${slot} stayed busy (a DMA transfer) for ${this.bw.limitMs} ms`);
      if (step === STEP_SLEEP) sleepOn(this.bw, ctl, b + EX_STATE, EXPORT_BUSY);
    }
  }

  // ---- DMA requests ------------------------------------------------------------------------

  /** Posts a DMA request (Vyukov's bounded ring, one CAS on the tail). False when the command is unknown or the ring full. */
  post(slot: number, cmd: number, value: number): boolean {
    if ((cmd !== DMA_WRITE && cmd !== DMA_READ) || slot >= EXPORT_SLOTS) return false;
    const ctl = this.ctl;
    const b = this.base;
    for (;;) {
      const tail = Atomics.load(ctl, b + DEV_DMA_TAIL);
      if (tail - Atomics.load(ctl, b + DEV_DMA_HEAD) >= DMA_RING_SLOTS) return false;
      if (Atomics.compareExchange(ctl, b + DEV_DMA_TAIL, tail, tail + 1) !== tail) continue;
      const q = b + DEV_RING + (tail % DMA_RING_SLOTS) * DMA_REQ_WORDS;
      ctl[q + DQ_SLOT] = slot;
      ctl[q + DQ_CMD] = cmd;
      ctl[q + DQ_VALUE] = value;
      Atomics.store(ctl, q + DQ_SEQ, tail + 1);
      Atomics.notify(ctl, b + DEV_DMA_TAIL);
      return true;
    }
  }

  /** Requests posted and not finished. */
  inFlight(): number {
    return Atomics.load(this.ctl, this.base + DEV_DMA_TAIL) - Atomics.load(this.ctl, this.base + DEV_DMA_DONE);
  }

  /**
   * The engine: takes one posted request and performs it. `owns(pfn, s)` is the frame-owner
   * oracle's question (does space s still own frame pfn?); a transfer touching a frame its
   * exporter no longer owns is recorded as a violation (and still happens: it is the bug).
   * Returns the request done, or null when none is posted. The engine's thread only.
   */
  serviceOne(owns: (pfn: number, s: number) => boolean): DmaDone | null {
    const ctl = this.ctl;
    const b = this.base;
    const head = ctl[b + DEV_DMA_HEAD];
    if (head === Atomics.load(ctl, b + DEV_DMA_TAIL)) return null;
    const q = b + DEV_RING + (head % DMA_RING_SLOTS) * DMA_REQ_WORDS;
    // The poster reserved the slot before it filled it: wait (bounded) for it to be published.
    this.bw.begin();
    while (Atomics.load(ctl, q + DQ_SEQ) !== head + 1) {
      if (this.bw.step() === STEP_EXPIRED) throw new Error(`device: DMA request ${head} was reserved but not published within ${this.bw.limitMs} ms`);
    }
    const slot = ctl[q + DQ_SLOT];
    const cmd = ctl[q + DQ_CMD];
    const value = ctl[q + DQ_VALUE];
    Atomics.store(ctl, b + DEV_DMA_HEAD, head + 1);
    const ex = this.slotBase(slot);
    let ok = Atomics.compareExchange(ctl, ex + EX_STATE, EXPORT_READY, EXPORT_BUSY) === EXPORT_READY;
    if (ok) {
      const s = ctl[ex + EX_SPACE];
      const pfn = ctl[ex + EX_PFN];
      const pages = ctl[ex + EX_PAGES];
      let sum = 0;
      for (let p = 0; p < pages; p++) {
        if (!owns(pfn + p, s) && Atomics.add(ctl, b + DEV_VIOLATIONS, 1) === 0) {
          ctl[b + DEV_VIOLATION_PFN] = pfn + p;
          ctl[b + DEV_VIOLATION_SPACE] = s;
        }
        const w0 = (pfn + p) * FRAME_WORDS;
        if (cmd === DMA_WRITE) this.mem.fill(value, w0, w0 + FRAME_WORDS);
        else for (let w = w0; w < w0 + FRAME_WORDS; w++) sum = (sum + this.mem[w]) | 0;
        if (p === 0) this.breakpoint();
      }
      if (cmd === DMA_READ) Atomics.store(ctl, this.reg(REG_DMA_SUM), sum);
      Atomics.store(ctl, ex + EX_STATE, EXPORT_READY);
      Atomics.notify(ctl, ex + EX_STATE);
    } else {
      Atomics.add(ctl, this.reg(REG_DMA_ERRORS), 1);
      ok = false;
    }
    Atomics.add(ctl, b + DEV_DMA_DONE, 1);
    Atomics.notify(ctl, b + DEV_DMA_DONE);
    return { slot, cmd, ok };
  }

  /** The engine's breakpoint (after a transfer's first page): parks while armed until resumed. */
  private breakpoint(): void {
    const ctl = this.ctl;
    const b = this.base;
    if (Atomics.load(ctl, b + DEV_BP_ARMED) === 0) return;
    Atomics.store(ctl, b + DEV_BP_ARMED, 0);
    const resume = Atomics.load(ctl, b + DEV_BP_RESUME);
    Atomics.store(ctl, b + DEV_BP_PARKED, 1);
    Atomics.notify(ctl, b + DEV_BP_PARKED);
    this.bw.begin(0);
    while (Atomics.load(ctl, b + DEV_BP_RESUME) === resume) {
      if (this.bw.step() === STEP_EXPIRED) break; // never resumed: go on rather than hang the engine
      Atomics.wait(ctl, b + DEV_BP_RESUME, resume, 5);
    }
    Atomics.store(ctl, b + DEV_BP_PARKED, 0);
  }

  /** Arms the engine's breakpoint: the next transfer parks after its first page. */
  armBreakpoint(): void {
    Atomics.store(this.ctl, this.base + DEV_BP_ARMED, 1);
  }

  /** Whether the engine is parked at its breakpoint. */
  parked(): boolean {
    return Atomics.load(this.ctl, this.base + DEV_BP_PARKED) === 1;
  }

  /** Lets a parked engine go on. */
  resume(): void {
    Atomics.add(this.ctl, this.base + DEV_BP_RESUME, 1);
    Atomics.notify(this.ctl, this.base + DEV_BP_RESUME);
  }

  /** The engine's frame-owner findings: how many, and the first. */
  violations(): { count: number; pfn: number; space: number } {
    const c = this.ctl;
    return { count: Atomics.load(c, this.base + DEV_VIOLATIONS), pfn: c[this.base + DEV_VIOLATION_PFN], space: c[this.base + DEV_VIOLATION_SPACE] };
  }
}
