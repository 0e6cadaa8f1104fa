// A core's interrupt controller (its local APIC, reduced to what the machine needs): the doorbell
// a halted core sleeps on, a bounded multi-producer queue of IPI messages per core (after
// Vyukov's bounded queue), the ack counter a sender waits on, and HLT. Handlers are registered per
// IPI type and run by service() on the receiving core at its next boundary.
//
// The signal is where the message is: the interrupt check at an instruction boundary is one plain
// load of the sequence word of the queue slot at the head (a sender's publication of that slot is
// the interrupt), so a round trip moves the slot's line, the sender's ack and nothing else (no
// pending word set by the sender and cleared by the receiver).
//
// Other threads touch a core only through its doorbell, queue tail and slots, and ack counter.
// Waits are bounded (wait.ts): spin briefly, then sleep on the doorbell in short slices; past the
// machine's waitLimitMs, give up with a value and name what was awaited in the core's
// lastWaitWhat, or stop at once when another core of the run set the abort flag.

import { C_ACK, C_DOORBELL, C_QHEAD, C_QTAIL, C_STATE, CORE_HALTED, CORE_OFF, CORE_RUNNING, CTR, G_ABORT, Q_ARGS, Q_SENDER, Q_SEQ, Q_SLOT_WORDS, Q_TYPE, type Layout } from './layout.js';
import { panic } from './panic.js';
import { PH_BEGIN, PH_END, PH_INSTANT, TR_IPI, TR_IPI_SEND } from './trace.js';
import { BoundedWait, STEP_EXPIRED, STEP_SLEEP } from './wait.js';
import type { Cpu } from './cpu.js';

// ---- IPI message types. 1..15 are the hardware layer's; higher types belong to the kernel. ----
/** Acknowledge and do nothing else (tests, latency). */
export const IPI_PING = 1;
/** Acknowledge at an instruction boundary: proves the core is inside no walk (break-before-make). */
export const IPI_SYNC = 2;
/** Ask the core to end its current program at the next operation boundary, then acknowledge. */
export const IPI_STOP = 5;
export const IPI_TYPES = 64;

// ---- wait outcomes ----
export const WAIT_OK = 0;
export const WAIT_TIMEOUT = 1;
export const WAIT_ABORTED = 2;
export const IPI_OK = 0;
export const IPI_TARGET_OFFLINE = 3;
export const IPI_QUEUE_FULL = 4;

/** Bumps core c's doorbell and wakes it if it sleeps there. Any thread, the controller too. */
export function ringDoorbell(layout: Layout, ctl: Int32Array, c: number): void {
  const db = layout.coreBase(c) + C_DOORBELL;
  Atomics.add(ctl, db, 1);
  Atomics.notify(ctl, db);
}

/** What a wait outcome (WAIT_*, IPI_*) of core `cpu` means, for a message: never blank. */
export function describeWait(cpu: Cpu, r: number): string {
  switch (r) {
    case WAIT_ABORTED:
      return 'stopped: another core of the run failed';
    case WAIT_TIMEOUT:
      return `no answer within ${cpu.waitLimitMs} ms while waiting for ${cpu.lastWaitWhat || 'an unnamed condition'}`;
    case IPI_QUEUE_FULL:
      return 'the target core\'s IPI queue was full';
    case IPI_TARGET_OFFLINE:
      return 'the target core is not running';
    default:
      return `wait outcome ${r}`;
  }
}

/** Handler for an IPI type. It must call cpu.apic.ack(sender) exactly once. */
export type IpiHandler = (cpu: Cpu, sender: number, a0: number, a1: number, a2: number, a3: number, a4: number) => void;

/**
 * A core's waits spin this many steps before they sleep on the doorbell, in slices of SLICE_MS
 * (notified: long slices cost nothing); fewer when simulated cores outnumber the host's CPUs
 * (wait.ts).
 */
const SPINS = 200;
const SLICE_MS = 2;
/** HLT sleeps in slices this long (woken by the doorbell). */
export const HALT_SLICE_MS = 50;

export class Apic {
  readonly handlers: (IpiHandler | undefined)[] = new Array(IPI_TYPES).fill(undefined);
  /**
   * The interrupt check, inline in instruction loops: a message is pending when
   * `ctl[apic.headSeq] === apic.headExpect` (the sequence word of the slot at the queue's head
   * says it was published). Both move as service() takes messages.
   */
  headSeq = 0;
  headExpect = 1;
  /** The queue's head (logical position of the next message; mirrored in the control block). */
  private head = 0;
  /** The core's bounded wait (acks, a full queue, HLT; the run's barriers use it too). */
  readonly bw: BoundedWait;
  /** Type and sender of the message being serviced. */
  msgType = 0;
  msgSender = 0;
  /** Number of acks this core must have received before its current IPI wait ends. */
  private ackTarget = 0;
  private readonly id: number;

