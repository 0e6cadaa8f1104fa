// The kernel's address-space services as one thread (a core's executor, or the controller) uses
// them: replicated address spaces on NR (NRK's process structure: MapFrame, Unmap, Adjust and the
// read Resolve, errors as values), the page-fault path that tells a spurious fault on a lagging
// replica from an invalid access, context switches that keep the active-core masks true, and the
// TLB shootdown of DESIGN.md: the initiator sends a request to every other core in the space's
// active mask, flushes its own TLB and returns only after every ack (servicing its own queue
// meanwhile); a receiver acknowledges, syncs its local replica, takes the request and
// invalidates, running no program access in between. Above SHOOTDOWN_FULL_FLUSH_PAGES pages the
// receiver flushes everything (NRK: 20).

import { Nr, type NrThread } from '../nr/nr.js';
import { NrLayout } from '../nr/layout.js';
import type { MachineConfig } from '../hw/config.js';
import {
  K_LINE, KernelLayout, P_PARENT, P_SPACE, P_STATE, PROC_FREE, PROC_RUNNING, PROC_SLEEPING, PROC_TERMINATED, S_ACTIVE, S_FORKING, S_RWLOCK,
  S_TLBGEN, S_GEN, S_STATE, SR_COUNT, SR_FRAMES,
  SR_LOCK, SR_RESERVED, SR_ROOT,
} from './layout.js';
import {
  ALREADY_MAPPED, INVALID_BASE, INVALID_FRAME, NOT_MAPPED, OK, OUT_OF_MEMORY, PAGE, R_ACCESS, R_ALL, R_COW, R_IO, R_NX, R_USER, R_WAS_COW, R_WIRED,
  R_WRITE, R_ZERO, VS_ADJUST, VS_MAP, VS_REMAP, VS_UNMAP, VSpace, leafWritable, lockPool,
} from './vspace.js';
import type { Frames } from '../hw/frames.js';
import { NO_FRAME } from '../hw/frames.js';
import { IPI_OK, IPI_TARGET_OFFLINE, WAIT_OK, type Cpu } from '../hw/cpu.js';
import { CR3_NOFLUSH_HI, CR4_PCIDE } from '../hw/regs.js';
import { ACC_FETCH, ACC_WRITE, VEC_PF, faultVector } from '../hw/walk.js';
import { FRAME_WORDS, PTE_P, PTE_PS, entryFrame } from '../hw/pte.js';
import { findEntry } from '../hw/ptbuild.js';
import { PH_BEGIN, PH_END, PH_INSTANT, TR_FAULT, TR_SHOOTDOWN, TR_SWITCH } from '../hw/trace.js';
import type { MapEntry } from './mapdb.js';
import { panic } from '../hw/panic.js';

/** IPI type of a shootdown request: a0 = space, a1:a2 = va (hi, lo), a3 = pages. */
export const IPI_SHOOTDOWN = 16;
/** IPI type asking an idle core to bring its node's replica of space a0 up to date. */
export const IPI_REPLICA_ADVANCE = 17;

/** Breakpoints of the kernel's protocols (NR's are 0 and 1). A race script arms them on a core. */
export const BP_BEFORE_RESOLVE = 2;
export const BP_BEFORE_SHOOTDOWN_IPIS = 3;
export const BP_BEFORE_RECEIVER_SYNC = 4;
export const BP_BEFORE_COW_COPY = 5;
export const BREAKPOINTS: Record<string, number> = {
  'after-log-append': 0, 'before-log-apply': 1, 'before-resolve': BP_BEFORE_RESOLVE, 'before-shootdown-ipis': BP_BEFORE_SHOOTDOWN_IPIS,
  'before-receiver-sync': BP_BEFORE_RECEIVER_SYNC, 'before-cow-copy': BP_BEFORE_COW_COPY,
};
export const SHOOTDOWN_FULL_FLUSH_PAGES = 20;
export const USER_TOP = 2 ** 47;

/** Retries of one access after the fault handler found the fault spurious, before it is delivered. */
export const FAULT_RETRIES = 3;

/** The kernel's and NR's layouts for a machine configuration. */
export function kernelLayouts(c: MachineConfig): { klayout: KernelLayout; nrLayout: NrLayout } {
  const klayout = new KernelLayout({
    cores: c.cores, nodes: c.nodes, totalFrames: c.memoryBytes / PAGE, maxSpaces: c.kernel.maxSpaces,
    maxMappings: c.kernel.maxMappings, ptPoolFrames: c.kernel.ptPoolFrames,
  });
  const nrLayout = new NrLayout({
    logEntries: c.kernel.logEntries, replicas: c.nodes, threads: c.cores, instances: c.kernel.maxSpaces, maxBatch: c.kernel.maxBatch,
  });
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
}

export interface MapResult {
  code: number;
  /** Lowest conflicting VA for ALREADY_MAPPED. */
  conflict?: number;
}

export interface UnmapResult {
  code: number;
  pfn: number;
  pages: number;
}

export type ResolveResult = { code: typeof OK; pa: number; rights: number } | { code: typeof NOT_MAPPED };

export class Kernel {
  readonly stats = new KernelStats();
  private readonly vspaces: (VSpace | undefined)[] = [];
  private readonly nrs: (Nr | undefined)[] = [];
  private readonly threads = new Map<number, NrThread>();
  /** Space each core of this thread currently runs (-1: none). */
  readonly current: Int32Array;
  private readonly resp = new Int32Array(8);
  private readonly args = new Int32Array(13);
  readonly skipShootdown: boolean;
  readonly skipReplicaSync: boolean;
  readonly skipCowCopy: boolean;
  /** Kernel mode 'lock': the single-copy baseline instead of node replication. */
  readonly lockMode: boolean;

  constructor(readonly v: KernelViews) {
    this.current = new Int32Array(v.replicaOf.length).fill(-1);
    this.skipShootdown = v.inject.includes('skip-shootdown');
    this.skipReplicaSync = v.inject.includes('skip-replica-sync');
    this.skipCowCopy = v.inject.includes('skip-cow-copy');
    this.cowPolicy = v.cow ?? 'default';
    this.lockMode = v.mode === 'lock';
  }

