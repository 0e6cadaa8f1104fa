// What one run of a core records beside its operations: the kernel operations' outcomes, the
// faults delivered, the stale-tlb oracle's finds, the isolation oracle's memory of what this core
// wrote, latency samples of MapFrame and Unmap, and the heap bytes the run allocated. The
// executor's hot loop and cold path write it; CoreResult carries it out.

import { GCProfiler, getHeapStatistics } from 'node:v8';
import type { Cpu } from '../hw/cpu.js';
import { faultError, faultVector } from '../hw/fault.js';
import { hex64, pageNumber, vaJoin } from '../hw/vaddr.js';
import { RESULT_NAMES } from '../kernel/ops.js';
import type { MhRun } from './mhops.js';
import type { ShareFind, ShareRun } from './shareops.js';

export const FAULT_LOG_LIMIT = 32;
export interface FaultRecord {
  /** Index of the operation in the program. */
  op: number;
  vector: number;
  error: number;
  /** The faulting linear address (or, for an instruction's #GP, its operand). */
  address: string;
  /** CR2 after the fault: the address for a #PF; a #GP leaves CR2 as it was (SDM 6.15). */
  cr2: string;
}

/** An access through a translation to a frame its address space no longer owns. */
export interface StaleAccess {
  op: number;
  va: string;
  pfn: number;
  space: number;
  owner: number;
}

/** Most latency samples kept per operation kind and core. */
const LATENCY_SAMPLES = 20_000;
/**
 * After the first LATENCY_FIRST samples of a kind (every operation timed, so that a short or slow
 * run still has some), one MapFrame (and one Unmap) in LATENCY_EVERY is timed: the clock reads
 * stay off most operations.
 */
export const LATENCY_FIRST = 64;
export const LATENCY_EVERY = 16;

/**
 * Latency samples of one run, in preallocated Float64Arrays (a sample stored is not a heap
 * number): `timed()` says whether this operation is one to time.
 */
export class Latencies {
  readonly map = new Float64Array(LATENCY_SAMPLES);
  readonly unmap = new Float64Array(LATENCY_SAMPLES);
  maps = 0;
  unmaps = 0;
  private mapTick = 0;
  private unmapTick = 0;

  timeMap(): boolean {
    return this.maps < LATENCY_SAMPLES && (this.maps < LATENCY_FIRST || ++this.mapTick % LATENCY_EVERY === 0);
  }

  timeUnmap(): boolean {
    return this.unmaps < LATENCY_SAMPLES && (this.unmaps < LATENCY_FIRST || ++this.unmapTick % LATENCY_EVERY === 0);
  }

  result(): { map: number[]; unmap: number[] } {
    return { map: Array.from(this.map.subarray(0, this.maps)), unmap: Array.from(this.unmap.subarray(0, this.unmaps)) };
  }
}


/** Per-run mutable state shared by the hot loop and the cold path. */
export class RunState {
  /**
   * The isolation oracle's memory: space -> page -> (address -> the value this core last wrote
   * there). A page's entry goes when this core maps or unmaps the page (its content changes).
   */
  readonly shadow = new Map<number, Map<number, Map<number, number>>>();

  /** Kernel operation outcomes, counted without building strings on the hot path: "op:code" -> count. */
  readonly outcomes = new Map<string, Map<number | string, number>>();

  tally(name: string, code: number | string): void {
    let m = this.outcomes.get(name);
    if (!m) this.outcomes.set(name, (m = new Map()));
    m.set(code, (m.get(code) ?? 0) + 1);
  }

  /** The outcomes as "op:Result" names. */
  outcomeNames(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, m] of this.outcomes) for (const [code, n] of m) out[`${name}:${typeof code === 'string' ? code : RESULT_NAMES[code]}`] = n;
    return out;
  }

  /** The isolation oracle forgets what this core wrote on the page at vhi:vlo in space s (its content changed). */
  forgetPage(s: number, vhi: number, vlo: number): void {
    const sh = this.shadow.get(s);
    if (sh !== undefined && sh.size > 0) sh.delete(pageNumber(vaJoin(vhi, vlo)));
  }

  /** The shadow of space s (created on first use). */
  shadowOf(s: number): Map<number, Map<number, number>> {
    let m = this.shadow.get(s);
    if (!m) this.shadow.set(s, (m = new Map()));
    return m;
  }
  seq = 0;
  checksum = 0;
  faults = 0;
  stop = false;
  stale = 0;
  readonly staleExamples: StaleAccess[] = [];
  readonly faultLog: FaultRecord[] = [];
  /** Frame-owner table and its base (checked mode), or null. */
  owner: Int32Array | null = null;
  ownerBase = 0;
  /**
   * The owner bits an access by a core running `space` may find: the space's, and those of the
   * spaces whose RPAL slots are shared into it (their frames are reachable there). Set with owner.
   */
  reachOf: (space: number) => number = (space) => 1 << space;
  /** Latency samples of MapFrame and Unmap, when the program asked for them. */
  lat: Latencies | null = null;
  /** The MH state oracle's record (kernel personality 'mh'), or null. */
  mh: MhRun | null = null;
  /** Threads per process the program runs (--threads), or 0: a switch picks a thread, a fork's child gets a copy of the forking one and as many more. */
  threads = 0;
  /** The sharing oracle (--share runs), or null. */
  share: ShareRun | null = null;
  constructor(readonly stopOnFault: boolean) {}

  /**
   * The stale-tlb oracle on the cold path (checked mode): an access by a core running `space`
   * reached physical word `word` (< 0: none, or not RAM); its frame must be the space's. Cold.
   */
  checkOwner(index: number, vhi: number, vlo: number, word: number, space: number): void {
    const owner = this.owner;
    if (owner === null || word < 0 || space < 0 || space >= 32) return;
    if ((owner[this.ownerBase + (word >>> 10)] & this.reachOf(space)) === 0) this.noteStale(index, vhi, vlo, word >>> 10, space);
  }

  /** Records an access to frame pfn while running `space` that the owner table denies. Cold. */
  noteStale(index: number, vhi: number, vlo: number, pfn: number, space: number): void {
    this.stale++;
    if (this.staleExamples.length < 8) {
      this.staleExamples.push({ op: index, va: hex64(vhi, vlo), pfn, space, owner: (this.owner as Int32Array)[this.ownerBase + pfn] });
    }
  }

  /** Records a fault of operation `index`; sets stop when the program stops at faults. Cold. */
  noteFault(cpu: Cpu, index: number, r: number): void {
    this.faults++;
    if (this.faultLog.length < FAULT_LOG_LIMIT) {
      this.faultLog.push({ op: index, vector: faultVector(r), error: faultError(r), address: hex64(cpu.mmu.faultHi, cpu.mmu.faultLo), cr2: hex64(cpu.mmu.cr2hi, cpu.mmu.cr2lo) });
    }
    if (this.stopOnFault) this.stop = true;
  }
}

