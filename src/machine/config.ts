// The machine's configuration: what a user may ask for (hardware and kernel), its defaults, and
// its validation. Validation returns a message naming the problem; nothing here throws from deep
// inside.

import { DEFAULT_TLB, DEFAULTS, HW_INJECTIONS, MAX_CORES, MAX_DEVICE_PAGES, MAX_MEMORY_BYTES, MIN_FRAMES_PER_NODE, parseSize, type HwConfig, type TlbConfig } from '../hw/config.js';
import { FRAME_BYTES } from '../hw/pte.js';
import { DEFAULT_KERNEL, KERNEL_INJECTIONS, type KernelOptions } from '../kernel/options.js';

/** Faults of the machine itself: 'core-crash' kills the worker of the highest core of every stress round (hw-mix, vm-mix) before it starts its program. */
export const MACHINE_INJECTIONS = ['core-crash'] as const;
/** Every fault a run can inject: the hardware's, the kernel's, the machine's. */
export const ALL_INJECTIONS = [...HW_INJECTIONS, ...KERNEL_INJECTIONS, ...MACHINE_INJECTIONS] as const;

/** Most address spaces a machine may have (kernel.maxSpaces); the kernel's own comes on top. */
export const MAX_SPACES = 4096;

/** A validated machine configuration. Every field is set. */
export interface MachineConfig extends HwConfig {
  kernel: KernelOptions;
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
  /** Register pages of the device above RAM (default: 4 under kernel.personality 'mh', else 0: none). */
  devicePages?: number;
}

/** The options Machine.boot knows. */
const OPTION_KEYS = ['cores', 'nodes', 'memory', 'tlb', 'maxPhysAddr', 'ipiQueueSlots', 'waitLimitMs', 'inject', 'kernel', 'trace', 'devicePages'];

/** A message naming the keys of `o` not in `known` (with their prefix), or null. */
function unknownKeys(o: unknown, known: readonly string[], prefix: string): string | null {
  if (o === undefined) return null;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return `${prefix.replace(/\.$/, '')} must be an object`;
  const bad = Object.keys(o).filter((k) => !known.includes(k));
  if (bad.length === 0) return null;
  return `unknown option${bad.length > 1 ? 's' : ''} ${bad.map((k) => `'${prefix}${k}'`).join(', ')} (known: ${known.map((k) => prefix + k).join(', ')})`;
}

function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function checkInt(name: string, v: unknown, lo: number, hi: number): string | null {
  if (typeof v !== 'number' || !Number.isInteger(v)) return `${name} must be a whole number, got ${typeof v === 'string' ? `the string '${v}'` : String(v)}`;
  if (v < lo || v > hi) return `${name} must be between ${lo} and ${hi}, got ${v}`;
  return null;
}

/**
 * Validates options and fills defaults. Returns the configuration, or a message that names the
 * first problem found.
 */
export function validateConfig(opts: MachineOptions): { config: MachineConfig } | { error: string } {
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) return { error: `machine options must be an object, got ${opts === null ? 'null' : typeof opts}` };
  const unknown = unknownKeys(opts, OPTION_KEYS, '') ?? unknownKeys(opts.tlb, Object.keys(DEFAULT_TLB), 'tlb.') ?? unknownKeys(opts.kernel, Object.keys(DEFAULT_KERNEL), 'kernel.');
  if (unknown) return { error: unknown };
  if (opts.inject !== undefined && (!Array.isArray(opts.inject) || opts.inject.some((x) => typeof x !== 'string'))) return { error: 'inject must be an array of fault names' };
  if (opts.trace !== undefined && typeof opts.trace !== 'boolean') return { error: `trace must be true or false, got ${String(opts.trace)}` };
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
  if (typeof tlb.psc !== 'boolean') return { error: `tlb.psc must be true or false, got ${JSON.stringify(tlb.psc)}` };

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
  err = checkInt('kernel.maxSpaces', kernel.maxSpaces, 1, MAX_SPACES) ?? checkInt('kernel.maxMappings', kernel.maxMappings, 16, 1 << 22) ??
    checkInt('kernel.logEntries', kernel.logEntries, 16, 1 << 20) ?? checkInt('kernel.maxBatch', kernel.maxBatch, 1, 1024) ??
    checkInt('kernel.ptPoolFrames', kernel.ptPoolFrames, 8, 1 << 20);
  if (err) return { error: err };
  if (!isPow2(kernel.logEntries)) return { error: `kernel.logEntries must be a power of two, got ${kernel.logEntries}` };
  if (kernel.cow !== 'default' && kernel.cow !== 'mh') return { error: `kernel.cow must be 'default' or 'mh', got '${String(kernel.cow)}'` };
  if (kernel.mode !== 'nr' && kernel.mode !== 'lock') return { error: `kernel.mode must be 'nr' or 'lock', got '${String(kernel.mode)}'` };
  if (kernel.khalf !== 'eager' && kernel.khalf !== 'switch' && kernel.khalf !== 'lazy') return { error: `kernel.khalf must be 'eager', 'switch' or 'lazy', got '${String(kernel.khalf)}'` };
  if (kernel.mshareFlush !== 'attached' && kernel.mshareFlush !== 'all') return { error: `kernel.mshareFlush must be 'attached' or 'all', got '${String(kernel.mshareFlush)}'` };
  if (kernel.personality !== 'default' && kernel.personality !== 'mh') return { error: `kernel.personality must be 'default' or 'mh', got '${String(kernel.personality)}'` };
  if (kernel.personality === 'mh') {
    // MH's copy-on-write is its own (the last sharer's page becomes private read-only).
    if (opts.kernel?.cow === 'default') return { error: "kernel.cow 'default' does not apply under kernel.personality 'mh' (its copy-on-write policy is MH's)" };
    kernel.cow = 'mh';
  }
  const devicePages = opts.devicePages ?? (kernel.personality === 'mh' ? DEFAULTS.devicePages : 0);
  err = checkInt('devicePages', devicePages, 0, MAX_DEVICE_PAGES);
  if (err) return { error: err };
  if (memoryBytes + devicePages * FRAME_BYTES > 2 ** maxPhysAddr) return { error: `memory and the device's ${devicePages} pages do not fit below MAXPHYADDR (${maxPhysAddr} bits)` };
  if (kernel.logEntries < kernel.maxBatch) {
    return { error: `kernel.logEntries (${kernel.logEntries}) must hold one whole batch (maxBatch ${kernel.maxBatch})` };
  }
  return { config: { cores, nodes, memoryBytes, tlb, maxPhysAddr, ipiQueueSlots, waitLimitMs, inject: [...inject], kernel, trace: opts.trace === true, devicePages } };
}

/** The shared buffers of one machine plus its configuration: what a worker needs to attach. */
export interface MachineShared {
  id: string;
  config: MachineConfig;
  phys: SharedArrayBuffer;
  control: SharedArrayBuffer;
  /** The kernel's tables (kernel/layout.ts). */
  kernel: SharedArrayBuffer;
  /** The NR logs of every address space (nr/layout.ts). */
  nr: SharedArrayBuffer;
  /** Per-core trace rings (hw/trace.ts), when the machine traces. */
  trace?: SharedArrayBuffer;
}