  get maxSpaces(): number {
    return this.v.klayout.config.maxSpaces;
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

  vspace(s: number): VSpace {
    let x = this.vspaces[s];
    if (!x) {
      x = new VSpace(this.v.klayout, this.v.k, this.v.mem, s, (f) => this.v.frames.free(f));
      this.vspaces[s] = x;
    }
    return x;
  }

  nr(s: number): Nr {
    let x = this.nrs[s];
    if (!x) {
      x = new Nr(this.v.nrLayout, this.v.nrw, s, this.vspace(s), this.v.replicaOf, this.v.waitLimitMs, (q) => this.pokeNode(s, q));
      this.nrs[s] = x;
    }
    return x;
  }

  /** The Cpu this thread drives for each core (to send IPIs from NR's lagging hook). */
  private readonly cpus = new Map<number, Cpu>();

  /**
   * NR's lagging hook: replica q of space s holds the log back. Asks one halted core of node q
   * (if there is one) to advance it; the writer advances it itself meanwhile. Never waits.
   */
  private pokeNode(s: number, q: number): void {
    const me = this.sender;
    if (!me) return;
    for (let c = 0; c < this.v.replicaOf.length; c++) {
      if (this.v.replicaOf[c] !== q || c === me.id || !me.isHalted(c)) continue;
      if (me.sendIpi(c, IPI_REPLICA_ADVANCE, s, 0, 0, 0, 0, true) === IPI_OK) this.stats.advanceIpis++;
      return;
    }
  }

  /** The core on whose behalf this thread currently runs NR (for the lagging hook). */
  private sender: Cpu | undefined;

  /** NR's view of core c, polling `cpu` (if any) while it waits. */
  thread(c: number, cpu?: Cpu): NrThread {
    if (cpu) this.sender = cpu;
    let t = this.threads.get(c);
    if (!t) {
      t = {
        id: c, replica: this.v.replicaOf[c], poll: cpu ? () => cpu.poll() : () => {}, combining: 0,
        bp: cpu ? (id) => cpu.breakpoint(id) : undefined,
        trace: cpu?.tracer ? (phase, what) => cpu.trace(phase, what) : undefined,
      };
      this.threads.set(c, t);
    }
    return t;
  }

  isLive(s: number): boolean {
    return s >= 0 && s < this.maxSpaces && Atomics.load(this.v.k, this.v.klayout.spaceBase(s) + S_STATE) === 1;
  }

  // ---- the controller's side: create and destroy (no core may use the space meanwhile) -----------

  /** Creates an address space: an empty replica per node. Returns its number, or -1 - OUT_OF_MEMORY / -1 - ALREADY_MAPPED (no free slot). */
  createSpace(): number {
    const { k, klayout, frames } = this.v;
    for (let s = 0; s < this.maxSpaces; s++) {
      const b = klayout.spaceBase(s);
      if (Atomics.compareExchange(k, b + S_STATE, 0, 2) !== 0) continue;
      k.fill(0, b + S_ACTIVE, b + S_ACTIVE + klayout.maskWords);
      // A new generation: cores that still cache translations of an earlier space with this
      // number (and PCID) flush them when they first switch in.
      Atomics.add(k, b + S_TLBGEN, 1);
      const roots: number[] = [];
      for (let r = 0; r < klayout.config.nodes; r++) {
        const f = frames.allocZeroed(r);
        if (f === NO_FRAME) {
          for (const x of roots) frames.free(x);
          Atomics.store(k, b + S_STATE, 0);
          return -1 - OUT_OF_MEMORY;
        }
        roots.push(f);
      }
      for (let r = 0; r < klayout.config.nodes; r++) {
        const rb = klayout.replicaBase(s, r);
        k.fill(0, rb, rb + klayout.replicaWords);
        k[rb + SR_ROOT] = roots[r];
        this.vspace(s).db(r).reset();
      }
      this.nr(s).reset();
      k[b + S_GEN]++;
      Atomics.store(k, b + S_STATE, 1);
      return s;
    }
    return -1 - ALREADY_MAPPED;
  }

  /**
   * Destroys space s: syncs every replica, frees every data frame still mapped (returned to the
   * caller's `freeData`), every page-table frame, the pools and the roots. Controller only, with
   * no core running s.
   */
  destroySpace(s: number, freeData: (pfn: number, pages: number, rights: number) => void, cpu?: Cpu): void {
    const { k, klayout, frames, mem } = this.v;
    if (!this.isLive(s)) panic(`Kernel.destroySpace: space ${s} is not live`);
    if (cpu) this.forget(cpu, s);
    const holders = this.activeCores(s);
    if (holders.length > 0) panic(`Kernel.destroySpace: space ${s} is destroyed while cores ${holders.join(',')} may hold its translations`);
    this.syncAll(s);
    for (const e of this.vspace(s).db(0).entries()) freeData(e.pfn, e.pages, e.rights);
    for (let r = 0; r < klayout.config.nodes; r++) {
      const rb = klayout.replicaBase(s, r);
      const root = k[rb + SR_ROOT];
      const tables = tableFrames(mem, root);
      for (const t of tables) frames.free(t);
      for (let i = 0; i < k[rb + SR_COUNT]; i++) frames.free(k[rb + SR_FRAMES + i]);
      k[rb + SR_COUNT] = 0;
      k[rb + SR_ROOT] = 0;
    }
    Atomics.store(k, klayout.spaceBase(s) + S_STATE, 0);
  }

  /** Brings every replica of s up to date, acting on the controller's behalf (no core running). */
  syncAll(s: number): void {
    for (let r = 0; r < this.v.klayout.config.nodes; r++) {
      const c = this.v.replicaOf.indexOf(r);
      this.sync(s, c);
    }
  }

  // ---- the space lock: mapping changes share it, a fork's snapshot takes it alone ---------------

  private spins = 0;

  /** One step of a bounded wait: poll, and every 64 steps yield the CPU for 50 us (as NR's waits do). */
  private waitOnce(cpu: Cpu | undefined, deadline: number, what: string): number {
    cpu?.poll();
    if ((++this.spins & 63) === 0) Atomics.wait(this.v.k, this.v.klayout.zeroPageWord, Atomics.load(this.v.k, this.v.klayout.zeroPageWord), 0.05);
    const now = Date.now();
    if (deadline === 0) return now + this.v.waitLimitMs;
    if (now > deadline) panic(`Kernel: ${cpu ? `core ${cpu.id}` : 'the controller'} waited ${this.v.waitLimitMs} ms for ${what}`);
    return deadline;
  }

  /** Takes space s's lock shared (a mapping change), waiting while a fork holds or wants it. */
  lockShared(s: number, cpu?: Cpu): void {
    const k = this.v.k;
    const b = this.v.klayout.spaceBase(s);
    let deadline = 0;
    for (;;) {
      const v = Atomics.load(k, b + S_RWLOCK);
      if (v >= 0 && Atomics.load(k, b + S_FORKING) === 0 && Atomics.compareExchange(k, b + S_RWLOCK, v, v + 1) === v) return;
      deadline = this.waitOnce(cpu, deadline, `space ${s}'s lock (a fork holds it)`);
    }
  }

  unlockShared(s: number): void {
    Atomics.sub(this.v.k, this.v.klayout.spaceBase(s) + S_RWLOCK, 1);
  }

  /** Runs fn holding space s's lock shared. */
  private shared<T>(s: number, cpu: Cpu | undefined, fn: () => T): T {
    this.lockShared(s, cpu);
    try {
      return fn();
    } finally {
      this.unlockShared(s);
    }
  }

  /** Takes space s's lock alone (a fork): announces itself, then waits for changes in flight to finish. */
  lockExclusive(s: number, cpu?: Cpu): void {
    const k = this.v.k;
    const b = this.v.klayout.spaceBase(s);
    let deadline = 0;
    while (Atomics.compareExchange(k, b + S_FORKING, 0, 1) !== 0) deadline = this.waitOnce(cpu, deadline, `another fork of space ${s}`);
    deadline = 0;
    while (Atomics.compareExchange(k, b + S_RWLOCK, 0, -1) !== 0) deadline = this.waitOnce(cpu, deadline, `mapping changes of space ${s} to finish`);
  }

  unlockExclusive(s: number): void {
    const k = this.v.k;
    const b = this.v.klayout.spaceBase(s);
    Atomics.store(k, b + S_RWLOCK, 0);
    Atomics.store(k, b + S_FORKING, 0);
  }

  // ---- the two ways to run an address-space operation: NR, or one copy behind a lock ------------

  /** The replica core c uses: its node's under NR, the single copy (replica 0) under the lock baseline. */
  replicaFor(c: number): number {
    return this.lockMode ? 0 : this.v.replicaOf[c];
  }

  /** Runs a mutating operation (args in this.args) on space s for core c; the response lands in this.resp. */
  private exec(s: number, c: number, cpu: Cpu | undefined, op: number): void {
    if (!this.lockMode) {
      this.nr(s).execute(this.thread(c, cpu), op, this.args, this.resp);
      return;
    }
    this.writeLock(s, cpu);
    try {
      this.vspace(s).apply(0, op, this.args, 0, this.resp, 0);
    } finally {
      Atomics.store(this.v.k, this.v.klayout.lockBase(s), 0);
    }
  }

  /** Runs a read of space s for core c against an up-to-date replica, under its reader lock. */
  private read<T>(s: number, c: number, cpu: Cpu | undefined, fn: (r: number) => T): T {
    if (!this.lockMode) return this.nr(s).read(this.thread(c, cpu), fn);
    const { k, klayout } = this.v;
    const flag = klayout.lockBase(s) + (1 + c) * K_LINE;
    let deadline = 0;
    for (;;) {
      Atomics.store(k, flag, 1);
      if (Atomics.load(k, klayout.lockBase(s)) === 0) break;
      Atomics.store(k, flag, 0);
      while (Atomics.load(k, klayout.lockBase(s)) !== 0) deadline = this.waitOnce(cpu, deadline, `space ${s}'s writer (lock baseline)`);
    }
    try {
      return fn(0);
    } finally {
      Atomics.store(k, flag, 0);
    }
  }

  /** Brings core c's replica of s up to date (nothing to do for the single copy of the baseline). */
  private sync(s: number, c: number, cpu?: Cpu): void {
    if (!this.lockMode) this.nr(s).sync(this.thread(c, cpu));
  }

  /** The baseline's writer side: one writer at a time (CAS), then every reader gone (writer preference). */
  private writeLock(s: number, cpu: Cpu | undefined): void {
    const { k, klayout } = this.v;
    const w = klayout.lockBase(s);
    let deadline = 0;
    while (Atomics.load(k, w) !== 0 || Atomics.compareExchange(k, w, 0, 1) !== 0) deadline = this.waitOnce(cpu, deadline, `space ${s}'s writer lock (lock baseline)`);
    deadline = 0;
    for (let c = 0; c < this.v.replicaOf.length; c++) {
      while (Atomics.load(k, w + (1 + c) * K_LINE) !== 0) deadline = this.waitOnce(cpu, deadline, `core ${c} to leave space ${s}'s read side (lock baseline)`);
    }
  }

  // ---- reservations of page-table frames ----------------------------------------------------

  /**
   * Makes sure every replica's pool holds `need` more frames than already promised, allocating
   * from each replica's own node. All or nothing: false (nothing reserved) when a node is full.
   */
  private reserveTables(s: number, need: number): boolean {
    // Nothing missing (the common case): no pool is touched, so a map on one node does not take
    // every other node's pool lock.
    if (need === 0) return true;
    const { k, klayout, frames } = this.v;
    const done: number[] = [];
    for (let r = 0; r < (this.lockMode ? 1 : klayout.config.nodes); r++) {
      const b = klayout.replicaBase(s, r);
      lockPool(k, b);
      let ok = true;
      while (k[b + SR_COUNT] - k[b + SR_RESERVED] < need) {
        if (k[b + SR_COUNT] >= klayout.config.ptPoolFrames) {
          ok = false;
          break;
        }
        const f = frames.alloc(r);
        if (f === NO_FRAME) {
          ok = false;
          break;
        }
        k[b + SR_FRAMES + k[b + SR_COUNT]] = f;
        k[b + SR_COUNT]++;
      }
      if (ok) k[b + SR_RESERVED] += need;
      Atomics.store(k, b + SR_LOCK, 0);
      if (!ok) {
        for (const q of done) {
          const qb = klayout.replicaBase(s, q);
          lockPool(k, qb);
          k[qb + SR_RESERVED] -= need;
          Atomics.store(k, qb + SR_LOCK, 0);
        }
        return false;
      }
      done.push(r);
    }
    return true;
  }

  // ---- operations ---------------------------------------------------------------------------

  private checkSpace(s: number): void {
    if (!this.isLive(s)) panic(`Kernel: address space ${s} does not exist`);
  }

  /**
   * MapFrame: maps [va, va + size) to physical [pa, pa + size) with rights (R_*). Errors:
   * INVALID_BASE (misaligned or outside the user half), INVALID_FRAME (zero size, misaligned or
   * outside memory), ALREADY_MAPPED with the lowest conflicting VA, OUT_OF_MEMORY. Never shoots down.
   */
  map(c: number, s: number, va: number, pa: number, size: number, rights: number, cpu?: Cpu): MapResult {
    this.checkSpace(s);
    return this.shared(s, cpu, () => this.doMap(c, s, va, pa, size, rights, cpu));
  }

  private doMap(c: number, s: number, va: number, pa: number, size: number, rights: number, cpu?: Cpu): MapResult {
    this.stats.maps++;
    if (!Number.isSafeInteger(va) || va % PAGE !== 0 || va < 0 || va + Math.max(size, 0) > USER_TOP) return this.err({ code: INVALID_BASE });
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE !== 0 || !Number.isSafeInteger(pa) || pa % PAGE !== 0 || pa < 0 ||
        pa / PAGE + size / PAGE > this.v.klayout.config.totalFrames) return this.err({ code: INVALID_FRAME });
    const pages = size / PAGE;
    const need = this.missingTables(s, this.replicaFor(c), va, pages);
    if (!this.reserveTables(s, need)) return this.err({ code: OUT_OF_MEMORY });
    const a = this.args;
    setVa(a, va);
    a[2] = pa / PAGE;
    a[3] = pages;
    a[4] = rights;
    a[5] = need;
    this.exec(s, c, cpu, VS_MAP);
    const code = this.resp[0];
    if (code === ALREADY_MAPPED) return this.err({ code, conflict: this.resp[1] * 4294967296 + (this.resp[2] >>> 0) });
    if (code !== OK) return this.err({ code });
    return { code };
  }

