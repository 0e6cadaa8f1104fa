// Machine configuration: what a user may ask for, its defaults (from a real core where there is
// one: Skylake's L1 DTLB) and its validation. Validation returns a message naming the problem;
// nothing here throws from deep inside.

import { FRAME_BYTES } from './pte.js';

/** TLB geometry per page size: total entries and associativity (entries / ways sets). */
export interface TlbConfig {
  entries4k: number;
  ways4k: number;
  entries2m: number;
  ways2m: number;
  entries1g: number;
  ways1g: number;
}

/** Named faults a run can inject to prove that the checks catch them (hardware, then kernel). */
export const HW_INJECTIONS = ['non-atomic-ad', 'torn-pte-update'] as const;
export const ALL_INJECTIONS = [...HW_INJECTIONS, 'skip-shootdown', 'skip-replica-sync', 'skip-cow-copy'] as const;

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
}

export const DEFAULT_KERNEL: KernelOptions = { maxSpaces: 8, maxMappings: 8192, logEntries: 1024, maxBatch: 32, ptPoolFrames: 4096, cow: 'default', mode: 'nr' };

/** A validated machine configuration. Every field is set. */
export interface MachineConfig {
  cores: number;
  nodes: number;
  memoryBytes: number;
  tlb: TlbConfig;
  /** MAXPHYADDR: entry bits 51:maxPhysAddr are reserved. */
  maxPhysAddr: number;
  /** Slots in each core's IPI queue (NRK: 4). A full queue back-pressures the sender. */
  ipiQueueSlots: number;
  /** Bound on any single wait (ack, doorbell, full queue), in milliseconds. */
  waitLimitMs: number;
  inject: string[];
  kernel: KernelOptions;
  /** Record per-core trace events (exported as Chrome trace JSON). */
  trace: boolean;
}

/** What `Machine.boot` accepts: any subset, memory also as "64MiB"-style text. */
export interface MachineOptions {
  cores?: number;
  nodes?: number;
  memory?: number | string;
  tlb?: Partial<TlbConfig>;
  maxPhysAddr?: number;
  ipiQueueSlots?: number;
  waitLimitMs?: number;
  inject?: string[];
  kernel?: Partial<KernelOptions>;
  trace?: boolean;
}

export const DEFAULT_TLB: TlbConfig = {
  entries4k: 64,
  ways4k: 4,
  entries2m: 32,
  ways2m: 4,
  entries1g: 4,
  ways1g: 4,
};

export const DEFAULTS = {
  cores: 4,
  nodes: 2,
  memoryBytes: 64 * 1024 * 1024,
  maxPhysAddr: 46,
  ipiQueueSlots: 4,
  waitLimitMs: 20_000,
} as const;

/** Largest simulated memory: an Int32Array view holds at most 2^32 elements (16 GiB). */
export const MAX_MEMORY_BYTES = 2 ** 32 * 4;
/** Smallest per-node share: room for a few page-table hierarchies. */
export const MIN_FRAMES_PER_NODE = 64;
export const MAX_CORES = 256;

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3,
};

/** Parses "64MiB", "1g", "4096" into bytes; null when it is not a size. */
export function parseSize(v: number | string): number | null {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : null;
  const m = /^\s*(\d+)\s*([a-zA-Z]*)\s*$/.exec(v);
  if (!m) return null;
  const unit = SIZE_UNITS[m[2].toLowerCase()];
  if (unit === undefined) return null;
  const n = Number(m[1]) * unit;
  return Number.isSafeInteger(n) ? n : null;
}

function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function checkInt(name: string, v: unknown, lo: number, hi: number): string | null {
  if (typeof v !== 'number' || !Number.isInteger(v)) return `${name} must be a whole number, got ${String(v)}`;
  if (v < lo || v > hi) return `${name} must be between ${lo} and ${hi}, got ${v}`;
  return null;
}

/**
 * Validates options and fills defaults. Returns the configuration, or a message that names the
 * first problem found.
 */
