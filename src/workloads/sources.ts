// Program sources: turn a ProgramSpec into a stream of operations inside the worker, generated
// chunk by chunk from a seed so that no per-operation message crosses threads and a run is the
// same every time for the same seed.
//
//   encoded     explicit operations the controller encoded (machine/program.ts)
//   random      seeded loads/stores/fetches over regions, with an optional INVLPG rate
//   ipi-storm   seeded IPI_PINGs to the other cores of the run, each waiting for its ack
//   vm-mix      the address-space stress mix: switches between live processes, MapFrame/Unmap/
//               Adjust of the core's own slots, Resolve, loads anywhere in the shared region,
//               writes and checked reads of the core's own slots, fork and exit
//   hw-mix      the hardware stress mix: accesses, INVLPG, IPIs, walks of a page whose entry
//               another core rewrites (break-before-make), and flips of entry bits racing the
//               walkers' A/D updates

import { parseAddress, putPage, split64, vaHi, vaLo } from '../hw/vaddr.js';
import { KPERCORE_VA } from '../kernel/khalf.js';
import {
  BufferSource, CURRENT_SPACE, OP_FETCH, OP_INVLPG, OP_K_ADJUST, OP_K_DEVREG, OP_K_DMA, OP_K_EXIT, OP_K_EXPORT, OP_K_FORK, OP_K_MAP,
  OP_K_KACCESS, OP_K_KMAP, OP_K_KUNMAP, OP_K_MOVE, OP_K_OWN, OP_K_RESOLVE, OP_K_UNEXPORT,
  OP_K_SWITCH, OP_K_UNMAP, OP_LOAD, OP_PING, OP_K_SHARE, OP_K_UNSHARE, OP_K_PKEY, OP_K_CALL, OP_K_XACCESS, OP_K_GRANT, REGION_SPACE,
  OP_PTE_TOGGLE, OP_PTE_WRITE, OP_STORE, OP_WORDS, OP_XLATE, PROGRAM_KINDS, ProgramError,
  type ProgramSource, type ProgramSpec,
} from '../machine/program.js';
import { MAILBOX_PAGES } from '../machine/shareops.js';
import { Rng } from './rng.js';

export interface Region {
  /** First byte (hex string, bigint or safe number). */
  va: string | bigint | number;
  bytes: number;
}

export interface RandomProgram extends ProgramSpec {
  kind: 'random';
  seed: number;
  count: number;
  regions: Region[];
  mix?: { load?: number; store?: number; fetch?: number; invlpg?: number };
}

export interface IpiStormProgram extends ProgramSpec {
  kind: 'ipi-storm';
  seed: number;
  count: number;
  targets: number[];
}

function need(cond: boolean, msg: string): void {
  if (!cond) throw new ProgramError(msg);
}

function countOf(spec: ProgramSpec): number {
  const n = spec.count;
  need(typeof n === 'number' && Number.isSafeInteger(n) && n >= 0, `program '${spec.kind}': count must be a whole number >= 0`);
  return n as number;
}

/** Seeded random accesses over regions; every address 8-byte aligned and inside a region. */
class RandomSource implements ProgramSource {
  private left: number;
  private readonly rng: Rng;
  private readonly bases: { hi: number; lo: number; slots: number }[] = [];
  private readonly cut: number[];