  /**
   * Page-table frames mapping [va, va + pages) may still need: tables missing from replica r now.
   * Tables are never freed while the space lives, so the state the operation meets in the log
   * has at least these tables: an upper bound for every replica.
   */
  private missingTables(s: number, r: number, va: number, pages: number): number {
    const mem = this.v.mem;
    const root = this.vspace(s).root(r);
    const last = va + pages * PAGE - 1;
    let need = 0;
    // Levels: PDPT (each 512 GiB, found in the PML4), PD (each 1 GiB, in a PDPT), PT (each 2 MiB, in a PD).
    for (const [span, parentShift] of [[39, 39], [30, 30], [21, 21]] as const) {
      for (let v = Math.floor(va / 2 ** span) * 2 ** span; v <= last; v += 2 ** span) {
        const w = findEntry(mem, root, false, Math.floor(v / 4294967296) | 0, v % 4294967296 | 0, parentShift);
        if (w < 0 || (Atomics.load(mem, w) & PTE_P) === 0) need++;
      }
    }
    return need;
  }

  private err<T extends { code: number }>(r: T): T {
    this.stats.errors++;
    return r;
  }

  /** Unmap: removes the mapping based at va and shoots down stale translations. The caller frees the frames. */
  unmap(cpu: Cpu, s: number, va: number): UnmapResult {
    this.checkSpace(s);
    return this.shared(s, cpu, () => this.doUnmap(cpu, s, va));
  }

