// Node replication (Calciu et al., ASPLOS'17; the node-replication crate's log.rs, replica.rs and
// context.rs), over shared memory so that every replica and the log are visible to every thread.
//
// The algorithm. A data structure is replicated once per NUMA node. Every mutating operation goes
// through a shared log: a ring of fixed-size entries with logical indices that only grow (slot =
// index & mask). `tail` is the next free index, `head` the oldest live one, `ctail` the largest
// index some replica has fully applied, `ltail[r]` how far replica r has applied. A thread that
// wants to write puts its operation in its flat-combining slot and tries its replica's combiner
// lock; the winner gathers the pending operations of its node, reserves room for the whole batch
// with one compareExchange on `tail`, fills the entries and publishes each by storing its `seq`
// word (the logical index + 1: it tells a filled entry from a reserved one, and one lap from
// the next, which is what the crate's alive bit flipped per wrap does). Then it applies the log to
// its replica from `ltail[r]` to the tail it reserved up to, under the replica's writer lock,
// hands each of its node's threads its response, and advances `ltail[r]` and `ctail`. A read
// snapshots `ctail`, brings the local replica up to it, and runs under the reader lock. GC moves
// `head` to the smallest `ltail`. A writer that finds the log full applies the log to the lagging
// replicas itself (taking their combiner locks: the replicas live in shared memory) and calls
// the `onLagging` hook, with which the kernel pokes an idle core of that node.
//
// Every wait is bounded; a wait that runs out panics naming the instance, replica and thread it
// was waiting for. While waiting, a thread calls its `poll` hook (a core services interrupts).
//
// The files: log.ts (the ring and its header words: reserve, publish, head and ctail), replica.ts
// (each replica's ltail, combiner lock and reader/writer lock words), rwlock.ts (the lock), and
// this one — a thread's handle, its flat-combining slot, and the algorithm over the other three
// (combine, append, make room, apply, sync, read).

import {
  E_ARGS, E_OP, E_ORIGIN, ENTRY_ARGS, NR_LINE, NrLayout, RESP_WORDS, SLOT_ARGS, SLOT_DONE, SLOT_EMPTY, SLOT_OP, SLOT_PENDING,
  SLOT_RESP, SLOT_STATE,
} from './layout.js';
import { Log } from './log.js';
import { Replicas } from './replica.js';
import { readLock, readUnlock, writeLock, writeUnlock, type LockWaiter } from './rwlock.js';
import { BoundedWait, STEP_EXPIRED, STEP_SLEEP, sleepOn } from '../hw/wait.js';
import { PH_BEGIN, PH_END, TR_COMBINE, TR_SYNC } from '../hw/trace.js';

/** What a replicated structure supplies: how to apply one logged operation to one replica. */
export interface Replicated {
  /**
   * Applies the operation `op` with arguments words[argOff .. argOff + ENTRY_ARGS) to replica r,
   * writing up to RESP_WORDS response words into resp[respOff ..]. Deterministic: every replica
   * must reach the same state and the same response. Called by whichever thread holds r's
   * combiner lock.
   */
  apply(r: number, op: number, words: Int32Array, argOff: number, resp: Int32Array, respOff: number): void;
}

/** The calling thread as NR sees it. */
export interface NrThread {
  /** Index 0 .. threads-1 (the core number). */
  id: number;
  /** Its replica (its NUMA node). */
  replica: number;
  /** Called while waiting (a core services its interrupts here), except while combining. */
  poll(): void;
  /**
   * Combiner locks this thread holds right now (any instance). While it holds one it does not
   * poll: an interrupt handler that syncs a replica must never wait for a combiner that is its
   * own interrupted self.
   */
  combining: number;
  /** Breakpoint hook for race scripts (NR_BP_*); absent or a no-op when none is armed. */
  bp?: (id: number) => void;
  /** Trace hook: (PH_BEGIN / PH_END, TR_COMBINE or TR_SYNC): combining, and syncing a replica for a read. */
  trace?: (phase: number, what: number) => void;
}

/** Breakpoint ids NR offers: after a batch is published in the log, before a replica applies the log. */
export const NR_BP_AFTER_APPEND = 0;
export const NR_BP_BEFORE_APPLY = 1;

/** A broken invariant or a wait past its bound. */
export class NrPanic extends Error {}

/** Statistics of one thread's use of NR (local, not shared). */
export class NrStats {
  appends = 0;
  batches = 0;
  batchedOps = 0;
  combines = 0;
  readSyncs = 0;
  laggardAdvances = 0;
}

/** What a thread of NR waits for (the message names it if the wait expires). */
const W_WRITER = 0;
const W_READER = 1;
const W_COMBINED = 2;
const W_ROOM = 3;
const W_ENTRY = 4;
const W_CTAIL = 5;