  constructor(p: RandomProgram, core: number) {
    this.left = countOf(p);
    need(Array.isArray(p.regions) && p.regions.length > 0, "program 'random': regions must list at least one { va, bytes }");
    for (const r of p.regions) {
      const va = parseAddress(r.va);
      need(va !== null && (va & 7n) === 0n, `program 'random': region start ${String(r.va)} is not an 8-aligned address`);
      need(Number.isSafeInteger(r.bytes) && r.bytes >= 8, `program 'random': region bytes must be >= 8`);
      const { hi, lo } = split64(va as bigint);
      need((lo >>> 0) + r.bytes <= 2 ** 32, `program 'random': a region may not cross a 4 GiB boundary`);
      this.bases.push({ hi, lo, slots: Math.floor(r.bytes / 8) });
    }
    const m = { load: 70, store: 30, fetch: 0, invlpg: 0, ...(p.mix ?? {}) };
    const w = [m.load, m.store, m.fetch, m.invlpg];
    need(w.every((x) => Number.isFinite(x) && x >= 0) && w.some((x) => x > 0), "program 'random': mix weights must be >= 0, not all 0");
    const total = w.reduce((a, b) => a + b, 0);
    let acc = 0;
    this.cut = w.map((x) => (acc += x) / total);
    this.rng = new Rng(p.seed | 0, core);
  }

  next(buf: Int32Array): number {
    const n = Math.min(this.left, buf.length / OP_WORDS);
    const rng = this.rng;
    for (let i = 0, w = 0; i < n; i++, w += OP_WORDS) {
      const r = this.bases[this.bases.length === 1 ? 0 : rng.below(this.bases.length)];
      const lo = (r.lo + rng.below(r.slots) * 8) | 0;
      const x = (rng.next() >>> 0) / 4294967296;
      buf[w] = x < this.cut[0] ? OP_LOAD : x < this.cut[1] ? OP_STORE : x < this.cut[2] ? OP_FETCH : OP_INVLPG;
      buf[w + 1] = r.hi;
      buf[w + 2] = lo;
      buf[w + 3] = rng.next();
      buf[w + 4] = rng.next();
    }
    this.left -= n;
    return n;
  }
}

/** Seeded pings to other cores of the run. */
class IpiStormSource implements ProgramSource {
  private left: number;
  private readonly rng: Rng;
  private readonly targets: number[];

  constructor(p: IpiStormProgram, core: number) {
    this.left = countOf(p);
    need(Array.isArray(p.targets), "program 'ipi-storm': targets must list cores");
    this.targets = p.targets.filter((t) => t !== core);
    need(this.targets.length > 0 || this.left === 0, "program 'ipi-storm': no target other than the core itself");
    this.rng = new Rng(p.seed | 0, core);
  }

  next(buf: Int32Array): number {
    const n = Math.min(this.left, buf.length / OP_WORDS);
    for (let i = 0, w = 0; i < n; i++, w += OP_WORDS) {
      buf[w] = OP_PING;
      buf[w + 1] = this.targets[this.rng.below(this.targets.length)];
      buf[w + 2] = this.rng.next() & 0xffff;
    }
    this.left -= n;
    return n;
  }
}

export interface HwMixProgram extends ProgramSpec {
  kind: 'hw-mix';
  seed: number;
  count: number;
  regions: Region[];
  /** Cores to ping (the core itself is skipped). */
  targets: number[];
  /** Page whose leaf entry the flipper rewrites; readers INVLPG and translate it. */
  flipVa: string;
  /** Word index of that leaf entry, and the two states [lo, hi] it alternates between. */
  flipWord: number;
  flipStates: [[number, number], [number, number]];
  /** Leaf-entry words whose bits 9 and D are flipped with compareExchange. */
  toggleWords: number[];
  toggleBits: number;
  mix: { load: number; store: number; fetch: number; invlpg: number; ping: number; xlate: number; toggle: number; flip: number };
}

const MIX_KINDS = ['load', 'store', 'fetch', 'invlpg', 'ping', 'xlate', 'toggle', 'flip'] as const;

/** The hardware stress mix, one seeded stream per core. */
class HwMixSource implements ProgramSource {
  private left: number;
  private readonly rng: Rng;
  private readonly random: RandomSource;
  private readonly one = new Int32Array(OP_WORDS);
  private readonly cut: number[];
  private readonly targets: number[];
  private readonly flip: [number, number];
  private flips = 0;

