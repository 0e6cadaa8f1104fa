// The one module that places machine state in shared memory. No numeric offset into the control
// buffer is written anywhere else. Two SharedArrayBuffers:
//
//   phys    the physical memory image: physical address 0 is byte 0 (Int32Array view `mem`).
//   control everything else, as Int32 words (view `ctl`):
//     global lines   run barrier and abort flag
//     frame state    per node: free count, allocation hint, allocation bitmap (1 = in use)
//     core blocks    per core: registers, run state, pending-interrupt word, doorbell, ack counter,
//                    IPI queue indices and slots, counters, TLB arrays
//
// Contended words sit alone on 64-byte lines (16 words). Each field says who writes and who reads.

import type { HwConfig } from './config.js';
import { FRAME_BYTES } from './pte.js';

export const LINE_WORDS = 16;

// ---- global lines (absolute word offsets) -------------------------------------------------
/** Cores of the current run that reached the end-of-run barrier. Written: running cores (add). Read: running cores. */
export const G_BARRIER = 0;
/** Number of cores taking part in the current run. Written: controller before a run. Read: cores. */
export const G_PARTICIPANTS = LINE_WORDS;
/** Non-zero once any core of the run panicked: every bounded wait gives up. Written: any core. Read: all. */
export const G_ABORT = 2 * LINE_WORDS;
/** Cores of the current run that have attached and are ready to take IPIs. Written: running cores (add). */
export const G_STARTED = 3 * LINE_WORDS;
const GLOBAL_WORDS = 4 * LINE_WORDS;

// ---- per-core block (offsets relative to coreBase(c)) --------------------------------------
// Line 0: architectural registers. Written: the controller while the core is offline, or the core itself.
// Read: the core (decoded into its Cpu on start and on every register write) and the controller.
export const R_CR0 = 0;
export const R_CR3_LO = 1;
export const R_CR3_HI = 2;
export const R_CR4 = 3;
export const R_EFER = 4;
export const R_PKRU = 5;
/** Current privilege level: 0 (supervisor) or 3 (user). */
export const R_CPL = 6;
/** EFLAGS.AC (lets supervisor data accesses to user pages pass SMAP). */
export const R_AC = 7;
/** NUMA node of this core. Written: boot. Read: everyone. */
export const R_NODE = 8;
/** CR2: the linear address of the last #PF (only a #PF loads it, SDM 6.15). Written: the core, or the controller while it is offline. */
export const R_CR2_LO = 9;
export const R_CR2_HI = 10;
/** Run state (CORE_OFF / CORE_RUNNING / CORE_HALTED). Written: the core (and the controller while off). Read: IPI senders. */
export const C_STATE = 1 * LINE_WORDS;
/** Unused since the head slot's sequence word is the interrupt (apic.ts); the line is kept free. */
export const C_PENDING = 2 * LINE_WORDS;
/** Doorbell: bumped by anyone waking the core; a halted or waiting core sleeps on it. */
export const C_DOORBELL = 3 * LINE_WORDS;
/**
 * Acks received for IPIs this core sent (wrap-safe counter), in the line of C_STATE: a receiver's
 * ack (add, then a look at the state for a sleeping sender) moves one line of the sender's.
 * Written: receivers (add). Read: this core.
 */
export const C_ACK = C_STATE + 1;
/** IPI queue tail (next slot to fill, logical). Written: senders (CAS). Read: senders, this core. */
export const C_QTAIL = 5 * LINE_WORDS;
/** IPI queue head (next slot to take, logical). Written: this core. Read: this core. */
export const C_QHEAD = 6 * LINE_WORDS;
/** Counters, see COUNTER_NAMES, two words each (low, high 32 bits). Written: this core (published
 * at the end of a run and every few thousand operations). Read: controller. */
export const C_COUNTERS = 7 * LINE_WORDS;
const COUNTER_WORDS = 4 * LINE_WORDS;
/** Breakpoints armed on this core (bit per breakpoint id). Written: controller. Read: the core at each breakpoint site. */
export const C_BP_ARMED = 11 * LINE_WORDS;
/** 1 + the breakpoint the core is parked at, 0 when running. Written: the core. Read: controller (Atomics.waitAsync). */
export const C_BP_PARKED = 12 * LINE_WORDS;
/** Resume counter: the controller bumps it to let a parked core go on. */
export const C_BP_RESUME = 13 * LINE_WORDS;
const CORE_FIXED_WORDS = 14 * LINE_WORDS;

