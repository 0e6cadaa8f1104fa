// Placement of the kernel's shared state: the frame-owner table (the oracle's shadow owner of
// every frame), the address-space table (state, active-core mask, per-replica page-table root and
// page-table frame pool) and one mapping-database arena per address space and replica. The NR
// logs live in their own region (nr/layout.ts). Contended words sit alone on 64-byte lines.

import { arenaWords } from './mapdb.js';

export const K_LINE = 16;

export interface KernelConfig {
  cores: number;
  nodes: number;
  totalFrames: number;
  /** Address spaces that can exist at once (one NR instance each). */
  maxSpaces: number;
  /** Mappings one address space can hold (sizes its B+tree arenas). */
  maxMappings: number;
  /** Page-table frames each replica's pool can hold. */
  ptPoolFrames: number;
}

// Process-table line, relative to procBase + pid * K_LINE.
/** PROC_FREE, PROC_RUNNING, PROC_SLEEPING or PROC_TERMINATED. */
export const P_STATE = 0;
/** The process's address space. */
export const P_SPACE = 1;
/** The parent's pid, or -1. */
export const P_PARENT = 2;
// Thread-table line, relative to threadBase + tid * K_LINE (thread.ts).
/** THREAD_FREE, THREAD_RUNNABLE, THREAD_RUNNING, THREAD_BLOCKED or THREAD_EXITED. */
export const T_STATE = 0;
/** The thread's process. */
export const T_PID = 1;
/** The core running it (THREAD_RUNNING), else -1. */
export const T_CORE = 2;
/** Saved registers: PKRU (XSAVE's PKRU component), CPL and EFLAGS.AC. */
export const T_PKRU = 3;
export const T_CPL = 4;
export const T_AC = 5;
/** The thread's stack page (high half, then low half of its address). */
export const T_STACK = 6;
/** RPAL: the thread that called this one (rpalCall), + 1; 0 when none. */
export const T_CALLER = 8;
export const THREAD_FREE = 0;
export const THREAD_RUNNABLE = 1;
export const THREAD_RUNNING = 2;
export const THREAD_EXITED = 3;
/** A caller waiting in an RPAL call for its callee to return. */
export const THREAD_BLOCKED = 4;
/** Threads a process can have at once. */
export const THREADS_PER_PROCESS = 8;
export const PROC_FREE = 0;
export const PROC_RUNNING = 1;
export const PROC_SLEEPING = 2;
export const PROC_TERMINATED = 3;

// Address-space block, relative to spaceBase(s).
/** SPACE_FREE, SPACE_LIVE or SPACE_CREATING. Written: create/destroy. Read: everyone. */
export const S_STATE = 0;
export const SPACE_FREE = 0;
export const SPACE_LIVE = 1;
export const SPACE_CREATING = 2;
/** Generation, bumped at every create: names the space in messages. */
export const S_GEN = 1;
/** RPAL (rpal.ts): the space's 512 GiB slot + 1, or 0 when it is not in RPAL mode. Written: enterSlot. */
export const S_RPAL_SLOT = 2;
/** RPAL: bit a set while space a has this space's slot shared in (spaces 0-31). Written: share/unshare. Read: shootdowns. */
export const S_RPAL_SHARERS = 3;
/** RPAL: bit b set while space b's slot is shared into this space. Written: share/unshare. */
export const S_RPAL_SHARED = 4;
/** Protection keys the space has allocated (bit k: key k, 1-15). Written: pkeyAlloc (Atomics.or); a fork copies it. */
export const S_PKEYS = 5;
/** 1 while the space is an mshare region's host (mshare.ts). Written: mshareCreate. */
export const S_MSHARE_HOST = 6;
/** RPAL: the key (1-15) every later mapping in the space's slot takes, or 0. Written: setSlotKey. */
export const S_RPAL_KEY = 7;
/** RPAL: a sequence count of the links into this space made and undone (share/attach, unshare/detach), odd while one is under way: an oracle reads it around an access. Written: link, unlink (the space's lock held alone). */
export const S_RPAL_LINKSEQ = 8;
/**
 * Space lock (like Linux's mmap_lock): the number of mapping changes in flight, or -1 while a
 * fork snapshots the space. Written: cores (CAS). S_FORKING: a fork waits for the lock (new
 * changes hold back). Both on their own line.
 */
export const S_RWLOCK = K_LINE;
export const S_FORKING = K_LINE + 1;
/**
 * Bumped by a fork holding the lock, once per mapping it shares: a waiter whose bound runs out
 * while this moves is waiting for a slow holder, not a stuck one, and waits on.
 */
export const S_LOCK_PROGRESS = K_LINE + 2;
/**
 * A seqlock over the space's forks, bumped by a fork holding the lock alone as it begins and as it
 * ends (odd while one runs): MH's state oracle knows when a page's state may have changed under it.
 */
export const S_FORKS = K_LINE + 3;
/**
 * TLB generation of the space (Linux's tlb_gen): bumped by every shootdown and every create,
 * never reset. A core that switches back in with an older generation flushes the space's PCID.
 * Written: initiators (add). Read: cores switching in. Own line.
 */
export const S_TLBGEN = 3 * K_LINE;
/** Active-core mask: bit c of word c >> 5 set while core c runs this space. Written: cores (Atomics.or/and). Read: shootdown initiators. */
export const S_ACTIVE = 2 * K_LINE;
// Per replica r, at S_REPLICAS + r * replicaWords:
/**
 * The kernel half's lock of the space (0 free, 1 held): whoever writes its top-level kernel
 * entries (the creator copying the master, an eager update, a switch-in copy, a lazy fault) holds it.
 */