  constructor(private readonly p: HwMixProgram, core: number) {
    this.left = countOf(p);
    this.random = new RandomSource({ kind: 'random', seed: p.seed, count: Number.MAX_SAFE_INTEGER, regions: p.regions }, core);
    this.rng = new Rng((p.seed ^ 0x5eed) | 0, core);
    this.targets = (p.targets ?? []).filter((t) => t !== core);
    const va = parseAddress(p.flipVa);
    need(va !== null, `program 'hw-mix': flipVa ${p.flipVa} is not an address`);
    const f = split64(va as bigint);
    this.flip = [f.hi, f.lo];
    const w = MIX_KINDS.map((k) => p.mix?.[k] ?? 0);
    need(w.every((x) => Number.isFinite(x) && x >= 0) && w.some((x) => x > 0), "program 'hw-mix': mix weights must be >= 0, not all 0");
    if (this.targets.length === 0) w[4] = 0;
    if (!p.toggleWords?.length) w[6] = 0;
    const total = w.reduce((a, b) => a + b, 0);
    let acc = 0;
    this.cut = w.map((x) => (acc += x) / total);
  }

  next(buf: Int32Array): number {
    const n = Math.min(this.left, buf.length / OP_WORDS);
    const rng = this.rng;
    for (let i = 0, w = 0; i < n; i++, w += OP_WORDS) {
      const x = (rng.next() >>> 0) / 4294967296;
      let k = 0;
      while (k < this.cut.length - 1 && x >= this.cut[k]) k++;
      buf[w + 3] = 0;
      buf[w + 4] = 0;
      switch (MIX_KINDS[k]) {
        case 'load':
        case 'store':
        case 'fetch':
        case 'invlpg':
          this.random.next(this.one);
          buf.set(this.one, w);
          buf[w] = k === 0 ? OP_LOAD : k === 1 ? OP_STORE : k === 2 ? OP_FETCH : OP_INVLPG;
          break;
        case 'ping':
          buf[w] = OP_PING;
          buf[w + 1] = this.targets[rng.below(this.targets.length)];
          buf[w + 2] = rng.next() & 0xffff;
          break;
        case 'xlate':
          // Readers: INVLPG is folded into the translate's slot so that every one walks.
          buf[w] = OP_XLATE;
          buf[w + 1] = this.flip[0];
          buf[w + 2] = this.flip[1];
          buf[w + 3] = 0;
          buf[w + 4] = 1;
          break;
        case 'toggle':
          buf[w] = OP_PTE_TOGGLE;
          buf[w + 1] = this.p.toggleWords[rng.below(this.p.toggleWords.length)];
          buf[w + 2] = this.p.toggleBits;
          break;
        case 'flip': {
          const [lo, hi] = this.p.flipStates[this.flips++ & 1 ? 0 : 1];
          buf[w] = OP_PTE_WRITE;
          buf[w + 1] = this.p.flipWord;
          buf[w + 2] = lo;
          buf[w + 3] = hi;
          break;
        }
      }
    }
    this.left -= n;
    return n;
  }
}

export const VM_MIX_KINDS = [
  'map', 'unmap', 'adjust', 'access', 'resolve', 'switch', 'fork', 'exit', 'check', 'export', 'unexport', 'dma', 'devreg', 'move', 'kmap', 'kunmap', 'kaccess',
  'share', 'unshare', 'pkey', 'call', 'grant',
] as const;
/** The kinds only the --share runs run (share and unshare attach and detach under mshare; pkey, call and grant are RPAL's). */
export const SHARE_MIX_KINDS = ['share', 'unshare', 'pkey', 'call', 'grant'] as const;

/** The stress run's kernel region: 4 top-level entries (the 512 GiB from 0xffff_9000_0000_0000 on), KERNEL_SLOTS pages at the start of each. */
export const KSTRESS_VA = -0x7000_0000_0000;
export const KERNEL_TOPS = 4;
export const KERNEL_SLOTS = 16;
/** The kinds only the MH personality runs. */
export const MH_MIX_KINDS = ['export', 'unexport', 'dma', 'devreg', 'move'] as const;
export type VmMix = Record<(typeof VM_MIX_KINDS)[number], number>;

