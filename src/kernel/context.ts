// The kernel as one thread uses it (xv6's per-CPU state and its handles, in one object): the
// shared views, this thread's handles on every address space's replicas and NR instance, the
// space each of its cores runs, scratch words for operations and responses, its statistics, and
// the two ways an address-space operation runs — through node replication (NRK), or on one copy
// behind the reader/writer lock (the lock baseline of `bench scale`). The kernel's mechanisms are
// modules of functions over this context, each importing only the ones before it:
//
//   context  refs  shootdown  space  vm  fault  fork  proc
//
// A context belongs to one thread (a core's executor, or the controller); the state it shares
// with other threads lives in the kernel's region (layout.ts) and NR's (nr/layout.ts).

import { Nr, NR_BP_AFTER_APPEND, NR_BP_BEFORE_APPLY, type NrThread } from '../nr/nr.js';
import { NrLayout } from '../nr/layout.js';
import { readLock, readUnlock, writeLock, writeUnlock, type LockWaiter } from '../nr/rwlock.js';
import type { Frames } from '../hw/frames.js';
import type { Device } from '../hw/device.js';
import type { Cpu } from '../hw/cpu.js';
import { BoundedWait, STEP_EXPIRED, STEP_SLEEP, sleepOn } from '../hw/wait.js';
import { panic } from '../hw/panic.js';
import { K_LINE, KernelLayout, S_STATE, SPACE_LIVE } from './layout.js';
import { PAGE } from './ops.js';
import { VSpace } from './vspace.js';
import type { MapEntry } from './mapdb.js';
import type { KernelOptions } from './options.js';
import { IPI_REPLICA_ADVANCE } from './ops.js';
import { IPI_OK } from '../hw/apic.js';

/** Breakpoints of the kernel's protocols (NR's are its own). A race script arms them on a core by name. */
export const BP_BEFORE_RESOLVE = 2;
export const BP_BEFORE_SHOOTDOWN_IPIS = 3;
export const BP_BEFORE_RECEIVER_SYNC = 4;
export const BP_BEFORE_COW_COPY = 5;
export const BP_BEFORE_EXIT_LEAVE = 6;
/** MH: the user-level handler has copied the shared page into its scratch page and is about to move it over. */
export const BP_BEFORE_USER_MOVE = 7;
/** Kernel half: a top-level change is in every master; the spaces are about to be updated (eager) or left to their method. */
export const BP_KHALF_PUBLISH = 8;
/** RPAL: a call has saved (and blocked) its caller; the callee is not loaded yet. */
export const BP_RPAL_CALL_SAVED = 9;
/** RPAL: a return has saved its callee (runnable again); the caller is not resumed yet. */
export const BP_RPAL_RETURN_SAVED = 10;
export const BREAKPOINTS: Record<string, number> = {
  'after-log-append': NR_BP_AFTER_APPEND, 'before-log-apply': NR_BP_BEFORE_APPLY, 'before-resolve': BP_BEFORE_RESOLVE,
  'before-shootdown-ipis': BP_BEFORE_SHOOTDOWN_IPIS, 'before-receiver-sync': BP_BEFORE_RECEIVER_SYNC, 'before-cow-copy': BP_BEFORE_COW_COPY,
  'before-exit-leave': BP_BEFORE_EXIT_LEAVE, 'before-user-move': BP_BEFORE_USER_MOVE, 'khalf-publish': BP_KHALF_PUBLISH,
  'rpal-call-saved': BP_RPAL_CALL_SAVED, 'rpal-return-saved': BP_RPAL_RETURN_SAVED,
};

/** The kernel's and NR's layouts for a machine with these cores, nodes, memory and kernel options. */
export function kernelLayouts(cores: number, nodes: number, memoryBytes: number, o: KernelOptions): { klayout: KernelLayout; nrLayout: NrLayout } {
  const klayout = new KernelLayout({
    // One more space than the processes may have: the kernel's own (kernel/khalf.ts), the last.
    cores, nodes, totalFrames: memoryBytes / PAGE, maxSpaces: o.maxSpaces + 1, maxMappings: o.maxMappings, ptPoolFrames: o.ptPoolFrames,
  });
  const nrLayout = new NrLayout({ logEntries: o.logEntries, replicas: nodes, threads: cores, instances: o.maxSpaces + 1, maxBatch: o.maxBatch });
  return { klayout, nrLayout };
}