export const S_KLOCK = K_LINE + 4;
/** Root (PML4) frame of replica r's page tables. Written: create. Read: cores switching in, dumps. */
export const SR_ROOT = 0;
/** Pool lock (0 free, else 1 + holder thread). Written: reservers and appliers (CAS). */
export const SR_LOCK = K_LINE;
/** Frames in the pool, and frames promised to logged operations not yet applied here. */
export const SR_COUNT = 2 * K_LINE;
export const SR_RESERVED = 2 * K_LINE + 1;
/** Page-table frames this replica has taken from its pool (for conservation checks). */
export const SR_TABLES = 2 * K_LINE + 2;
/** The kernel-half generation this replica's top-level kernel entries were last copied at (the 'switch' method). */
export const SR_KGEN = 2 * K_LINE + 3;
/** The kernel's space only: 1 + the table a removal detached from this replica's master and has not freed yet (0: none). */
export const SR_LIMBO = 2 * K_LINE + 4;
/** The pool's frames. */
export const SR_FRAMES = 3 * K_LINE;

export class KernelLayout {
  /** Kernel header: word 0 = 1 + the zero page's frame (0 until first needed). Written: CAS. */
  readonly zeroPageWord = 0;
  /** The kernel half's generation: bumped whenever a top-level kernel entry of the master changes. */
  readonly kgenWord = 1;
  /** The kernel mapping lock (kmap and kunmap are serialised by it; 0 free, 1 + core holding it). */
  readonly kmutexWord = 2;
  /** The kernel's TLB generation: bumped by every kunmap, so a core that missed its shootdown flushes global entries when it next switches. */
  readonly ktlbGenWord = 3;
  /**
   * Bumped by the kernel mapping lock's holder as it moves (a space brought up to date, a kernel
   * shootdown request sent or acknowledged): its waiters' bound counts time without progress.
   */
  readonly kprogressWord = 4;
  /** Shadow owners of every frame (the stale-tlb oracle): bit s set while space s maps it (spaces 0-31). */
  readonly ownerBase = K_LINE;
  /** References to every data frame from mappings (fork and copy-on-write). Written: Atomics. */
  readonly refBase: number;
  /** Process table: one line per pid (P_* fields). Written: whoever spawns, switches or kills (Atomics). */
  readonly procBase: number;
  /** Per core and space: the space's TLB generation when the core last ran it (coreGen(c, s)). Written: that core. */
  readonly coreGenBase: number;
  /**
   * The lock baseline's reader/writer lock of each space (kernel mode 'lock'): a writer line,
   * then one reader line per core (writer preference, as NR's replica lock). See lockBase().
   */
  readonly lockBase0: number;
  readonly maskWords: number;
  readonly replicaWords: number;
  readonly spacesBase: number;
  readonly spaceReplicasOff: number;
  readonly spaceWords: number;
  readonly arenaWordsEach: number;
  readonly arenasBase: number;
  /** The thread table: THREADS_PER_PROCESS lines per process slot. */
  readonly threadBase: number;
  readonly maxThreads: number;
  readonly totalWords: number;

  constructor(readonly config: KernelConfig) {
    const c = config;
    this.maskWords = Math.ceil(c.cores / 32);
    const round = (x: number): number => Math.ceil(x / K_LINE) * K_LINE;
    this.replicaWords = round(SR_FRAMES + c.ptPoolFrames);
    this.refBase = round(this.ownerBase + c.totalFrames);
    this.procBase = round(this.refBase + c.totalFrames);
    this.coreGenBase = this.procBase + c.maxSpaces * K_LINE;
    this.lockBase0 = round(this.coreGenBase + c.cores * c.maxSpaces);
    this.spacesBase = this.lockBase0 + c.maxSpaces * (1 + c.cores) * K_LINE;
    this.spaceReplicasOff = round(Math.max(S_ACTIVE + this.maskWords, S_TLBGEN + 1));
    this.spaceWords = this.spaceReplicasOff + c.nodes * this.replicaWords;
    this.arenaWordsEach = round(arenaWords(c.maxMappings));
    this.arenasBase = this.spacesBase + c.maxSpaces * this.spaceWords;
    this.threadBase = this.arenasBase + c.maxSpaces * c.nodes * this.arenaWordsEach;
    this.maxThreads = c.maxSpaces * THREADS_PER_PROCESS;
    this.totalWords = this.threadBase + this.maxThreads * K_LINE;
  }

  /** Word of space s's baseline writer flag; reader flag of core c at + (1 + c) * K_LINE. */
  lockBase(s: number): number {
    return this.lockBase0 + s * (1 + this.config.cores) * K_LINE;
  }

  coreGen(c: number, s: number): number {
    return this.coreGenBase + c * this.config.maxSpaces + s;
  }

  spaceBase(s: number): number {
    return this.spacesBase + s * this.spaceWords;
  }

  replicaBase(s: number, r: number): number {
    return this.spaceBase(s) + this.spaceReplicasOff + r * this.replicaWords;
  }

  arenaBase(s: number, r: number): number {
    return this.arenasBase + (s * this.config.nodes + r) * this.arenaWordsEach;
  }
}