export function validateConfig(opts: MachineOptions): { config: MachineConfig } | { error: string } {
  const cores = opts.cores ?? DEFAULTS.cores;
  const nodes = opts.nodes ?? DEFAULTS.nodes;
  let err = checkInt('cores', cores, 1, MAX_CORES) ?? checkInt('nodes', nodes, 1, 64);
  if (err) return { error: err };
  if (nodes > cores) return { error: `nodes (${nodes}) cannot exceed cores (${cores}): every NUMA node needs a core` };

  const memoryBytes = opts.memory === undefined ? DEFAULTS.memoryBytes : parseSize(opts.memory);
  if (memoryBytes === null) return { error: `memory must be a size such as 64MiB or 1GiB, got ${String(opts.memory)}` };
  if (memoryBytes % FRAME_BYTES !== 0) {
    return { error: `memory (${memoryBytes} bytes) is not a whole number of 4 KiB frames` };
  }
  if (memoryBytes > MAX_MEMORY_BYTES) {
    return { error: `memory (${memoryBytes} bytes) exceeds 16 GiB, the limit of an Int32Array view (2^32 elements)` };
  }
  const frames = memoryBytes / FRAME_BYTES;
  if (frames < MIN_FRAMES_PER_NODE * nodes) {
    return {
      error: `memory (${memoryBytes} bytes, ${frames} frames) is too small for the page tables: ` +
        `at least ${MIN_FRAMES_PER_NODE} frames per node (${(MIN_FRAMES_PER_NODE * nodes * FRAME_BYTES) / 1024} KiB for ${nodes} nodes)`,
    };
  }

  const maxPhysAddr = opts.maxPhysAddr ?? DEFAULTS.maxPhysAddr;
  err = checkInt('maxPhysAddr', maxPhysAddr, 36, 52);
  if (err) return { error: err };
  if (memoryBytes > 2 ** maxPhysAddr) return { error: `memory does not fit below MAXPHYADDR (${maxPhysAddr} bits)` };

  const tlb: TlbConfig = { ...DEFAULT_TLB, ...(opts.tlb ?? {}) };
  for (const size of ['4k', '2m', '1g'] as const) {
    const entries = tlb[`entries${size}`];
    const ways = tlb[`ways${size}`];
    err = checkInt(`tlb.entries${size}`, entries, 1, 65536) ?? checkInt(`tlb.ways${size}`, ways, 1, 64);
    if (err) return { error: err };
    if (entries % ways !== 0 || !isPow2(entries / ways)) {
      return { error: `tlb.entries${size} / tlb.ways${size} must be a power of two (sets), got ${entries}/${ways}` };
    }
  }

  const ipiQueueSlots = opts.ipiQueueSlots ?? DEFAULTS.ipiQueueSlots;
  // Vyukov's bounded queue needs at least two slots: with one, a published slot looks free.
  err = checkInt('ipiQueueSlots', ipiQueueSlots, 2, 1024);
  if (err) return { error: err };
  if (!isPow2(ipiQueueSlots)) return { error: `ipiQueueSlots must be a power of two, got ${ipiQueueSlots}` };

  const waitLimitMs = opts.waitLimitMs ?? DEFAULTS.waitLimitMs;
  err = checkInt('waitLimitMs', waitLimitMs, 10, 600_000);
  if (err) return { error: err };

  const inject = opts.inject ?? [];
  for (const name of inject) {
    if (!(ALL_INJECTIONS as readonly string[]).includes(name)) {
      return { error: `unknown injection '${name}' (known: ${ALL_INJECTIONS.join(', ')})` };
    }
  }
  const kernel: KernelOptions = { ...DEFAULT_KERNEL, ...(opts.kernel ?? {}) };
  err = checkInt('kernel.maxSpaces', kernel.maxSpaces, 1, 4096) ?? checkInt('kernel.maxMappings', kernel.maxMappings, 16, 1 << 22) ??
    checkInt('kernel.logEntries', kernel.logEntries, 16, 1 << 20) ?? checkInt('kernel.maxBatch', kernel.maxBatch, 1, 1024) ??
    checkInt('kernel.ptPoolFrames', kernel.ptPoolFrames, 8, 1 << 20);
  if (err) return { error: err };
  if (!isPow2(kernel.logEntries)) return { error: `kernel.logEntries must be a power of two, got ${kernel.logEntries}` };
  if (kernel.cow !== 'default' && kernel.cow !== 'mh') return { error: `kernel.cow must be 'default' or 'mh', got '${String(kernel.cow)}'` };
  if (kernel.mode !== 'nr' && kernel.mode !== 'lock') return { error: `kernel.mode must be 'nr' or 'lock', got '${String(kernel.mode)}'` };
  if (kernel.logEntries < kernel.maxBatch) {
    return { error: `kernel.logEntries (${kernel.logEntries}) must hold one whole batch (maxBatch ${kernel.maxBatch})` };
  }
  return { config: { cores, nodes, memoryBytes, tlb, maxPhysAddr, ipiQueueSlots, waitLimitMs, inject: [...inject], kernel, trace: opts.trace === true } };
}