export interface VmMixProgram extends ProgramSpec {
  kind: 'vm-mix';
  seed: number;
  count: number;
  /** Cores taking part: each owns `slots` 4 KiB slots of the region in every space. */
  cores: number;
  slots: number;
  /** Start of the region (bytes; below 2^47). */
  regionBase: number;
  mix: VmMix;
  /** Maps go to this core's slots in order, each at a fresh address (NRK's maponly), not to random ones; they wrap after the last. */
  freshMaps?: boolean;
  /** Protection changes of every kind (read-only or read-write, executable or not) and read-only maps too (the MH run). */
  allRights?: boolean;
  /**
   * Address-space sharing (machine/shareops.ts): 'rpal' — addresses are offsets in the running
   * thread's process's slot, loads go to other processes' slots, calls and grants; 'mshare' — half
   * of the mapping operations and accesses go to a region the process attached.
   */
  share?: 'rpal' | 'mshare';
  /** Threads per process: a switch runs a thread of any live process (kernelops.ts). */
  threads?: number;
}

/** Rights the stress uses: user read-write or user read-only. */
const VM_RW = 3;
const VM_RO = 2;
const VM_NX = 4;

/** Seeded address-space operations; outcomes (AlreadyMapped, NotMapped...) are decided when they run. */
class VmMixSource implements ProgramSource {
  private left: number;
  private readonly rng: Rng;
  private readonly cut: number[];
  private started = false;
  /** Page numbers this core touched lately: half of its loads go there (temporal locality, as real programs have). */
  private readonly hot = new Float64Array(16);
  private hotAt = 0;
  /** The next of this core's slots a fresh map takes (freshMaps). */
  private nextSlot = 0;

  constructor(private readonly p: VmMixProgram, private readonly core: number) {
    this.left = countOf(p);
    need(Number.isSafeInteger(p.slots) && p.slots > 0 && Number.isSafeInteger(p.cores) && p.cores > 0, "program 'vm-mix': cores and slots must be > 0");
    need(p.regionBase % 4096 === 0 && p.regionBase + p.cores * p.slots * 4096 <= 2 ** 47, "program 'vm-mix': the region must be page-aligned and below 2^47");
    need(p.share === undefined || p.share === 'rpal' || p.share === 'mshare', "program 'vm-mix': share must be 'rpal' or 'mshare'");
    const w = VM_MIX_KINDS.map((k) => p.mix?.[k] ?? 0);
    need(w.every((x) => Number.isFinite(x) && x >= 0) && w.some((x) => x > 0), "program 'vm-mix': mix weights must be >= 0, not all 0");
    const total = w.reduce((a, b) => a + b, 0);
    let acc = 0;
    this.cut = w.map((x) => (acc += x) / total);
    this.rng = new Rng(p.seed | 0, core);
  }

