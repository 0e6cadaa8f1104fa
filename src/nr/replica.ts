// The per-replica words of one NR instance (the node-replication crate's replica.rs keeps them in
// each Replica): how far the replica has applied the log (ltail), its combiner lock (flat
// combining: one thread of the node appends and applies for all of them), and its reader/writer
// lock — a writer flag and one reader flag per thread (rwlock.ts). A replica's data structure is
// not here: NR's user applies log entries to it (Replicated.apply).

import { NR_LINE, REP_COMBINER, REP_LTAIL, REP_WRITER, type NrLayout } from './layout.js';

export class Replicas {
  /** Word index in w of each replica's block (computed once: these are on every read's path). */
  private readonly at: Int32Array;
  private readonly readers: number;

  constructor(readonly layout: NrLayout, readonly w: Int32Array, instance: number) {
    const base = layout.instanceBase(instance);
    this.at = Int32Array.from({ length: layout.config.replicas }, (_, r) => base + layout.replica(r));
    this.readers = layout.reader(0, 0) - layout.replica(0);
  }

  /** How far replica r has applied the log (a logical index). */
  ltail(r: number): number {
    return Atomics.load(this.w, this.at[r] + REP_LTAIL);
  }

  /** ltail(r) with a plain load, for a read's up-to-date test (see Log.ctailPlain). */
  ltailPlain(r: number): number {
    return this.w[this.at[r] + REP_LTAIL];
  }

  /** Records that replica r has applied the log up to `upto`. r's combiner only. */
  setLtail(r: number, upto: number): void {
    Atomics.store(this.w, this.at[r] + REP_LTAIL, upto);
  }

  /** Takes r's combiner lock for thread t if it is free. Returns whether it did. */
  tryLockCombiner(r: number, t: number): boolean {
    const lock = this.at[r] + REP_COMBINER;
    return Atomics.load(this.w, lock) === 0 && Atomics.compareExchange(this.w, lock, 0, t + 1) === 0;
  }

  unlockCombiner(r: number): void {
    Atomics.store(this.w, this.at[r] + REP_COMBINER, 0);
  }

  /** Who holds r's combiner lock, for a message: "nobody" or "thread N". */
  holder(r: number): string {
    const v = Atomics.load(this.w, this.at[r] + REP_COMBINER);
    return v === 0 ? 'nobody' : `thread ${v - 1}`;
  }

  /** Word of r's writer flag (rwlock.ts). */
  writerWord(r: number): number {
    return this.at[r] + REP_WRITER;
  }

  /** Word of thread t's reader flag for r (rwlock.ts); the flags of r's threads are NR_LINE apart from readerWord(r, 0). */
  readerWord(r: number, t: number): number {
    return this.at[r] + this.readers + t * NR_LINE;
  }
}