  private doUnmap(cpu: Cpu, s: number, va: number): UnmapResult {
    this.stats.unmaps++;
    const a = this.args;
    setVa(a, va);
    this.exec(s, cpu.id, cpu, VS_UNMAP);
    if (this.resp[0] !== OK) return this.err({ code: this.resp[0], pfn: -1, pages: 0 });
    const pfn = this.resp[1];
    const pages = this.resp[2];
    this.shootdown(cpu, s, va, pages);
    return { code: OK, pfn, pages };
  }

  /**
   * Adjust: sets the access rights (R_WRITE, R_USER, R_NX) of the mapping based at va; its kind
   * stays (a copy-on-write page made writable stays copy-on-write until its first write copies
   * it, as Linux's mprotect does). Returns the mapping's pages. Shoots down when any right the
   * hardware sees decreases (a permission increase costs at most one spurious fault).
   */
  adjust(cpu: Cpu, s: number, va: number, rights: number): { code: number; pages: number } {
    this.checkSpace(s);
    return this.shared(s, cpu, () => this.doAdjust(cpu, s, va, rights, true, R_ACCESS));
  }

  /** Adjust as the kernel uses it: `mask` says which bits of the rights word change (R_ALL: kinds too). */
  private doAdjust(cpu: Cpu, s: number, va: number, rights: number, shoot = true, mask = R_ALL): { code: number; pages: number } {
    this.stats.adjusts++;
    const a = this.args;
    setVa(a, va);
    a[2] = rights;
    a[3] = mask;
    this.exec(s, cpu.id, cpu, VS_ADJUST);
    if (this.resp[0] !== OK) return this.err({ code: this.resp[0], pages: 0 });
    const pages = this.resp[1];
    const old = this.resp[2];
    rights = this.resp[3];
    // What the hardware sees decides: a writable leaf that becomes read-only (R_WRITE cleared, or
    // the page turned copy-on-write) leaves stale writable translations behind.
    const decreased = (leafWritable(old) && !leafWritable(rights)) || ((old & R_USER) !== 0 && (rights & R_USER) === 0) ||
      ((old & R_NX) === 0 && (rights & R_NX) !== 0);
    if (decreased && shoot) this.shootdown(cpu, s, va, pages);
    return { code: OK, pages };
  }