  next(buf: Int32Array): number {
    const n = Math.min(this.left, buf.length / OP_WORDS);
    const rng = this.rng;
    const p = this.p;
    // Page numbers, not addresses: small integers (an address above 2^31 would be a heap number per op).
    const regionPage = p.regionBase / 4096;
    const own = (): number => regionPage + this.core * p.slots + rng.below(p.slots);
    const any = (): number => {
      if (this.hotAt > 0 && rng.below(2) === 0) return this.hot[rng.below(Math.min(this.hotAt, this.hot.length))];
      const page = regionPage + rng.below(p.cores * p.slots);
      this.hot[this.hotAt++ % this.hot.length] = page;
      return page;
    };
    const region = p.share === 'mshare';
    for (let i = 0, w = 0; i < n; i++, w += OP_WORDS) {
      buf.fill(0, w, w + OP_WORDS);
      const kind = this.started ? VM_MIX_KINDS[this.pick()] : 'switch';
      this.started = true;
      switch (kind) {
        case 'map':
          buf[w] = OP_K_MAP;
          buf[w + 1] = CURRENT_SPACE;
          putPage(buf, w + 2, p.freshMaps === true ? regionPage + this.core * p.slots + (this.nextSlot++ % p.slots) : own());
          buf[w + 4] = ((p.allRights === true && rng.below(4) === 0 ? VM_RO : VM_RW) << 24) | 1; // rights << 24 | pages
          if (region && rng.below(2) === 0) buf[w + 1] = REGION_SPACE;
          break;
        case 'unmap':
        case 'adjust':
        case 'resolve':
          buf[w] = kind === 'unmap' ? OP_K_UNMAP : kind === 'adjust' ? OP_K_ADJUST : OP_K_RESOLVE;
          buf[w + 1] = CURRENT_SPACE;
          putPage(buf, w + 2, kind === 'resolve' ? any() : own());
          buf[w + 4] = (rng.below(2) === 0 ? VM_RW : VM_RO) | (p.allRights === true && rng.below(4) === 0 ? VM_NX : 0);
          if (region && rng.below(2) === 0) buf[w + 1] = REGION_SPACE;
          break;
        case 'export':
          buf[w] = OP_K_EXPORT;
          buf[w + 1] = CURRENT_SPACE;
          putPage(buf, w + 2, own());
          break;
        case 'unexport':
          buf[w] = OP_K_UNEXPORT;
          buf[w + 2] = rng.next();
          break;
        case 'dma':
          buf[w] = OP_K_DMA;
          buf[w + 2] = rng.next();
          buf[w + 3] = rng.next();
          buf[w + 4] = rng.below(2);
          break;
        case 'devreg':
          buf[w] = OP_K_DEVREG;
          buf[w + 2] = rng.next();
          buf[w + 3] = rng.next();
          buf[w + 4] = rng.below(4) === 0 ? 1 : 0;
          break;
        case 'kmap':
        case 'kunmap': {
          const va = KSTRESS_VA + rng.below(KERNEL_TOPS) * 2 ** 39 + rng.below(KERNEL_SLOTS) * 4096;
          buf[w] = kind === 'kmap' ? OP_K_KMAP : OP_K_KUNMAP;
          buf[w + 2] = vaHi(va);
          buf[w + 3] = vaLo(va);
          buf[w + 4] = 1;
          break;
        }
        case 'kaccess': {
          // Any core's kernel pages, and the boot-time per-core area now and then.
          const va = rng.below(8) === 0 ? KPERCORE_VA + this.core * 4096 : KSTRESS_VA + rng.below(KERNEL_TOPS) * 2 ** 39 + rng.below(KERNEL_SLOTS) * 4096;
          buf[w] = OP_K_KACCESS;
          buf[w + 1] = vaHi(va);
          buf[w + 2] = vaLo(va) + rng.below(512) * 8;
          buf[w + 3] = rng.below(4) === 0 ? 1 : 0;
          buf[w + 4] = rng.next();
          break;
        }
        case 'move':
          buf[w] = OP_K_MOVE;
          buf[w + 1] = CURRENT_SPACE;
          putPage(buf, w + 2, own());
          buf[w + 4] = own();
          break;
        case 'access': {
          // Loads anywhere in the region (other cores' pages too); stores only to this core's own
          // slots, remembered for the isolation check.
          if (rng.below(3) === 0) {
            buf[w] = OP_K_OWN;
            putPage(buf, w + 1, own());
            buf[w + 2] |= rng.below(512) * 8;
            buf[w + 3] = 1;
            if (region && rng.below(2) === 0) buf[w + 4] = 1;
          } else if (p.share !== undefined) {
            // Another process's slot, or a region: the shared paths, as the running thread.
            buf[w] = OP_K_XACCESS;
            buf[w + 1] = rng.next();
            putPage(buf, w + 2, any());
            buf[w + 3] |= rng.below(512) * 8;
            buf[w + 4] = rng.next();
          } else {
            buf[w] = OP_LOAD;
            putPage(buf, w + 1, any());
            buf[w + 2] |= rng.below(512) * 8;
          }
          break;
        }
        case 'check':
          buf[w] = OP_K_OWN;
          buf[w + 1] = rng.next();
          buf[w + 2] = rng.next();
          buf[w + 3] = 0;
          if (region && rng.below(2) === 0) buf[w + 4] = 1;
          break;
        case 'share':
        case 'unshare':
          buf[w] = kind === 'share' ? OP_K_SHARE : OP_K_UNSHARE;
          buf[w + 2] = rng.next();
          break;
        case 'pkey':
          buf[w] = OP_K_PKEY;
          buf[w + 1] = CURRENT_SPACE;
          putPage(buf, w + 2, own());
          buf[w + 4] = rng.next();
          break;
        case 'call':
          buf[w] = OP_K_CALL;
          buf[w + 1] = rng.next();
          putPage(buf, w + 2, own());
          buf[w + 3] |= rng.below(512) * 8;
          buf[w + 4] = rng.next();
          break;
        case 'grant':
          buf[w] = OP_K_GRANT;
          buf[w + 1] = rng.next();
          buf[w + 2] = rng.below(MAILBOX_PAGES);
          buf[w + 3] = rng.below(512) * 8;
          buf[w + 4] = rng.next();
          break;
        case 'switch':
          buf[w] = OP_K_SWITCH;
          buf[w + 1] = CURRENT_SPACE;
          buf[w + 2] = rng.next();
          break;
        case 'fork':
          buf[w] = OP_K_FORK;
          break;
        case 'exit':
          buf[w] = OP_K_EXIT;
          buf[w + 2] = rng.next();
          break;
      }
    }
    this.left -= n;
    return n;
  }