/**
 * One thread's handle on one NR instance. Cheap; create one per (thread, instance). Holds the
 * structure's apply function and the thread-to-replica map.
 */
export class Nr implements LockWaiter {
  readonly w: Int32Array;
  /** Word index of the instance in w. */
  readonly base: number;
  readonly log: Log;
  readonly replicas: Replicas;
  readonly stats = new NrStats();
  private readonly scratch = new Int32Array(RESP_WORDS);
  /** The threads of one batch (a combiner's gathering, reused). */
  private readonly batch: Int32Array;
  private readonly bw: BoundedWait;
  /** The thread and replica of the wait in progress (for the lock's waitStep and its message). */
  private waiting: NrThread | null = null;
  private waitingReplica = 0;

  constructor(
    readonly layout: NrLayout,
    words: Int32Array,
    readonly instance: number,
    readonly ds: Replicated,
    /** Replica of each thread. */
    readonly replicaOf: ArrayLike<number>,
    readonly waitLimitMs: number,
    /** Called when replica q lags and the log is full: wake a core of q's node (optional). */
    readonly onLagging: (q: number) => void = () => {},
  ) {
    this.w = words;
    this.base = layout.instanceBase(instance);
    this.log = new Log(layout, words, instance);
    this.replicas = new Replicas(layout, words, instance);
    this.batch = new Int32Array(layout.config.maxBatch);
    this.bw = new BoundedWait(waitLimitMs, undefined, layout.config.threads);
    // A read's words, per thread (its replica is fixed): computed once, not on every read.
    const threads = layout.config.threads;
    this.readerOf = Int32Array.from({ length: threads }, (_, t) => this.replicas.readerWord(replicaOf[t] ?? 0, t));
    this.writerOf = Int32Array.from({ length: threads }, (_, t) => this.replicas.writerWord(replicaOf[t] ?? 0));
  }

  /** Per thread: the word of its reader flag on its own replica, and that replica's writer word. */
  private readonly readerOf: Int32Array;
  private readonly writerOf: Int32Array;

  // ---- words ------------------------------------------------------------------------------

  head(): number {
    return this.log.head();
  }
  tail(): number {
    return this.log.tail();
  }
  ctail(): number {
    return this.log.ctail();
  }
  ltail(r: number): number {
    return this.replicas.ltail(r);
  }

  /** Resets the instance to empty. Only while no thread uses it (allocation from the pool). */
  reset(): void {
    this.w.fill(0, this.base, this.base + this.layout.instanceWords);
  }

  // ---- bounded waiting ----------------------------------------------------------------------

  private startWait(): void {
    this.bw.begin();
  }

  /**
   * One step of a bounded wait for `what` (a W_* code; x and y are its numbers): poll (unless
   * combining), spin, then sleep a slice; panics past the bound, naming what it waited for. The
   * message is built only then: a wait costs no allocation.
   */
  private step(t: NrThread, what: number, x: number, y: number): void {
    if (t.combining === 0) t.poll();
    const s = this.bw.step();
    if (s === STEP_EXPIRED) throw new NrPanic(`nr: instance ${this.instance}: thread ${t.id} waited ${this.waitLimitMs} ms for ${this.describe(t, what, x, y)}`);
    if (s === STEP_SLEEP) sleepOn(this.bw, this.w, this.log.tailWord, Atomics.load(this.w, this.log.tailWord));
  }

  private describe(t: NrThread, what: number, x: number, y: number): string {
    switch (what) {
      case W_WRITER:
        return `replica ${x}'s writer to finish`;
      case W_READER:
        return `thread ${y} to leave replica ${x}'s read side`;
      case W_COMBINED:
        return `its operation to be combined by replica ${t.replica}'s combiner (held by ${this.replicas.holder(t.replica)})`;
      case W_ROOM:
        return `room in the log (head ${this.head()}, tail ${this.tail()}, ltails ${this.ltails()})`;
      case W_ENTRY:
        return `log entry ${x} to be filled by its appender (replica ${y} applying)`;
      default:
        return `replica ${x} to reach ctail ${y} (at ${this.ltail(x)}, combiner ${this.replicas.holder(x)})`;
    }
  }

  private ltails(): string {
    const out: string[] = [];
    for (let r = 0; r < this.layout.config.replicas; r++) out.push(`r${r}=${this.ltail(r)}`);
    return out.join(' ');
  }

  /** LockWaiter: a wait on replica `waitingReplica`'s reader/writer lock begins. */
  beginWait(): void {
    this.startWait();
  }

  /** LockWaiter: one step of a wait for the replica's writer (who = -1) or for thread `who` to leave its read side. */
  waitStep(who: number): void {
    this.step(this.waiting as NrThread, who < 0 ? W_WRITER : W_READER, this.waitingReplica, who);
  }