  /** Resolve: syncs the local replica and looks va up. Returns the physical address and rights. */
  resolve(c: number, s: number, va: number, cpu?: Cpu): ResolveResult {
    this.checkSpace(s);
    this.stats.resolves++;
    const vs = this.vspace(s);
    const e = this.read(s, c, cpu, (r) => vs.db(r).find(va));
    if (!e) return { code: NOT_MAPPED };
    return { code: OK, pa: e.pfn * PAGE + (va - e.va), rights: e.rights };
  }

  // ---- the process table (shared memory) -----------------------------------------------------

  /** Takes a free pid for a process running `space` (sleeping), with its parent; -1 when the table is full. */
  spawn(space: number, parent: number): number {
    const { k, klayout } = this.v;
    for (let pid = 0; pid < this.maxSpaces; pid++) {
      const b = klayout.procBase + pid * K_LINE;
      if (Atomics.compareExchange(k, b + P_STATE, PROC_FREE, PROC_SLEEPING) !== PROC_FREE) continue;
      Atomics.store(k, b + P_SPACE, space);
      Atomics.store(k, b + P_PARENT, parent);
      return pid;
    }
    return -1;
  }

  /** A process's state, space and parent (state PROC_FREE for an unused pid). */
  process(pid: number): { state: number; space: number; parent: number } {
    const { k, klayout } = this.v;
    if (pid < 0 || pid >= this.maxSpaces) return { state: PROC_FREE, space: -1, parent: -1 };
    const b = klayout.procBase + pid * K_LINE;
    return { state: Atomics.load(k, b + P_STATE), space: Atomics.load(k, b + P_SPACE), parent: Atomics.load(k, b + P_PARENT) };
  }

  /** Spaces of the processes that are alive (running or sleeping). */
  liveSpaces(): number[] {
    const out: number[] = [];
    for (let pid = 0; pid < this.maxSpaces; pid++) {
      const p = this.process(pid);
      if (p.state === PROC_RUNNING || p.state === PROC_SLEEPING) out.push(p.space);
    }
    return out;
  }

  /** The pid whose process runs space s (alive or zombie), or -1. */
  pidOf(s: number): number {
    for (let pid = 0; pid < this.maxSpaces; pid++) {
      const p = this.process(pid);
      if (p.state !== PROC_FREE && p.space === s) return pid;
    }
    return -1;
  }

  /**
   * Reaps every terminated process (a zombie): destroys its space, releasing its frames, and
   * frees its pid. Controller only, with no core running (or holding translations of) it.
   */
  reapZombies(): number {
    let n = 0;
    for (let pid = 0; pid < this.maxSpaces; pid++) {
      const p = this.process(pid);
      if (p.state !== PROC_TERMINATED) continue;
      if (this.isLive(p.space)) this.destroySpace(p.space, (pfn, pages, rights) => this.releaseMapping(p.space, pfn, pages, rights));
      this.setProcessState(pid, PROC_FREE);
      n++;
    }
    return n;
  }

  /** Sets a process's state (running, sleeping, terminated, or free to reap it). */
  setProcessState(pid: number, state: number): void {
    Atomics.store(this.v.k, this.v.klayout.procBase + pid * K_LINE + P_STATE, state);
  }

  // ---- frames with references, the zero page, fork and copy-on-write ----------------------------

  /** Records that space s maps frame pfn (the oracle's shadow owners; spaces above 31 are not tracked). */
  ownerAdd(pfn: number, s: number): void {
    if (s < 32) Atomics.or(this.v.k, this.v.klayout.ownerBase + pfn, 1 << s);
  }

  /** Records that space s no longer maps frame pfn (after its shootdown returned). */
  ownerRemove(pfn: number, s: number): void {
    if (s < 32) Atomics.and(this.v.k, this.v.klayout.ownerBase + pfn, ~(1 << s));
  }

  /** Drops space s's hold on a data frame: its owner bit, then its reference (freed at zero). */
  release(pfn: number, s: number): void {
    this.ownerRemove(pfn, s);
    this.dropRef(pfn);
  }

  /** The frames a dying space s held, as destroySpace reports them: all but the zero page lose a reference. */
  releaseMapping(s: number, pfn: number, pages: number, rights: number): void {
    if ((rights & R_ZERO) !== 0) return;
    for (let p = 0; p < pages; p++) this.release(pfn + p, s);
  }

  /** References to data frame pfn from mappings. */
  refcount(pfn: number): number {
    return Atomics.load(this.v.k, this.v.klayout.refBase + pfn);
  }

  /** Sets a new frame's references (the thread that allocated it, before publishing it). */
  setRefcount(pfn: number, n: number): void {
    Atomics.store(this.v.k, this.v.klayout.refBase + pfn, n);
  }

  /** Drops one reference to pfn; frees the frame when it was the last. Returns the references left. */
  dropRef(pfn: number): number {
    const left = Atomics.sub(this.v.k, this.v.klayout.refBase + pfn, 1) - 1;
    if (left < 0) panic(`Kernel.dropRef: frame ${pfn} had no reference`);
    if (left === 0) this.v.frames.free(pfn);
    return left;
  }

  /** The single read-only zero page (allocated on first use, never freed). Any thread. */
  zeroPage(): number {
    const { k, klayout, frames } = this.v;
    const z = Atomics.load(k, klayout.zeroPageWord);
    if (z !== 0) return z - 1;
    const f = frames.allocZeroed(0);
    if (f === NO_FRAME) return NO_FRAME;
    const prev = Atomics.compareExchange(k, klayout.zeroPageWord, 0, f + 1);
    if (prev !== 0) {
      frames.free(f);
      return prev - 1;
    }
    Atomics.store(k, klayout.ownerBase + f, -1); // every space may read it
    return f;
  }

