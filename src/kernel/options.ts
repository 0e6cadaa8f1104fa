// The kernel's options: the sizes of its shared state, its policies where the seeds disagree
// (DESIGN.md, "Address spaces and processes"), how address spaces run (node replication or the
// lock baseline), and the kernel faults a run can inject to prove that an oracle catches them.

/** Named kernel faults a run can inject (hardware ones: hw/config.ts HW_INJECTIONS). */
export const KERNEL_INJECTIONS = ['skip-shootdown', 'skip-replica-sync', 'skip-cow-copy', 'skip-wire-check', 'unwired-dma', 'free-table-without-flush', 'owner-only-shootdown', 'fault-in-wrong-space', 'pkru-not-switched'] as const;

/** Sizes of the kernel's shared state: address spaces, their mapping databases and NR logs. */
export interface KernelOptions {
  /** Address spaces that can exist at once (each one NR instance with its own log). */
  maxSpaces: number;
  /** Mappings one address space can hold. */
  maxMappings: number;
  /** Entries of each NR log (a power of two; the crate uses 32,768 per 2 MiB log). */
  logEntries: number;
  /** Largest batch one combiner appends. */
  maxBatch: number;
  /** Page-table frames each replica may keep in reserve. */
  ptPoolFrames: number;
  /** Copy-on-write policy: 'default' (the last sharer's write reuses the frame, writable) or MH's 'mh' (private read-only first). */
  cow: 'default' | 'mh';
  /**
   * 'nr': node-replicated address spaces. 'lock': the baseline a conventional kernel uses — one
   * copy of each space's mapping database and page tables behind one reader/writer lock.
   */
  mode: 'nr' | 'lock';
  /**
   * 'default': NRK's operations with Linux/os5 copy-on-write. 'mh': MH's mapping states as a
   * checked state machine (kernel/mh.ts): EINVAL/EPERM/EBUSY, wiring by device export, DMA,
   * copy-on-write faults delivered to the process's user-level handler (kernel/mrg.ts).
   */
  personality: 'default' | 'mh';
  /**
   * How the kernel half (top-level entries 256-511, the same in every address space) is kept in
   * sync when a top-level kernel entry changes (os5's three methods, kernel/khalf.ts): 'eager'
   * (every space at once), 'switch' (copied when a space is switched in), 'lazy' (copied from
   * the master on a kernel page fault; can only add).
   */
  khalf: 'eager' | 'switch' | 'lazy';
  /**
   * Whom a change in an mshare region shoots down: 'attached' (the cores of every attached
   * process, from the host's sharer mask) or 'all' (every core flushes all its non-global
   * translations, as the mshare patches do when the set of attached processes is unknown).
   */
  mshareFlush: 'attached' | 'all';
}

export const DEFAULT_KERNEL: KernelOptions = { maxSpaces: 8, maxMappings: 8192, logEntries: 1024, maxBatch: 32, ptPoolFrames: 4096, cow: 'default', mode: 'nr', personality: 'default', khalf: 'eager', mshareFlush: 'attached' };