  private pick(): number {
    const x = (this.rng.next() >>> 0) / 4294967296;
    let k = 0;
    while (k < this.cut.length - 1 && x >= this.cut[k]) k++;
    return k;
  }
}

/** Repeats a source's program `times` times (sources are re-created per pass). */
class RepeatSource implements ProgramSource {
  private cur: ProgramSource;
  private pass = 1;
  constructor(private readonly make: () => ProgramSource, private readonly times: number) {
    this.cur = make();
  }
  next(buf: Int32Array): number {
    for (;;) {
      const n = this.cur.next(buf);
      if (n > 0 || this.pass >= this.times) return n;
      this.pass++;
      this.cur = this.make();
    }
  }
}

/** Builds the source for a spec on `core`. Throws ProgramError naming the problem. */
export function makeSource(spec: ProgramSpec, core: number): ProgramSource {
  const one = (): ProgramSource => {
    switch (spec.kind) {
      case 'encoded':
        need(spec.encoded instanceof Int32Array, "program 'encoded': missing encoded operations");
        return new BufferSource(spec.encoded as Int32Array);
      case 'random':
        return new RandomSource(spec as RandomProgram, core);
      case 'ipi-storm':
        return new IpiStormSource(spec as IpiStormProgram, core);
      case 'hw-mix':
        return new HwMixSource(spec as HwMixProgram, core);
      case 'vm-mix':
        return new VmMixSource(spec as VmMixProgram, core);
      default:
        throw new ProgramError(`unknown program kind '${spec.kind}' (known: ${PROGRAM_KINDS.join(', ')})`);
    }
  };
  const times = spec.repeat ?? 1;
  need(Number.isSafeInteger(times) && times >= 1, 'repeat must be a whole number >= 1');
  need(spec.durationMs === undefined || (typeof spec.durationMs === 'number' && spec.durationMs > 0 && Number.isFinite(spec.durationMs)), 'durationMs must be a number of milliseconds > 0');
  return times === 1 ? one() : new RepeatSource(one, times);
}