  /** Maps one demand-zero page at va: the zero page, read-only, writable on demand when `rights` has R_WRITE. */
  mapZero(c: number, s: number, va: number, rights: number, cpu?: Cpu): MapResult {
    const z = this.zeroPage();
    if (z === NO_FRAME) return this.err({ code: OUT_OF_MEMORY });
    return this.map(c, s, va, z * PAGE, PAGE, rights | R_ZERO, cpu);
  }

  /** Points the one-page mapping at va at frame pfn with rights, then shoots down the old translation. The caller holds the space lock. */
  private doRemap(cpu: Cpu, s: number, va: number, pfn: number, rights: number): { code: number; oldPfn: number; oldRights: number } {
    const a = this.args;
    setVa(a, va);
    a[2] = pfn;
    a[3] = rights;
    this.exec(s, cpu.id, cpu, VS_REMAP);
    if (this.resp[0] !== OK) return { code: this.resp[0], oldPfn: -1, oldRights: 0 };
    const oldPfn = this.resp[1];
    const oldRights = this.resp[2];
    this.shootdown(cpu, s, va, 1);
    return { code: OK, oldPfn, oldRights };
  }

  /**
   * Fork: a new address space with every mapping of `parent` except wired and I/O ones. Private
   * frames become copy-on-write in both (read-only, one more reference each); demand-zero pages
   * stay demand-zero. The parent's now stale writable translations are shot down. Returns the
   * child's space, or -1 - OUT_OF_MEMORY. Runs on cpu, which runs `parent`.
   */
  fork(cpu: Cpu, parent: number): number {
    this.checkSpace(parent);
    const child = this.createSpace();
    if (child < 0) return child;
    this.lockExclusive(parent, cpu);
    try {
      return this.forkLocked(cpu, parent, child);
    } finally {
      this.unlockExclusive(parent);
    }
  }

  private forkLocked(cpu: Cpu, parent: number, child: number): number {
    this.sync(parent, cpu.id, cpu);
    const entries = this.read(parent, cpu.id, cpu, (r) => this.vspace(parent).db(r).entries());
    let madeCow = false;
    try {
      return this.shareInto(cpu, parent, child, entries, () => (madeCow = true));
    } finally {
      // One shootdown for all of the parent's now read-only pages (as Linux flushes the mm after
      // copying it): the whole PCID on every core running the parent.
      if (madeCow) this.shootdown(cpu, parent, 0, SHOOTDOWN_FULL_FLUSH_PAGES + 1);
    }
  }

  private shareInto(cpu: Cpu, parent: number, child: number, entries: MapEntry[], madeCow: () => void): number {
    for (const e of entries) {
      if ((e.rights & (R_WIRED | R_IO)) !== 0) continue;
      let rights = e.rights;
      if ((rights & R_ZERO) === 0) {
        rights |= R_COW;
        for (let p = 0; p < e.pages; p++) {
          Atomics.add(this.v.k, this.v.klayout.refBase + e.pfn + p, 1);
          this.ownerAdd(e.pfn + p, child);
        }
        if (rights !== e.rights) {
          this.doAdjust(cpu, parent, e.va, rights, false);
          madeCow();
        }
      }
      const m = this.doMap(cpu.id, child, e.va, e.pfn * PAGE, e.pages * PAGE, rights, cpu);
      if (m.code !== OK) {
        // Out of memory: undo the child (its references go with it); the parent keeps its COW rights.
        this.destroySpace(child, (pfn, pages, r) => this.releaseMapping(child, pfn, pages, r));
        if ((rights & R_ZERO) === 0) for (let p = 0; p < e.pages; p++) this.release(e.pfn + p, child);
        return -1 - OUT_OF_MEMORY;
      }
    }
    return child;
  }

  /** Copy-on-write policy: 'default' (the last sharer's write reuses the frame) or 'mh' (it becomes private read-only first). */
  cowPolicy: 'default' | 'mh' = 'default';
  /** Called for each zero-page fill and copy: the Simulator prints PGZERO / PGCOPY. */
  onEvent: ((kind: 'zero' | 'copy' | 'reuse', va: number) => void) | null = null;

  /**
   * A write to a copy-on-write or demand-zero page of space s: allocate and zero (demand-zero),
   * copy (other sharers remain), or reuse the frame (this is the last sharer). Returns true when
   * the write may be retried. Copies before dropping the reference, so a sharer that reuses the
   * frame never writes it while it is being copied.
   */
  private writeFault(cpu: Cpu, s: number, va: number, pa: number, rights: number): boolean {
    return this.shared(s, cpu, () => {
      // The mapping may have changed (a fork, another core's fault) before we got the lock.
      const now = this.resolve(cpu.id, s, va, cpu);
      this.stats.resolves--;
      if (now.code !== OK || (now.rights & (R_COW | R_ZERO)) === 0) return now.code === OK;
      return this.writeFaultLocked(cpu, s, va, now.pa, now.rights);
    });
  }

  private writeFaultLocked(cpu: Cpu, s: number, va: number, pa: number, rights: number): boolean {
    const { frames, mem, k, klayout } = this.v;
    const page = va - (va % PAGE);
    const old = Math.floor(pa / PAGE);
    const plain = (rights & ~(R_COW | R_ZERO)) | R_WRITE;
    if ((rights & R_ZERO) !== 0) {
      const nf = frames.allocAny(cpu.node);
      if (nf === NO_FRAME) return false;
      frames.zero(nf);
      this.setRefcount(nf, 1);
      this.ownerAdd(nf, s);
      if (this.doRemap(cpu, s, page, nf, plain).code !== OK) {
        this.release(nf, s);
        return false;
      }
      this.stats.zeroFills++;
      this.onEvent?.('zero', page);
      return true;
    }
    if (Atomics.load(k, klayout.refBase + old) === 1) {
      // The last sharer: the same frame becomes writable. MH's policy makes it private read-only
      // instead (the write permission is lost), and the retried write faults once more.
      this.doAdjust(cpu, s, page, this.cowPolicy === 'mh' ? (rights & ~(R_COW | R_WRITE)) | R_WAS_COW : plain);
      this.stats.cowReuses++;
      this.onEvent?.('reuse', page);
      return true;
    }
    if (this.skipCowCopy) {
      // Injected fault: the shared frame simply becomes writable here; the other sharers see our writes.
      this.doAdjust(cpu, s, page, plain);
      return true;
    }
    cpu.breakpoint(BP_BEFORE_COW_COPY);
    const nf = frames.allocAny(cpu.node);
    if (nf === NO_FRAME) return false;
    mem.copyWithin(nf * 1024, old * 1024, old * 1024 + 1024);
    this.setRefcount(nf, 1);
    this.ownerAdd(nf, s);
    if (this.doRemap(cpu, s, page, nf, plain).code !== OK) {
      this.release(nf, s);
      return false;
    }
    this.release(old, s); // the shootdown has returned: s no longer reaches the old frame
    this.stats.cowCopies++;
    this.onEvent?.('copy', page);
    return true;
  }