/** Everything a thread needs to use the kernel. */
export interface KernelViews {
  klayout: KernelLayout;
  k: Int32Array;
  nrLayout: NrLayout;
  nrw: Int32Array;
  mem: Int32Array;
  frames: Frames;
  /** NUMA node (replica) of each core. */
  replicaOf: number[];
  waitLimitMs: number;
  inject: readonly string[];
  /** Copy-on-write policy (config kernel.cow). */
  cow?: 'default' | 'mh';
  /** Node replication, or the lock baseline (config kernel.mode). */
  mode?: 'nr' | 'lock';
  /** The kernel personality (config kernel.personality). */
  personality?: 'default' | 'mh';
  /** The device above RAM, when the machine has one (exports, I/O mappings). */
  device?: Device;
  /** How the kernel half is kept in sync (config kernel.khalf). */
  khalf?: 'eager' | 'switch' | 'lazy';
  /** Whom a change in an mshare region shoots down (config kernel.mshareFlush). */
  mshareFlush?: 'attached' | 'all';
}

/** Per-thread statistics, merged by the controller. */
export class KernelStats {
  maps = 0;
  unmaps = 0;
  adjusts = 0;
  resolves = 0;
  errors = 0;
  spuriousFaults = 0;
  invalidAccesses = 0;
  shootdowns = 0;
  shootdownIpis = 0;
  shootdownsReceived = 0;
  /** Replica-advance IPIs sent to idle cores of a lagging node, and received. */
  advanceIpis = 0;
  advancesReceived = 0;
  /** Receivers' invalidations: page by page, or whole (above SHOOTDOWN_FULL_FLUSH_PAGES). */
  pageInvalidations = 0;
  fullFlushes = 0;
  switches = 0;
  /** Switches in that found a newer TLB generation and flushed the space's PCID. */
  generationFlushes = 0;
  /** Write faults on demand-zero pages (a frame allocated), on copy-on-write pages copied, and reused by the last sharer. */
  zeroFills = 0;
  cowCopies = 0;
  cowReuses = 0;
  /** MH: faults delivered to the process's user-level handler; its copies (copy and move); exports, unexports, moves. */
  userFaults = 0;
  userCopies = 0;
  exports = 0;
  unexports = 0;
  moves = 0;
  /** Kernel half: kmaps, kunmaps, top-level entries written into address spaces (eager updates, switch-in copies, lazy faults), kernel faults repaired. */
  kmaps = 0;
  kunmaps = 0;
  kernelEntryCopies = 0;
  kernelFaults = 0;
  /** RPAL calls ended at their caller's recovery point because the callee's process had exited (thread.ts recoverCall). */
  rpalRecoveries = 0;
  kernelShootdowns = 0;
}