export const CORE_OFF = 0;
export const CORE_RUNNING = 1;
export const CORE_HALTED = 2;

/** IPI queue slot: [seq, type, sender, a0 .. a4]. seq follows Vyukov's bounded queue. */
export const Q_SLOT_WORDS = 8;
export const Q_SEQ = 0;
export const Q_TYPE = 1;
export const Q_SENDER = 2;
export const Q_ARGS = 3;

// ---- device block (offsets relative to devBase; see device.ts) ------------------------------
// One device above RAM: its register file, the table of memory exported to it for DMA, the ring
// of DMA requests its engine takes, and the engine's breakpoint.
/** Registers, two words each (low, high): DEV_REG_COUNT of them. Written/read: cores (MMIO), the engine. */
export const DEV_REGS = 0;
export const DEV_REG_COUNT = 8;
/** DMA requests posted (logical ring tail). Written: cores (CAS). Read: the engine. Own line. */
export const DEV_DMA_TAIL = LINE_WORDS;
/** DMA requests the engine has taken, and finished. Written: the engine. Read: cores, controller. */
export const DEV_DMA_HEAD = 2 * LINE_WORDS;
export const DEV_DMA_DONE = 2 * LINE_WORDS + 1;
/** Engine state: 0 not running, 1 running, 2 asked to stop. Written: engine and controller. */
export const DEV_ENGINE = 3 * LINE_WORDS;
/** Engine breakpoint: armed (1), parked mid-transfer (1), resume counter. Written: controller / engine. */
export const DEV_BP_ARMED = 4 * LINE_WORDS;
export const DEV_BP_PARKED = 4 * LINE_WORDS + 1;
export const DEV_BP_RESUME = 4 * LINE_WORDS + 2;
/** The frame-owner oracle's findings of the engine: count, then the first (frame, exporting space). */
export const DEV_VIOLATIONS = 5 * LINE_WORDS;
export const DEV_VIOLATION_PFN = 5 * LINE_WORDS + 1;
export const DEV_VIOLATION_SPACE = 5 * LINE_WORDS + 2;
/** The DMA ring: DMA_RING_SLOTS requests of DMA_REQ_WORDS: [seq, export slot, command, value]. */
export const DEV_RING = 6 * LINE_WORDS;
export const DMA_RING_SLOTS = 64;
export const DMA_REQ_WORDS = 4;
export const DQ_SEQ = 0;
export const DQ_SLOT = 1;
export const DQ_CMD = 2;
export const DQ_VALUE = 3;
/** The export table: EXPORT_SLOTS entries of EXPORT_WORDS: [state, space, first frame, pages, va hi, va lo]. */
export const DEV_EXPORTS = DEV_RING + DMA_RING_SLOTS * DMA_REQ_WORDS;
export const EXPORT_SLOTS = 64;
export const EXPORT_WORDS = 8;
export const EX_STATE = 0;
export const EX_SPACE = 1;
export const EX_PFN = 2;
export const EX_PAGES = 3;
export const EX_VA = 4;
const DEV_WORDS = DEV_EXPORTS + EXPORT_SLOTS * EXPORT_WORDS;

/** TLB entry: [tagLo, tagHi, match, flags, pfn, spare x3]. See tlb.ts. */
export const TLB_ENTRY_WORDS = 8;

export const COUNTER_NAMES = [
  'loads', 'stores', 'fetches', 'tlbHits', 'tlbMisses', 'walks', 'pageFaults', 'gpFaults',
  'invlpg', 'invpcid0', 'invpcid1', 'invpcid2', 'invpcid3', 'cr3Flushes', 'cr3NoFlush', 'fullFlushes',
  'ipisSent', 'ipisReceived', 'halts', 'adUpdates', 'pteUpdates', 'translations',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
if (COUNTER_NAMES.length * 2 > COUNTER_WORDS) throw new Error(`layout: ${COUNTER_NAMES.length} counters need ${COUNTER_NAMES.length * 2} words, the core block has ${COUNTER_WORDS}`);
export const CTR: Record<CounterName, number> = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])) as Record<CounterName, number>;