  // ---- cores: switch, faults, shootdowns ----------------------------------------------------------

  private maskWord(s: number, c: number): number {
    return this.v.klayout.spaceBase(s) + S_ACTIVE + (c >>> 5);
  }

  /** PCID of space s (CR3 bits 11:0 under CR4.PCIDE): s + 1, so PCID 0 stays the kernel's. */
  pcid(s: number): number {
    return s + 1;
  }

  /**
   * Runs space s on cpu: joins s's active mask, syncs the local replica (so that an unmap that
   * did not see this core in the mask is already applied here), flushes s's PCID if a shootdown
   * happened since this core last ran s (the TLB generation, as Linux's tlb_gen), loads CR3 with
   * the node's root and s's PCID without flushing, then leaves the previous space's mask. A switch
   * back to a space nobody changed keeps its translations.
   */
  switchTo(cpu: Cpu, s: number): void {
    this.checkSpace(s);
    const prev = this.current[cpu.id];
    if (prev === s) return;
    const { k, klayout } = this.v;
    this.stats.switches++;
    cpu.trace(PH_INSTANT, TR_SWITCH, s);
    if (!cpu.regs.pcide) cpu.movCr4(cpu.regs.cr4 | CR4_PCIDE);
    Atomics.or(k, this.maskWord(s, cpu.id), 1 << (cpu.id & 31));
    this.sync(s, cpu.id, cpu);
    const gen = Atomics.load(k, klayout.spaceBase(s) + S_TLBGEN);
    if (Atomics.load(k, klayout.coreGen(cpu.id, s)) !== gen) {
      cpu.invpcid(1, this.pcid(s), 0, 0);
      Atomics.store(k, klayout.coreGen(cpu.id, s), gen);
      this.stats.generationFlushes++;
    }
    cpu.movCr3(CR3_NOFLUSH_HI, this.vspace(s).root(this.replicaFor(cpu.id)) * PAGE + this.pcid(s));
    if (prev >= 0) this.leaveMask(cpu, prev);
    this.current[cpu.id] = s;
  }

  /**
   * Takes cpu out of s's active mask. It keeps s's translations under s's PCID; the generation it
   * recorded when it switched in is older than any shootdown since, so it flushes them if one
   * happened before it runs s again. (Recording a newer generation here would race with an
   * initiator that bumps the generation and then reads the mask.)
   */
  private leaveMask(cpu: Cpu, s: number): void {
    Atomics.and(this.v.k, this.maskWord(s, cpu.id), ~(1 << (cpu.id & 31)));
  }

  /** Leaves the current space: flushes the TLB's non-global entries, then leaves the mask. */
  leave(cpu: Cpu): void {
    const prev = this.current[cpu.id];
    cpu.flushNonGlobal();
    if (prev >= 0) this.leaveMask(cpu, prev);
    this.current[cpu.id] = -1;
  }

  /** Drops cpu's translations of space s and takes it out of s's mask (before s is destroyed). */
  forget(cpu: Cpu, s: number): void {
    if (this.current[cpu.id] === s) this.current[cpu.id] = -1;
    cpu.invpcid(1, this.pcid(s), 0, 0);
    Atomics.and(this.v.k, this.maskWord(s, cpu.id), ~(1 << (cpu.id & 31)));
  }

  /** Cores in s's active mask. */
  activeCores(s: number): number[] {
    const out: number[] = [];
    const base = this.v.klayout.spaceBase(s) + S_ACTIVE;
    for (let w = 0; w < this.v.klayout.maskWords; w++) {
      const m = Atomics.load(this.v.k, base + w);
      for (let b = 0; b < 32; b++) if ((m >>> b) & 1) out.push(w * 32 + b);
    }
    return out;
  }

  /**
   * The page-fault handler: a #PF in the current space runs Resolve (which syncs the replica).
   * A mapping that allows the access means the fault was spurious (a lagging replica, or a stale
   * read-only translation): returns true, retry. Otherwise the access is invalid: false, deliver.
   */
  onPageFault(cpu: Cpu, vhi: number, vlo: number, acc: number, code: number): boolean {
    const s = this.current[cpu.id];
    if (s < 0 || faultVector(code) !== VEC_PF || vhi < 0) return false;
    const va = vhi * 4294967296 + (vlo >>> 0);
    cpu.trace(PH_BEGIN, TR_FAULT, vlo);
    try {
      return this.handleFault(cpu, s, va, acc);
    } finally {
      cpu.trace(PH_END, TR_FAULT, vlo);
    }
  }

  private handleFault(cpu: Cpu, s: number, va: number, acc: number): boolean {
    cpu.breakpoint(BP_BEFORE_RESOLVE);
    const r = this.resolve(cpu.id, s, va, cpu);
    this.stats.resolves--; // counted as a fault, not as a program's Resolve
    if (r.code === OK && acc === ACC_WRITE && (r.rights & R_WRITE) !== 0 && (r.rights & (R_COW | R_ZERO)) !== 0) {
      if (this.writeFault(cpu, s, va, r.pa, r.rights)) return true;
      this.stats.invalidAccesses++;
      return false;
    }
    if (r.code === OK && acc === ACC_WRITE && (r.rights & R_WAS_COW) !== 0) {
      // MH: a page made private read-only by a copy-on-write fault faults again on the retried
      // write; the user-level handler (MH's MRG library) makes it writable.
      this.shared(s, cpu, () => this.doAdjust(cpu, s, va - (va % PAGE), (r.rights & ~R_WAS_COW) | R_WRITE));
      this.stats.spuriousFaults++;
      return true;
    }
    let ok = r.code === OK;
    if (r.code === OK) {
      if (acc === ACC_WRITE && !leafWritable(r.rights)) ok = false;
      if (acc === ACC_FETCH && (r.rights & R_NX) !== 0) ok = false;
      if (cpu.regs.cpl === 3 && (r.rights & R_USER) === 0) ok = false;
    }
    if (ok) this.stats.spuriousFaults++;
    else this.stats.invalidAccesses++;
    return ok;
  }

