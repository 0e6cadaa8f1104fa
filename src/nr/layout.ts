// Shared-memory layout of node replication: a pool of NR instances, each a log ring with its
// header words, per-replica words and per-thread flat-combining slots. NR is generic (it knows
// nothing of page tables), so it owns the placement of its own region; the machine reserves the
// region and hands NR its Int32Array. Every contended word sits alone on a 64-byte line; each
// says who writes and who reads it.

export const NR_LINE = 16;

/** Log entry: [seq, origin (replica << 16 | thread), opcode, a0 .. a12]. 16 words = 64 bytes. */
export const ENTRY_WORDS = 16;
export const ENTRY_ARGS = ENTRY_WORDS - 3;
export const E_SEQ = 0;
export const E_ORIGIN = 1;
export const E_OP = 2;
export const E_ARGS = 3;

/** Flat-combining slot of one thread: [state, opcode, a0..a12, response r0..r7]. */
export const SLOT_STATE = 0;
export const SLOT_OP = 1;
export const SLOT_ARGS = 2;
export const SLOT_RESP = SLOT_ARGS + ENTRY_ARGS;
export const RESP_WORDS = 8;
export const SLOT_WORDS = 2 * NR_LINE;
export const SLOT_EMPTY = 0;
export const SLOT_PENDING = 1;
export const SLOT_DONE = 2;

// Instance header, word offsets from the instance base.
/** Oldest live entry (logical). Written: GC (CAS). Read: appenders. */
export const H_HEAD = 0;
/** Next free entry (logical). Written: appenders (CAS, one per batch). Read: everyone. */
export const H_TAIL = NR_LINE;
/** Largest index some replica has fully applied. Written: combiners (CAS max). Read: readers. */
export const H_CTAIL = 2 * NR_LINE;
const HEADER_WORDS = 4 * NR_LINE;

// Per-replica lines, after the header: replica r's block starts at HEADER_WORDS + r * REPLICA_WORDS.
/** How far replica r has applied (logical). Written: r's combiner. Read: GC, readers, lagging checks. */
export const REP_LTAIL = 0;
/** Combiner lock of replica r: 0 free, else 1 + the thread holding it. Written: combiners (CAS). */
export const REP_COMBINER = NR_LINE;
/** Writer flag of replica r's reader/writer lock (writer preference). Written: r's combiner. */
export const REP_WRITER = 2 * NR_LINE;

export interface NrConfig {
  /** Entries in each log (a power of two). */
  logEntries: number;
  /** Replicas per instance (one per NUMA node). */
  replicas: number;
  /** Threads (simulated cores) that may use an instance. */
  threads: number;
  /** Instances in the pool (one per address space in the kernel). */
  instances: number;
  /** Largest batch a combiner appends at once (the log's GC slack is threads x this). */
  maxBatch: number;
}

/** Placement of a pool of NR instances inside one Int32Array. Pure data. */
export class NrLayout {
  readonly replicaWords: number;
  readonly readersBase: number;
  readonly slotsBase: number;
  readonly entriesBase: number;
  readonly instanceWords: number;
  readonly totalWords: number;
  readonly mask: number;

  constructor(readonly config: NrConfig) {
    const c = config;
    if (c.logEntries < 2 || (c.logEntries & (c.logEntries - 1)) !== 0) throw new Error(`NrLayout: logEntries ${c.logEntries} is not a power of two >= 2`);
    // Replica block: ltail, combiner, writer flag lines, then one reader flag line per thread.
    this.replicaWords = 3 * NR_LINE + c.threads * NR_LINE;
    this.readersBase = 3 * NR_LINE;
    this.slotsBase = HEADER_WORDS + c.replicas * this.replicaWords;
    this.entriesBase = this.slotsBase + c.threads * SLOT_WORDS;
    this.instanceWords = this.entriesBase + c.logEntries * ENTRY_WORDS;
    this.totalWords = c.instances * this.instanceWords;
    this.mask = c.logEntries - 1;
  }

  instanceBase(i: number): number {
    return i * this.instanceWords;
  }

  /** Word offset of replica r's block within an instance. */
  replica(r: number): number {
    return HEADER_WORDS + r * this.replicaWords;
  }

  /** Word offset of thread t's reader flag for replica r, within an instance. */
  reader(r: number, t: number): number {
    return this.replica(r) + this.readersBase + t * NR_LINE;
  }

  /** Word offset of thread t's combining slot, within an instance. */
  slot(t: number): number {
    return this.slotsBase + t * SLOT_WORDS;
  }

  /** Word offset of the entry for logical index i, within an instance. */
  entry(i: number): number {
    return this.entriesBase + (i & this.mask) * ENTRY_WORDS;
  }
}