  // ---- writes (the crate's context.rs: one flat-combining slot per thread) -----------------

  /**
   * Executes a mutating operation through the log: returns when it has been applied to this
   * thread's replica, with the response in resp[0 .. RESP_WORDS). Thread t only, one at a time.
   */
  execute(t: NrThread, op: number, args: ArrayLike<number>, resp: Int32Array): void {
    const w = this.w;
    const slot = this.base + this.layout.slot(t.id);
    if (Atomics.load(w, slot + SLOT_STATE) !== SLOT_EMPTY) throw new NrPanic(`nr.execute: thread ${t.id} already has an operation pending`);
    w[slot + SLOT_OP] = op;
    const n = Math.min(args.length, ENTRY_ARGS);
    for (let i = 0; i < n; i++) w[slot + SLOT_ARGS + i] = args[i];
    for (let i = n; i < ENTRY_ARGS; i++) w[slot + SLOT_ARGS + i] = 0;
    Atomics.store(w, slot + SLOT_STATE, SLOT_PENDING);
    this.startWait();
    for (;;) {
      if (Atomics.load(w, slot + SLOT_STATE) === SLOT_DONE) break;
      if (this.tryCombine(t, t.replica)) continue;
      this.step(t, W_COMBINED, 0, 0);
    }
    for (let i = 0; i < RESP_WORDS; i++) resp[i] = w[slot + SLOT_RESP + i];
    Atomics.store(w, slot + SLOT_STATE, SLOT_EMPTY);
  }

  /**
   * Flat combining: if r's combiner lock is free, takes it, appends the pending operations of
   * r's threads as one batch, applies the log to r and hands out responses. Returns whether it
   * combined.
   */
  private tryCombine(t: NrThread, r: number): boolean {
    if (!this.replicas.tryLockCombiner(r, t.id)) return false;
    t.combining++;
    t.trace?.(PH_BEGIN, TR_COMBINE);
    try {
      this.stats.combines++;
      const w = this.w;
      const threads = this.layout.config.threads;
      const batch = this.batch;
      let n = 0;
      for (let u = 0; u < threads && n < batch.length; u++) {
        if (this.replicaOf[u] === r && Atomics.load(w, this.base + this.layout.slot(u) + SLOT_STATE) === SLOT_PENDING) batch[n++] = u;
      }
      if (n > 0) this.append(t, r, n);
      this.exec(t, r, this.log.tail());
    } finally {
      this.replicas.unlockCombiner(r);
      t.combining--;
      t.trace?.(PH_END, TR_COMBINE);
    }
    return true;
  }

  /** Reserves room for the first n threads of this.batch (making room when the log is full), then fills and publishes their entries. */
  private append(t: NrThread, r: number, n: number): void {
    const log = this.log;
    const batch = this.batch;
    this.startWait();
    let start: number;
    while ((start = log.reserve(n)) < 0) {
      this.makeRoom(t, r);
      if (!log.hasRoom(n)) this.step(t, W_ROOM, 0, 0);
    }
    for (let k = 0; k < n; k++) {
      const slot = this.base + this.layout.slot(batch[k]);
      log.publish((start + k) | 0, (r << 16) | batch[k], this.w[slot + SLOT_OP], this.w, slot + SLOT_ARGS);
    }
    this.stats.appends += n;
    this.stats.batches++;
    this.stats.batchedOps += n;
    t.bp?.(NR_BP_AFTER_APPEND);
  }

  /** GC: head = min ltail; then advance lagging replicas (other than r, which we are combining). */
  private makeRoom(t: NrThread, r: number): void {
    const log = this.log;
    // Our own replica first: it may be the laggard.
    this.exec(t, r, log.tail());
    this.gc();
    const head = log.head();
    for (let q = 0; q < this.layout.config.replicas; q++) {
      if (q === r || this.ltail(q) !== head) continue;
      this.onLagging(q);
      if (this.replicas.tryLockCombiner(q, t.id)) {
        t.combining++;
        try {
          this.stats.laggardAdvances++;
          this.exec(t, q, log.tail());
        } finally {
          this.replicas.unlockCombiner(q);
          t.combining--;
        }
      }
    }
    this.gc();
  }

  /** Moves head up to the smallest ltail (only forward). */
  gc(): void {
    let min = this.ltail(0);
    for (let q = 1; q < this.layout.config.replicas; q++) {
      const l = this.ltail(q);
      if (((l - min) | 0) < 0) min = l;
    }
    this.log.advanceHead(min);
  }