  /**
   * One 8-byte access (load, store of hi:lo, or fetch) by cpu, retried while the page-fault
   * handler finds its fault spurious or repairs it (zero page, copy-on-write), at most
   * FAULT_RETRIES times. Returns 0 (a loaded value in cpu.valHi:valLo) or the fault delivered.
   */
  access(cpu: Cpu, acc: number, vhi: number, vlo: number, hi = 0, lo = 0): number {
    const once = (): number => (acc === ACC_WRITE ? cpu.store64(vhi, vlo, hi, lo) : acc === ACC_FETCH ? cpu.fetch64(vhi, vlo) : cpu.load64(vhi, vlo));
    let r = once();
    for (let k = 0; k < FAULT_RETRIES && r !== 0 && this.onPageFault(cpu, vhi, vlo, acc, r); k++) r = once();
    return r;
  }

  /**
   * Shoots down [va, va + pages * 4 KiB) of space s: a request to every other core in the active
   * mask, the local flush, and the wait for every ack. Panics (naming the cores) past the bound.
   */
  shootdown(cpu: Cpu, s: number, va: number, pages: number): void {
    cpu.trace(PH_BEGIN, TR_SHOOTDOWN, pages);
    try {
      this.shootdownTraced(cpu, s, va, pages);
    } finally {
      cpu.trace(PH_END, TR_SHOOTDOWN, pages);
    }
  }

  private shootdownTraced(cpu: Cpu, s: number, va: number, pages: number): void {
    this.stats.shootdowns++;
    // First a new generation: a core that left s and comes back later flushes s's PCID; then the
    // cores running s now, who get the request.
    Atomics.add(this.v.k, this.v.klayout.spaceBase(s) + S_TLBGEN, 1);
    const hi = Math.floor(va / 4294967296) | 0;
    const lo = va % 4294967296 | 0;
    cpu.breakpoint(BP_BEFORE_SHOOTDOWN_IPIS);
    const targets = this.skipShootdown ? [] : this.activeCores(s).filter((c) => c !== cpu.id);
    for (const c of targets) {
      const r = cpu.sendIpi(c, IPI_SHOOTDOWN, s, hi, lo, pages);
      if (r === IPI_TARGET_OFFLINE) continue;
      if (r !== IPI_OK) panic(`Kernel.shootdown: core ${cpu.id} could not send to core ${c}: ${cpu.lastWaitWhat}`);
      this.stats.shootdownIpis++;
    }
    invalidateRange(cpu, this.pcid(s), hi, lo, pages, null);
    const w = cpu.waitAcks();
    if (w !== WAIT_OK) panic(`Kernel.shootdown: core ${cpu.id} (space ${s}, targets ${targets.join(',')}): ${cpu.lastWaitWhat}`);
  }

  /** Registers the shootdown and replica-advance receivers on cpu. */
  installHandlers(cpu: Cpu): void {
    cpu.handlers[IPI_REPLICA_ADVANCE] = (c, sender, s) => {
      c.ack(sender);
      this.stats.advancesReceived++;
      if (this.isLive(s)) this.sync(s, c.id, c);
    };
    cpu.handlers[IPI_SHOOTDOWN] = (c, sender, s, hi, lo, pages) => {
      c.ack(sender);
      this.stats.shootdownsReceived++;
      c.breakpoint(BP_BEFORE_RECEIVER_SYNC);
      if (!this.skipReplicaSync) this.sync(s, c.id, c);
      invalidateRange(c, this.pcid(s), hi, lo, pages, this.stats);
    };
  }
}

/** Puts va into a[0] (high half) and a[1] (low half). */
function setVa(a: Int32Array, va: number): void {
  a[0] = Math.floor(va / 4294967296);
  a[1] = va % 4294967296 | 0;
}

/**
 * Invalidates a range of the space with this PCID, whichever space the core runs now: INVPCID
 * type 0 page by page, or type 1 (the whole PCID) above the threshold.
 */
function invalidateRange(cpu: Cpu, pcid: number, hi: number, lo: number, pages: number, stats: KernelStats | null): void {
  if (pages > SHOOTDOWN_FULL_FLUSH_PAGES) {
    cpu.invpcid(1, pcid, 0, 0);
    if (stats) stats.fullFlushes++;
    return;
  }
  if (stats) stats.pageInvalidations += pages;
  for (let i = 0; i < pages; i++) {
    const v = (lo >>> 0) + i * PAGE;
    cpu.invpcid(0, pcid, (hi + Math.floor(v / 4294967296)) | 0, v | 0);
  }
}

/** Every page-table frame under a 4-level root, root included (user half). */
export function tableFrames(mem: Int32Array, root: number): number[] {
  const out = [root];
  const visit = (t: number, level: number): void => {
    for (let i = 0; i < (level === 4 ? 256 : 512); i++) {
      const lo = mem[t * FRAME_WORDS + i * 2];
      if ((lo & PTE_P) === 0 || (level < 4 && (lo & PTE_PS) !== 0)) continue;
      const f = entryFrame(lo, mem[t * FRAME_WORDS + i * 2 + 1]);
      out.push(f);
      if (level > 2) visit(f, level - 1);
    }
  };
  visit(root, 4);
  return out;
}

export { ALREADY_MAPPED, INVALID_BASE, INVALID_FRAME, NOT_MAPPED, OK, OUT_OF_MEMORY };