  constructor(
    private readonly layout: Layout,
    private readonly ctl: Int32Array,
    /** Word index of the core's part of the control block. */
    private readonly base: number,
    /** The core: handlers get it, and the APIC counts, traces and names its waits in it. */
    private readonly cpu: Cpu,
  ) {
    this.id = cpu.id;
    this.setHead(ctl[base + C_QHEAD]);
    this.bw = new BoundedWait(layout.config.waitLimitMs, 1, layout.config.cores, SPINS);
    this.handlers[IPI_PING] = (core, sender) => core.apic.ack(sender);
    this.handlers[IPI_SYNC] = (core, sender) => core.apic.ack(sender);
    this.handlers[IPI_STOP] = (core, sender) => {
      core.stopRequested = true;
      core.apic.ack(sender);
    };
  }

  /** Takes up the acks counted so far and the queue's head (a core attached by a new thread). */
  resetAcks(): void {
    this.ackTarget = Atomics.load(this.ctl, this.base + C_ACK);
    this.setHead(Atomics.load(this.ctl, this.base + C_QHEAD));
  }

  /** Moves the head to logical position pos: the slot whose sequence word signals the next message. */
  private setHead(pos: number): void {
    this.head = pos;
    this.headSeq = this.base + this.layout.queueBase + (pos & (this.layout.queueSlots - 1)) * Q_SLOT_WORDS + Q_SEQ;
    this.headExpect = (pos + 1) | 0;
  }

  /**
   * The interrupt check at an instruction boundary: one plain load of the head slot's sequence
   * word (an Atomics.load costs 10-20x more here; see README "Memory ordering"). Seeing it
   * published, service() reads it again with Atomics.load, which orders the reads of the message
   * after it.
   */
  poll(): void {
    if (this.ctl[this.headSeq] === this.headExpect) this.service();
  }

  /** Whether a message is waiting (an ordered read: for the sleep and HLT paths). */
  private hasMessage(): boolean {
    return Atomics.load(this.ctl, this.headSeq) === this.headExpect;
  }

