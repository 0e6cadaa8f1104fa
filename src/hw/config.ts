// The hardware's configuration: TLB geometry (defaults from a real core: Skylake's L1 DTLB),
// sizes and bounds, and the size parser. The whole machine's configuration and its validation
// are machine/config.ts.


/** TLB geometry per page size: total entries and associativity (entries / ways sets). */
export interface TlbConfig {
  entries4k: number;
  ways4k: number;
  entries2m: number;
  ways2m: number;
  entries1g: number;
  ways1g: number;
  /** Paging-structure caches (SDM 4.10.3; psc.ts): a per-core PDE cache. Off by default. */
  psc: boolean;
}

/** Named hardware faults a run can inject to prove that the checks catch them (kernel ones: kernel/options.ts). */
export const HW_INJECTIONS = ['non-atomic-ad', 'torn-pte-update'] as const;

/** The hardware part of a validated machine configuration (machine/config.ts adds the kernel's). */
export interface HwConfig {
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
  /** Record per-core trace events (exported as Chrome trace JSON). */
  trace: boolean;
  /** Register pages of the one device placed just above RAM (device.ts); 0: no device. */
  devicePages: number;
}

export const DEFAULT_TLB: TlbConfig = {
  entries4k: 64,
  ways4k: 4,
  entries2m: 32,
  ways2m: 4,
  entries1g: 4,
  ways1g: 4,
  psc: false,
};

export const DEFAULTS = {
  cores: 4,
  nodes: 2,
  memoryBytes: 64 * 1024 * 1024,
  maxPhysAddr: 46,
  ipiQueueSlots: 4,
  waitLimitMs: 20_000,
  /** Under the MH personality (other personalities: no device unless asked). */
  devicePages: 4,
} as const;

/** Most register pages a device may have. */
export const MAX_DEVICE_PAGES = 64;

/** Largest simulated memory: an Int32Array view holds at most 2^32 elements (16 GiB). */
export const MAX_MEMORY_BYTES = 2 ** 32 * 4;
/** Smallest per-node share: room for a few page-table hierarchies. */
export const MIN_FRAMES_PER_NODE = 64;
export const MAX_CORES = 256;

/** Binary units only: "MB" could mean 10^6 or 2^20, so it is refused rather than guessed. */
const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gib: 1024 ** 3,
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
