// The shared log of one NR instance (the node-replication crate's log.rs): a ring of fixed-size
// entries with logical indices that only grow (slot = index & mask), and its header words —
// `head` (the oldest live entry), `tail` (the next free one) and `ctail` (the largest index some
// replica has fully applied). Appenders reserve a whole batch with one compareExchange on tail
// and publish each entry by storing its seq word (logical index + 1) last: seq tells a filled
// entry from a reserved one, and one lap of the ring from the next (the crate's alive bit).
// This module holds the words and their single-step operations; waiting, and who calls what
// when, is nr.ts's.

import { E_ARGS, E_OP, E_ORIGIN, E_SEQ, ENTRY_ARGS, H_CTAIL, H_HEAD, H_TAIL, type NrLayout } from './layout.js';

export class Log {
  /** Word index of the instance (its header words) in w. */
  readonly base: number;
  /** Entries in the ring. */
  readonly size: number;

  constructor(readonly layout: NrLayout, readonly w: Int32Array, instance: number) {
    this.base = layout.instanceBase(instance);
    this.size = layout.config.logEntries;
  }

  head(): number {
    return Atomics.load(this.w, this.base + H_HEAD);
  }

  tail(): number {
    return Atomics.load(this.w, this.base + H_TAIL);
  }

  ctail(): number {
    return Atomics.load(this.w, this.base + H_CTAIL);
  }

  /**
   * ctail with a plain load, for a read's up-to-date test: on x86 (TSO) a plain typed-array load
   * is what Atomics.load compiles to, minus its checks (10-20x the cost on Node 20; README
   * "Memory ordering"), and no two loads are reordered. A stale value only sends the reader to
   * sync(), which reads with Atomics.
   */
  ctailPlain(): number {
    return this.w[this.base + H_CTAIL];
  }

  /** The word the log's waiters sleep on (tail moves whenever anything happens). */
  get tailWord(): number {
    return this.base + H_TAIL;
  }

  /**
   * Reserves n consecutive entries with one compareExchange on tail. Returns the first logical
   * index, or -1 when n more entries would not fit behind head (the caller makes room).
   */
  reserve(n: number): number {
    const w = this.w;
    const b = this.base;
    for (;;) {
      const tail = Atomics.load(w, b + H_TAIL);
      const head = Atomics.load(w, b + H_HEAD);
      if (((tail + n - head) | 0) > this.size) return -1;
      if (Atomics.compareExchange(w, b + H_TAIL, tail, (tail + n) | 0) === tail) return tail;
    }
  }

  /** Whether n more entries would fit behind head now. */
  hasRoom(n: number): boolean {
    return ((this.tail() + n - this.head()) | 0) <= this.size;
  }

  /**
   * Fills the reserved entry idx with an operation from `origin` (replica << 16 | thread): its
   * opcode and ENTRY_ARGS argument words from src[at ..]; then publishes it (seq last).
   */
  publish(idx: number, origin: number, op: number, src: Int32Array, at: number): void {
    const w = this.w;
    const e = this.base + this.layout.entry(idx);
    w[e + E_ORIGIN] = origin;
    w[e + E_OP] = op;
    for (let i = 0; i < ENTRY_ARGS; i++) w[e + E_ARGS + i] = src[at + i];
    Atomics.store(w, e + E_SEQ, (idx + 1) | 0);
  }

  /** Word index of entry idx (its E_* fields follow). */
  entry(idx: number): number {
    return this.base + this.layout.entry(idx);
  }

  /** Whether entry idx has been published (for this lap of the ring). */
  filled(idx: number): boolean {
    return Atomics.load(this.w, this.base + this.layout.entry(idx) + E_SEQ) === ((idx + 1) | 0);
  }

  /** Moves head forward to `min` (the smallest ltail), never back. */
  advanceHead(min: number): void {
    const w = this.w;
    const b = this.base;
    for (;;) {
      const head = Atomics.load(w, b + H_HEAD);
      if (((min - head) | 0) <= 0) return;
      if (Atomics.compareExchange(w, b + H_HEAD, head, min) === head) return;
    }
  }

  /** Moves ctail forward to `upto`, never back. */
  advanceCtail(upto: number): void {
    const w = this.w;
    const b = this.base;
    for (;;) {
      const c = Atomics.load(w, b + H_CTAIL);
      if (((upto - c) | 0) <= 0 || Atomics.compareExchange(w, b + H_CTAIL, c, upto) === c) return;
    }
  }
}