  /** Takes every queued message and runs its handler. Handlers acknowledge their senders. */
  service(): void {
    const c = this.ctl;
    const mask = this.layout.queueSlots - 1;
    for (;;) {
      const pos = this.head;
      const slot = this.headSeq - Q_SEQ;
      if (((Atomics.load(c, slot + Q_SEQ) - (pos + 1)) | 0) !== 0) return;
      const type = c[slot + Q_TYPE];
      const sender = c[slot + Q_SENDER];
      const a0 = c[slot + Q_ARGS];
      const a1 = c[slot + Q_ARGS + 1];
      const a2 = c[slot + Q_ARGS + 2];
      const a3 = c[slot + Q_ARGS + 3];
      const a4 = c[slot + Q_ARGS + 4];
      // The head is this core's alone, and the slot's sequence word frees the slot for the senders:
      // plain stores, a release on x86 (TSO keeps them after the reads above; V8 keeps typed-array
      // accesses in program order), made visible by the handler's ack (an Atomics.add, a fence).
      c[this.base + C_QHEAD] = (pos + 1) | 0;
      this.setHead((pos + 1) | 0);
      c[slot + Q_SEQ] = (pos + mask + 1) | 0;
      this.cpu.ctr[CTR.ipisReceived]++;
      this.msgType = type;
      this.msgSender = sender;
      const h = this.handlers[type];
      if (h === undefined) panic(`Apic.service: core ${this.id} got IPI type ${type} from core ${sender} with no handler`);
      this.cpu.trace(PH_BEGIN, TR_IPI, type);
      h(this.cpu, sender, a0, a1, a2, a3, a4);
      this.cpu.trace(PH_END, TR_IPI, type);
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

  /** Whether core c sleeps on its doorbell right now (HLT, or a long wait). */
  isHalted(c: number): boolean {
    return Atomics.load(this.ctl, this.layout.coreBase(c) + C_STATE) === CORE_HALTED;
  }

  /** Bumps core c's doorbell and wakes it if it sleeps there. */
  wake(c: number): void {
    ringDoorbell(this.layout, this.ctl, c);
  }

  /** Tries to put a message in target's queue. False when the queue is full. Any thread. */
  private enqueue(target: number, type: number, a0: number, a1: number, a2: number, a3: number, a4: number): boolean {
    const c = this.ctl;
    const tb = this.layout.coreBase(target);
    const mask = this.layout.queueSlots - 1;
    const slots = tb + this.layout.queueBase;
    for (;;) {
      const pos = Atomics.load(c, tb + C_QTAIL);
      const slot = slots + (pos & mask) * Q_SLOT_WORDS;
      const dif = (Atomics.load(c, slot + Q_SEQ) - pos) | 0;
      if (dif === 0) {
        if (Atomics.compareExchange(c, tb + C_QTAIL, pos, (pos + 1) | 0) !== pos) continue;
        c[slot + Q_TYPE] = type;
        c[slot + Q_SENDER] = this.id;
        c[slot + Q_ARGS] = a0;
        c[slot + Q_ARGS + 1] = a1;
        c[slot + Q_ARGS + 2] = a2;
        c[slot + Q_ARGS + 3] = a3;
        c[slot + Q_ARGS + 4] = a4;
        Atomics.store(c, slot + Q_SEQ, (pos + 1) | 0);
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
      w.begin();
      while (!this.enqueue(target, type, a0, a1, a2, a3, a4)) {
        this.poll();
        if (Atomics.load(c, G_ABORT) !== 0) return WAIT_ABORTED;
        const st = w.step();
        if (st === STEP_EXPIRED) {
          this.cpu.lastWaitWhat = `IPI queue of core ${target} stayed full`;
          return WAIT_TIMEOUT;
        }
        if (st === STEP_SLEEP) this.sleepSlice();
      }
    }
    this.ackTarget = (this.ackTarget + 1) | 0;
    this.cpu.ctr[CTR.ipisSent]++;
    this.cpu.trace(PH_INSTANT, TR_IPI_SEND, target);
    // The slot's sequence word, stored (sequentially consistent) by enqueue, is the interrupt. A
    // halted target marked itself HALTED before it looked at that word again, so one of the two
    // sees the other.
    if (Atomics.load(c, tb + C_STATE) === CORE_HALTED) this.wake(target);
    return IPI_OK;
  }

  /**
   * Waits until every IPI sent so far is acknowledged, servicing this core's own interrupts
   * meanwhile (so two cores waiting on each other cannot deadlock). Returns a WAIT_* value.
   * `progress`, if given, is called whenever more acks have come in (a lock holder tells its
   * waiters that it is slow, not stuck).
   */
  waitAcks(progress?: () => void): number {
    const c = this.ctl;
    const ackWord = this.base + C_ACK;
    const w = this.bw;
    w.begin();
    let seen = Atomics.load(c, ackWord);
    while (((Atomics.load(c, ackWord) - this.ackTarget) | 0) < 0) {
      if (progress !== undefined && Atomics.load(c, ackWord) !== seen) {
        seen = Atomics.load(c, ackWord);
        progress();
      }
      this.poll();
      if (Atomics.load(c, G_ABORT) !== 0) return WAIT_ABORTED;
      const st = w.step();
      if (st === STEP_EXPIRED) {
        this.cpu.lastWaitWhat = `acks for IPIs sent by core ${this.id} (${(this.ackTarget - Atomics.load(c, ackWord)) | 0} missing)`;
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
   * `ms`: the slice; a waiter whose word's writer always wakes it (a barrier) can sleep long.
   */
  sleepSlice(word = -1, until = 0, ms = SLICE_MS): void {
    const c = this.ctl;
    const db = this.base + C_DOORBELL;
    const d = Atomics.load(c, db);
    Atomics.store(c, this.base + C_STATE, CORE_HALTED);
    const done = word >= 0 && ((Atomics.load(c, word) - until) | 0) >= 0;
    if (!done && !this.hasMessage()) Atomics.wait(c, db, d, ms);
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
    this.cpu.ctr[CTR.halts]++;
    for (;;) {
      const d = Atomics.load(c, db);
      Atomics.store(c, this.base + C_STATE, CORE_HALTED);
      if (this.hasMessage()) break;
      if (Atomics.load(c, G_ABORT) !== 0) {
        Atomics.store(c, this.base + C_STATE, CORE_RUNNING);
        return WAIT_ABORTED;
      }
      if (w.step() === STEP_EXPIRED) {
        Atomics.store(c, this.base + C_STATE, CORE_RUNNING);
        this.cpu.lastWaitWhat = `an interrupt for halted core ${this.id}`;
        return WAIT_TIMEOUT;
      }
      Atomics.wait(c, db, d, HALT_SLICE_MS);
    }
    Atomics.store(c, this.base + C_STATE, CORE_RUNNING);
    this.service();
    return WAIT_OK;
  }
}