/** One thread's kernel context. See the module comment. */
export class Kernel implements LockWaiter {
  readonly stats = new KernelStats();
  private readonly vspaces: (VSpace | undefined)[] = [];
  private readonly nrs: (Nr | undefined)[] = [];
  private readonly threads: (NrThread | undefined)[] = [];
  /** Space each core of this thread currently runs (-1: none). */
  readonly current: Int32Array;
  /** Per core: the thread it runs (thread.ts), or -1. */
  readonly runs: Int32Array;
  /** Per core: the space an RPAL callee's first kernel entry switches to (the lazy kernel switch), or -1. */
  readonly lazy: Int32Array;
  /** An operation's argument words (ops.ts names them) and its response words. */
  readonly args = new Int32Array(13);
  readonly resp = new Int32Array(8);
  /** The first frame the last mapAnon took (NO_FRAME when memory ran out). */
  anonFrame = -1;
  /** The mapping the last lookup found (reused: no allocation per lookup). */
  readonly found: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };
  readonly skipShootdown: boolean;
  readonly skipReplicaSync: boolean;
  readonly skipCowCopy: boolean;
  /** Injected: a kernel shootdown that frees page tables invalidates the pages only (not every PCID's entries and paging-structure caches) and spares the cores their next switch's flush. */
  readonly skipTableFlush: boolean;
  /** Injected (RPAL): a shootdown in a shared slot reaches the owner's cores only, not the sharers'. */
  readonly ownerOnlyShootdown: boolean;
  /** Injected (RPAL): a fault in a shared slot is handled in the accessing space, not the owner's. */
  readonly faultInWrongSpace: boolean;
  /** Injected (RPAL threads): switching threads leaves the previous thread's PKRU in the core. */
  readonly pkruNotSwitched: boolean;
  /** A change in an mshare region flushes every core's non-global translations (config kernel.mshareFlush 'all'). */
  readonly mshareFlushAll: boolean;
  /** Injected MH bugs: unmap of a wired page succeeds; export does not wire. */
  readonly skipWireCheck: boolean;
  readonly unwiredDma: boolean;
  /** The MH personality (kernel/mh.ts): its state machine's rules, user-level copy-on-write. */
  readonly mh: boolean;
  /** os5's method for the kernel half (kernel/khalf.ts). */
  readonly khalf: 'eager' | 'switch' | 'lazy';
  /** Kernel mode 'lock': the single-copy baseline instead of node replication. */
  readonly lockMode: boolean;
  /** Copy-on-write policy: 'default' (the last sharer's write reuses the frame) or 'mh' (it becomes private read-only first). */
  readonly cowPolicy: 'default' | 'mh';
  /** Called for each zero-page fill and copy: the Simulator prints PGZERO / PGCOPY. */
  onEvent: ((kind: 'zero' | 'copy' | 'reuse', va: number) => void) | null = null;
  /** This thread's bounded wait, and what it waits for (named when it expires). */
  readonly bw: BoundedWait;
  private waitCpu: Cpu | undefined = undefined;
  private waitSpace = 0;
  private waitWhat = '';
  /** The core on whose behalf this thread currently runs NR (for NR's lagging hook). */
  private sender: Cpu | undefined = undefined;

  constructor(readonly v: KernelViews) {
    this.current = new Int32Array(v.replicaOf.length).fill(-1);
    this.runs = new Int32Array(v.replicaOf.length).fill(-1);
    this.lazy = new Int32Array(v.replicaOf.length).fill(-1);
    this.skipShootdown = v.inject.includes('skip-shootdown');
    this.skipReplicaSync = v.inject.includes('skip-replica-sync');
    this.skipCowCopy = v.inject.includes('skip-cow-copy');
    this.skipTableFlush = v.inject.includes('free-table-without-flush');
    this.ownerOnlyShootdown = v.inject.includes('owner-only-shootdown');
    this.faultInWrongSpace = v.inject.includes('fault-in-wrong-space');
    this.pkruNotSwitched = v.inject.includes('pkru-not-switched');
    this.mshareFlushAll = v.mshareFlush === 'all';
    this.skipWireCheck = v.inject.includes('skip-wire-check');
    this.unwiredDma = v.inject.includes('unwired-dma');
    this.mh = v.personality === 'mh';
    this.khalf = v.khalf ?? 'eager';
    this.cowPolicy = v.cow ?? 'default';
    this.lockMode = v.mode === 'lock';
    this.bw = new BoundedWait(v.waitLimitMs, undefined, v.replicaOf.length);
  }

  /** Address spaces processes may have (the kernel's own is the one after them). */
  get maxSpaces(): number {
    return this.v.klayout.config.maxSpaces - 1;
  }

  /** The kernel's own address space: its replicas' roots are the master tables of the kernel half. */
  get kernelSpace(): number {
    return this.v.klayout.config.maxSpaces - 1;
  }

  /** This thread's handle on space s's replicas. */
  vspace(s: number): VSpace {
    let x = this.vspaces[s];
    if (!x) {
      x = new VSpace(this.v.klayout, this.v.k, this.v.mem, s, this.v.frames, this.v.waitLimitMs, { mh: this.mh, skipWireCheck: this.skipWireCheck });
      this.vspaces[s] = x;
    }
    return x;
  }

  /** This thread's handle on space s's NR instance. */
  nr(s: number): Nr {
    return this.nrs[s] ?? this.newNr(s);
  }

  /** nr(s)'s first call for s (apart, so that nr() stays small enough to inline on every read). */
  private newNr(s: number): Nr {
    const x = new Nr(this.v.nrLayout, this.v.nrw, s, this.vspace(s), this.v.replicaOf, this.v.waitLimitMs, (q) => this.pokeNode(s, q));
    this.nrs[s] = x;
    return x;
  }

  /** NR's view of core c, polling `cpu` (if any) while it waits. */
  thread(c: number, cpu?: Cpu): NrThread {
    if (cpu) this.sender = cpu;
    return this.threads[c] ?? this.newThread(c, cpu);
  }

  /** thread(c)'s first call for c. */
  private newThread(c: number, cpu: Cpu | undefined): NrThread {
    const t: NrThread = {
      id: c, replica: this.v.replicaOf[c], poll: cpu ? () => cpu.apic.poll() : () => {}, combining: 0,
      bp: cpu ? (id) => cpu.debug.breakpoint(id) : undefined,
      trace: cpu?.tracer ? (phase, what) => cpu.trace(phase, what) : undefined,
    };
    this.threads[c] = t;
    return t;
  }

  /** NR statistics of this thread over every address space it used. */
  nrStats(): Record<string, number> {
    const out: Record<string, number> = { nrAppends: 0, nrBatches: 0, nrCombines: 0, nrReadSyncs: 0, nrLaggardAdvances: 0 };
    for (const n of this.nrs) {
      if (!n) continue;
      out.nrAppends += n.stats.appends;
      out.nrBatches += n.stats.batches;
      out.nrCombines += n.stats.combines;
      out.nrReadSyncs += n.stats.readSyncs;
      out.nrLaggardAdvances += n.stats.laggardAdvances;
    }
    return out;
  }

  /** Whether space s exists (created and not destroyed). Any thread. */
  isLive(s: number): boolean {
    return s >= 0 && s < this.maxSpaces && Atomics.load(this.v.k, this.v.klayout.spaceBase(s) + S_STATE) === SPACE_LIVE;
  }

  /** The replica core c uses: its node's under NR, the single copy (replica 0) under the lock baseline. */
  replicaFor(c: number): number {
    return this.lockMode ? 0 : this.v.replicaOf[c];
  }

  /**
   * NR's lagging hook: replica q of space s holds the log back. Asks one halted core of node q
   * (if there is one) to advance it; the writer advances it itself meanwhile. Never waits.
   */
  private pokeNode(s: number, q: number): void {
    const me = this.sender;
    if (!me) return;
    for (let c = 0; c < this.v.replicaOf.length; c++) {
      if (this.v.replicaOf[c] !== q || c === me.id || !me.apic.isHalted(c)) continue;
      if (me.apic.sendIpi(c, IPI_REPLICA_ADVANCE, s, 0, 0, 0, 0, true) === IPI_OK) this.stats.advanceIpis++;
      return;
    }
  }

  // ---- the kernel's bounded wait -------------------------------------------------------------

  /** Starts a bounded wait of `cpu` (or the controller) for `what` (named if it expires). */
  beginWait(cpu?: Cpu, what?: string): void {
    if (what !== undefined) {
      this.waitCpu = cpu;
      this.waitWhat = what;
    }
    this.bw.begin();
  }

  /**
   * One step of the wait begun with beginWait: poll, spin, then sleep a slice on `word`; panics
   * past the bound, naming the waiter and what it waited for. As a LockWaiter (the lock
   * baseline), `who` is the core whose read flag is up, or -1 for the writer.
   */
  waitStep(who: number, word = -1): void {
    this.waitCpu?.apic.poll();
    const s = this.bw.step();
    if (s === STEP_EXPIRED) {
      const what = this.waitWhat !== '' ? this.waitWhat
        : who < 0 ? `space ${this.waitSpace}'s writer (lock baseline)` : `core ${who} to leave space ${this.waitSpace}'s read side (lock baseline)`;
      panic(`Kernel: ${this.waitCpu ? `core ${this.waitCpu.id}` : 'the controller'} waited ${this.v.waitLimitMs} ms for ${what}`);
    }
    if (s !== STEP_SLEEP) return;
    const at = word >= 0 ? word : this.v.klayout.lockBase(this.waitSpace);
    sleepOn(this.bw, this.v.k, at, Atomics.load(this.v.k, at));
  }

  /** Prepares a lock-baseline wait on space s by cpu (what it waits for is told by the lock). */
  private lockWaitOn(s: number, cpu: Cpu | undefined): void {
    this.waitCpu = cpu;
    this.waitSpace = s;
    this.waitWhat = '';
  }

  // ---- the two ways to run an address-space operation: NR, or one copy behind a lock ----------

  /** Runs a mutating operation (its arguments in this.args) on space s for core c; the response lands in this.resp. */
  exec(s: number, c: number, cpu: Cpu | undefined, op: number): void {
    if (!this.lockMode) {
      this.nr(s).execute(this.thread(c, cpu), op, this.args, this.resp);
      return;
    }
    const { k, klayout } = this.v;
    const w = klayout.lockBase(s);
    this.lockWaitOn(s, cpu);
    writeLock(k, w, w + K_LINE, K_LINE, this.v.replicaOf.length, this);
    try {
      this.vspace(s).apply(0, op, this.args, 0, this.resp, 0);
    } finally {
      writeUnlock(k, w);
    }
  }

  /**
   * Begins a read of space s for core c against an up-to-date replica, under its reader lock.
   * Returns the replica to read; the caller ends it with endRead(s, c). No allocation.
   */
  beginRead(s: number, c: number, cpu: Cpu | undefined): number {
    if (!this.lockMode) return this.nr(s).beginRead(this.thread(c, cpu));
    const w = this.v.klayout.lockBase(s);
    this.lockWaitOn(s, cpu);
    readLock(this.v.k, w, w + (1 + c) * K_LINE, this);
    return 0;
  }

  /** Ends a read begun with beginRead. */
  endRead(s: number, c: number): void {
    if (!this.lockMode) this.nr(s).endRead(this.thread(c));
    else readUnlock(this.v.k, this.v.klayout.lockBase(s) + (1 + c) * K_LINE);
  }

  /** Brings core c's replica of s up to date (nothing to do for the single copy of the baseline). */
  sync(s: number, c: number, cpu?: Cpu): void {
    if (!this.lockMode) this.nr(s).sync(this.thread(c, cpu));
  }

  /** Counts an operation's error outcome and returns it. */
  err<T extends { code: number }>(r: T): T {
    this.stats.errors++;
    return r;
  }

  /** Panics unless space s exists. */
  checkSpace(s: number): void {
    if (!this.isLive(s)) panic(`Kernel: address space ${s} does not exist`);
  }
}
