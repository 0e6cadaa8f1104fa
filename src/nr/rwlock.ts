// The writer-preference reader/writer lock of node replication (the node-replication crate's
// rwlock.rs): one writer word and one reader flag per thread, each on its own 64-byte line. A
// reader raises its flag, then looks at the writer word; a writer sets the writer word, then
// waits until every reader flag is down. With both sides sequentially consistent, either the
// reader sees the writer (and steps back until it is gone) or the writer sees the reader's flag
// (and waits for it): no reader and writer are ever inside together. A writer that has set its
// word holds back new readers (writer preference).
//
// NR guards each replica with it (the combiner is the only writer); the lock baseline of `bench
// scale` guards its single copy of an address space with it (any core may write, so the writer
// word is taken by compareExchange). The lock knows only words: the caller places them
// (nr/layout.ts, kernel/layout.ts) and supplies the bounded wait, which names who it waits for.

/** What a lock user does while it waits; `who` is the thread whose flag is up, or -1 for the writer. */
export interface LockWaiter {
  /** Starts a wait (resets its bound). */
  beginWait(): void;
  /** One step of a bounded wait for `who`; panics, naming it, past the bound. */
  waitStep(who: number): void;
}

/** Takes the read side: flag up, and while a writer holds or wants the lock, flag down and wait. */
export function readLock(w: Int32Array, writer: number, flag: number, waiter: LockWaiter): void {
  Atomics.store(w, flag, 1);
  if (Atomics.load(w, writer) === 0) return;
  waiter.beginWait();
  for (;;) {
    Atomics.store(w, flag, 0);
    while (Atomics.load(w, writer) !== 0) waiter.waitStep(-1);
    Atomics.store(w, flag, 1);
    if (Atomics.load(w, writer) === 0) return;
  }
}

/** Leaves the read side. */
export function readUnlock(w: Int32Array, flag: number): void {
  Atomics.store(w, flag, 0);
}

/**
 * Takes the write side: the writer word (compareExchange 0 -> 1, waiting for another writer),
 * then waits until each of the `threads` reader flags (at firstFlag + u * stride) is down.
 */
export function writeLock(w: Int32Array, writer: number, firstFlag: number, stride: number, threads: number, waiter: LockWaiter): void {
  if (Atomics.compareExchange(w, writer, 0, 1) !== 0) {
    waiter.beginWait();
    while (Atomics.load(w, writer) !== 0 || Atomics.compareExchange(w, writer, 0, 1) !== 0) waiter.waitStep(-1);
  }
  for (let u = 0; u < threads; u++) {
    const flag = firstFlag + u * stride;
    if (Atomics.load(w, flag) === 0) continue;
    waiter.beginWait();
    while (Atomics.load(w, flag) !== 0) waiter.waitStep(u);
  }
}

/** Leaves the write side. */
export function writeUnlock(w: Int32Array, writer: number): void {
  Atomics.store(w, writer, 0);
}