  /**
   * Applies log entries ltail[r] .. upto-1 to replica r under its writer lock, delivering the
   * responses of r's own entries (the crate's Log::exec). The caller holds r's combiner lock.
   */
  private exec(t: NrThread, r: number, upto: number): void {
    const w = this.w;
    const log = this.log;
    const reps = this.replicas;
    let i = reps.ltail(r);
    if (((upto - i) | 0) <= 0) return;
    t.bp?.(NR_BP_BEFORE_APPLY);
    this.waiting = t;
    this.waitingReplica = r;
    writeLock(w, reps.writerWord(r), reps.readerWord(r, 0), NR_LINE, this.layout.config.threads, this);
    try {
      for (; i !== upto; i = (i + 1) | 0) {
        this.startWait();
        while (!log.filled(i)) this.step(t, W_ENTRY, i, r);
        const e = log.entry(i);
        const origin = w[e + E_ORIGIN];
        const mine = origin >>> 16 === r;
        const slot = this.base + this.layout.slot(origin & 0xffff);
        this.ds.apply(r, w[e + E_OP], w, e + E_ARGS, mine ? w : this.scratch, mine ? slot + SLOT_RESP : 0);
        if (mine) Atomics.store(w, slot + SLOT_STATE, SLOT_DONE);
      }
      reps.setLtail(r, upto);
    } finally {
      writeUnlock(w, reps.writerWord(r));
    }
    log.advanceCtail(upto);
  }

  /**
   * Brings replica q (any node's, not only t's) up to the ctail seen now, on t's behalf: what a
   * writer does to a laggard, as a call (the kernel half's eager update reads every node's master
   * table). Waits, bounded, for q's combiner when another thread holds it.
   */
  advance(t: NrThread, q: number): void {
    if (q === t.replica) {
      this.sync(t);
      return;
    }
    const target = this.log.ctail();
    this.startWait();
    while (((this.ltail(q) - target) | 0) < 0) {
      if (this.replicas.tryLockCombiner(q, t.id)) {
        t.combining++;
        try {
          this.exec(t, q, this.log.ctail());
        } finally {
          this.replicas.unlockCombiner(q);
          t.combining--;
        }
        continue;
      }
      this.step(t, W_CTAIL, q, target);
    }
  }

  // ---- reads --------------------------------------------------------------------------------

  /**
   * Brings t's replica up to the ctail seen now (combining if the lock is free, else waiting for
   * the combiner). Afterwards the replica reflects every operation completed before the call.
   */
  sync(t: NrThread): void {
    const r = t.replica;
    const target = this.log.ctail();
    this.startWait();
    let counted = false;
    while (((this.ltail(r) - target) | 0) < 0) {
      if (!counted) {
        this.stats.readSyncs++;
        counted = true;
        t.trace?.(PH_BEGIN, TR_SYNC);
      }
      if (this.tryCombine(t, r)) continue;
      this.step(t, W_CTAIL, r, target);
    }
    if (counted) t.trace?.(PH_END, TR_SYNC);
  }

  /**
   * Begins a read: brings t's replica up to ctail and takes its read side. Returns the replica,
   * which the caller reads (without writing it) until endRead(t). No allocation.
   */
  beginRead(t: NrThread): number {
    const r = t.replica;
    // The replica is usually up to date already: two loads, no sync (ctail first, as sync reads it).
    const target = this.log.ctailPlain();
    if (((this.replicas.ltailPlain(r) - target) | 0) < 0) this.sync(t);
    this.waiting = t;
    this.waitingReplica = r;
    readLock(this.w, this.writerOf[t.id], this.readerOf[t.id], this);
    return r;
  }

  /** Ends a read begun by beginRead(t). */
  endRead(t: NrThread): void {
    readUnlock(this.w, this.readerOf[t.id]);
  }

  /** A read as one call: beginRead, `fn(replica)` (which must not write), endRead. Returns fn's result. */
  read<T>(t: NrThread, fn: (r: number) => T): T {
    const r = this.beginRead(t);
    try {
      return fn(r);
    } finally {
      this.endRead(t);
    }
  }

  /** Checks head <= every ltail <= tail and ctail <= tail; returns the violations found (empty when sound). */
  checkInvariants(): string[] {
    const out: string[] = [];
    const head = this.head();
    const tail = this.tail();
    const ctail = this.ctail();
    for (let r = 0; r < this.layout.config.replicas; r++) {
      const l = this.ltail(r);
      if (((l - head) | 0) < 0) out.push(`instance ${this.instance}: ltail[${r}] ${l} is behind head ${head}`);
      if (((tail - l) | 0) < 0) out.push(`instance ${this.instance}: ltail[${r}] ${l} is past tail ${tail}`);
    }
    if (((tail - ctail) | 0) < 0) out.push(`instance ${this.instance}: ctail ${ctail} is past tail ${tail}`);
    if (((tail - head) | 0) > this.log.size) out.push(`instance ${this.instance}: ${tail - head} live entries exceed the log's ${this.log.size}`);
    return out;
  }
}