/** One TLB array (one page size) inside a core block: entries, then one victim pointer per set. */
export interface TlbArrayLayout {
  /** Word offset of entry 0, relative to the core block. */
  entries: number;
  /** Word offset of the victim pointers (one per set), relative to the core block. */
  victims: number;
  sets: number;
  ways: number;
  /** log2 of the page size: 12, 21 or 30. */
  shift: number;
}

function roundLine(words: number): number {
  return Math.ceil(words / LINE_WORDS) * LINE_WORDS;
}

/** Word offsets derived from a configuration. Pure data: safe to send to workers. */
export class Layout {
  readonly totalFrames: number;
  /** First frame of each node, and one past the last node's end. */
  readonly nodeFrameStart: number[];
  /** Per node: word offset of the free-frame count (written: allocating/freeing cores with Atomics). */
  readonly nodeFreeCount: number[];
  /** Per node: word offset of the bitmap scan hint (written loosely by allocators). */
  readonly nodeHint: number[];
  /** Per node: word offset of the allocation bitmap (bit = frame in use). */
  readonly nodeBitmap: number[];
  readonly coreBlockWords: number;
  readonly firstCoreWord: number;
  readonly queueSlots: number;
  readonly queueBase: number;
  readonly tlb4k: TlbArrayLayout;
  readonly tlb2m: TlbArrayLayout;
  readonly tlb1g: TlbArrayLayout;
  readonly controlWords: number;
  /** First frame of the device (one past RAM), its pages (0: no device), and its block's word offset. */
  readonly deviceFrame: number;
  readonly devicePages: number;
  readonly devBase: number;

  constructor(readonly config: HwConfig) {
    this.totalFrames = config.memoryBytes / FRAME_BYTES;
    const per = Math.floor(this.totalFrames / config.nodes);
    this.nodeFrameStart = [];
    for (let n = 0; n < config.nodes; n++) this.nodeFrameStart.push(n * per);
    this.nodeFrameStart.push(this.totalFrames);

    let w = GLOBAL_WORDS;
    this.nodeFreeCount = [];
    this.nodeHint = [];
    this.nodeBitmap = [];
    for (let n = 0; n < config.nodes; n++) {
      const frames = this.nodeFrameStart[n + 1] - this.nodeFrameStart[n];
      this.nodeFreeCount.push(w);
      this.nodeHint.push(w + LINE_WORDS);
      this.nodeBitmap.push(w + 2 * LINE_WORDS);
      w += 2 * LINE_WORDS + roundLine(Math.ceil(frames / 32));
    }

    this.queueSlots = config.ipiQueueSlots;
    this.queueBase = CORE_FIXED_WORDS;
    let c = roundLine(this.queueBase + this.queueSlots * Q_SLOT_WORDS);
    const arr = (entries: number, ways: number, shift: number): TlbArrayLayout => {
      const sets = entries / ways;
      const a = { entries: c, victims: c + entries * TLB_ENTRY_WORDS, sets, ways, shift };
      c = roundLine(a.victims + sets);
      return a;
    };
    const t = config.tlb;
    this.tlb4k = arr(t.entries4k, t.ways4k, 12);
    this.tlb2m = arr(t.entries2m, t.ways2m, 21);
    this.tlb1g = arr(t.entries1g, t.ways1g, 30);
    this.coreBlockWords = c;
    this.firstCoreWord = w;
    this.devBase = roundLine(w + config.cores * c);
    this.deviceFrame = this.totalFrames;
    this.devicePages = config.devicePages;
    this.controlWords = this.devBase + (config.devicePages > 0 ? DEV_WORDS : 0);
  }

  /** Word offset of core c's block in the control buffer. */
  coreBase(c: number): number {
    return this.firstCoreWord + c * this.coreBlockWords;
  }

  /** NUMA node owning frame pfn. */
  nodeOfFrame(pfn: number): number {
    for (let n = 0; n < this.config.nodes; n++) if (pfn < this.nodeFrameStart[n + 1]) return n;
    return -1;
  }

  /** NUMA node of core c: cores are spread round-robin-free, in contiguous groups. */
  nodeOfCore(c: number): number {
    return Math.floor((c * this.config.nodes) / this.config.cores);
  }
}