/** Bytes allocated on this thread's heap between construction and stop(), garbage collections included. */
export class HeapMeter {
  private readonly profiler = new GCProfiler();
  private readonly used0: number;

  constructor() {
    this.profiler.start();
    this.used0 = getHeapStatistics().used_heap_size;
  }

  stop(): number {
    const used1 = getHeapStatistics().used_heap_size;
    const r = this.profiler.stop();
    let reclaimed = 0;
    for (const g of r?.statistics ?? []) reclaimed += g.beforeGC.heapStatistics.usedHeapSize - g.afterGC.heapStatistics.usedHeapSize;
    return Math.max(0, used1 - this.used0 + reclaimed);
  }
}

/** How the failure of a core that stopped because another core of its run failed ends (reports list the causes first). */
export const FOLLOWED_FAILURE = 'stopped because another core of the run failed';

/** What a core reports to the controller after a program. */
export interface CoreResult {
  core: number;
  /** False when the run failed on this core (a wait past its bound, an abort, a panic). */
  ok: boolean;
  error?: string;
  ops: number;
  faults: number;
  faultLog: FaultRecord[];
  /** Sum of every loaded and fetched 32-bit half, modulo 2^32: a cheap fingerprint of what was read. */
  checksum: number;
  /** Every loaded/fetched value as hex, when the program records. */
  values?: string[];
  pingsSentTo: number[];
  pingSumTo: number[];
  pingsRecvFrom: number[];
  pingSumFrom: number[];
  /** OP_XLATE outcomes: "pfn:flags" or "fault:vector:error" -> count. */
  xlates: Record<string, number>;
  /** OP_PTE_TOGGLE count per entry word. */
  toggles: Record<string, number>;
  /** Accesses through stale translations (checked mode), and the first of them. */
  staleAccesses: number;
  staleExamples: StaleAccess[];
  /** Reads of this core's own slots that returned another value than it last wrote there (copy-on-write isolation). */
  isolation: number;
  isolationExamples: string[];
  /** Kernel counters of this run on this core (maps, shootdowns, spurious faults...). */
  kernel: Record<string, number>;
  /** Kernel operation outcomes by name ("map:Ok", "unmap:NotMapped"...). */
  outcomes: Record<string, number>;
  /**
   * Bytes this worker allocated on its heap while the program ran (asked with heap: true): the
   * growth of the used heap plus what every garbage collection in between reclaimed (v8's
   * GCProfiler), so allocations that died young are counted too.
   */
  heapBytes?: number;
  /** --share runs: the sharing oracle's finds (the first few of each kind) and how many of each (shareops.ts). */
  shareFinds?: ShareFind[];
  shareCounts?: Record<string, number>;
  /** MH personality: the state oracle's record of this core's page changes (mhops.ts EVENT_WORDS per event). */
  mhEvents?: number[];
  /** Latencies in ns of MapFrame and Unmap (with its shootdown): one in LATENCY_EVERY of each, when the program asks (latency: true). */
  latencies?: { map: number[]; unmap: number[] };

  counters: Record<string, number>;
  elapsedMs: number;
}

/** The result of a core that ran nothing: it failed with `error` before or instead of its program. */
export function failedResult(core: number, error: string): CoreResult {
  return {
    core, ok: false, error, ops: 0, faults: 0, faultLog: [], checksum: 0,
    pingsSentTo: [], pingSumTo: [], pingsRecvFrom: [], pingSumFrom: [], xlates: {}, toggles: {}, staleAccesses: 0, staleExamples: [],
    isolation: 0, isolationExamples: [], kernel: {}, outcomes: {}, counters: {}, elapsedMs: 0,
  };
}

