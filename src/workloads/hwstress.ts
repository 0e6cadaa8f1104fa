// The hardware stress setup: one page-table hierarchy shared by every core, with a shared data
// region (4 KiB pages and one 2 MiB page), a "flip" page whose leaf entry core 0 rewrites between
// two states that differ in both halves, and a few leaf entries whose software bit 9 and D are
// flipped by compareExchange while walkers set A/D. Each round gives every core a seeded hw-mix
// program. What a round must satisfy is checked by src/check/hw.ts.
//
// The tables are built in the paging mode asked for (--paging): 4-level (default) or 5-level, PAE
// (8-byte entries under four PDPTEs; no keys) or 32-bit (4-byte entries: the flip changes one word,
// an exchange, and the large page is a 4 MiB one; no keys, no XD).

import type { Machine } from '../machine/machine.js';
import type { Job } from '../machine/machine.js';
import { findEntry, mapPage, MAP_OK } from '../hw/pagetable.js';
import { NO_FRAME } from '../hw/frames.js';
import { PTE_A, PTE_D, PTE_P, PTE_RW, PTE_US, makeHi, makeLo } from '../hw/pte.js';
import { split64 } from '../hw/vaddr.js';
import { F_NW, F_PK_SHIFT, F_USER, F_XD } from '../hw/fault.js';
import { CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CR4_PGE, CR4_PSE, DEFAULT_REGS, EFER_NXE } from '../hw/regs.js';
import { map32, mapPae } from '../hw/legacy.js';
import type { DumpPaging } from '../machine/dump.js';
import type { HwMixProgram } from './sources.js';

export const STRESS_MIX_KINDS = ['load', 'store', 'fetch', 'invlpg', 'ping', 'xlate', 'toggle', 'flip'] as const;
export type StressMix = Record<(typeof STRESS_MIX_KINDS)[number], number>;

/** Default weights: mostly accesses, with every protocol exercised each round. */
export const DEFAULT_STRESS_MIX: StressMix = { load: 600, store: 300, fetch: 20, invlpg: 20, ping: 2, xlate: 40, toggle: 15, flip: 3 };

export interface HwStressSetup {
  cr3: bigint;
  paging: DumpPaging;
  regions: { va: string; bytes: number }[];
  flipVa: string;
  flipWord: number;
  flipStates: [[number, number], [number, number]];
  /** The two translations a walk of the flip page may produce, plus its not-present fault. */
  legalXlates: Set<string>;
  toggleWords: number[];
  toggleBits: number;
}

/** A setup the machine has no room for. */
export class SetupError extends Error {}

function need(f: number, what: string): number {
  if (f === NO_FRAME) throw new SetupError(`out of memory setting up the stress run (${what}); give the machine more --memory`);
  return f;
}

/** A run of `pages` frames on `node` aligned to `pages` (the rest of what was taken goes back). */
function alignedRun(m: Machine, node: number, pages: number): number {
  const f = need(m.frames.allocContiguous(node, 2 * pages - 1), `${pages * 4} KiB of contiguous frames for a large page`);
  const a = Math.ceil(f / pages) * pages;
  for (let x = f; x < f + 2 * pages - 1; x++) if (x < a || x >= a + pages) m.frames.free(x);
  return a;
}

/** Builds the shared tables on node 0 in the given paging mode and points every core at them (user mode). Main thread, cores offline. */
export function setupHwStress(m: Machine, dataPages = 64, paging: DumpPaging = '4level'): HwStressSetup {
  const root = need(m.frames.allocZeroed(0), 'root table');
  const la57 = paging === '5level';
  const fail = (va: bigint): never => {
    throw new SetupError(`out of memory mapping 0x${va.toString(16)} for the stress run; give the machine more --memory`);
  };
  const map = (va: bigint, pfn: number, shift: number, write: boolean): void => {
    const attrs = { user: true, write };
    const { hi, lo } = split64(va);
    const r = paging === '32bit' ? map32(m.mem, m.frames, 0, root, lo, pfn, shift !== 12, attrs)
      : paging === 'pae' ? mapPae(m.mem, m.frames, 0, root, lo, pfn, shift, attrs)
      : mapPage(m.mem, m.frames, 0, root, la57, hi, lo, pfn, shift, attrs);
    if (r !== MAP_OK) fail(va);
  };
  /** Word of va's leaf entry (a 4 KiB page). */
  const leafWord = (va: bigint): number => {
    const { hi, lo } = split64(va);
    if (paging === '32bit') return (m.mem[root * 1024 + (lo >>> 22)] >>> 12) * 1024 + ((lo >>> 12) & 1023);
    if (paging === 'pae') {
      const pd = m.mem[root * 1024 + (lo >>> 30) * 2] >>> 12;
      return (m.mem[pd * 1024 + ((lo >>> 21) & 511) * 2] >>> 12) * 1024 + ((lo >>> 12) & 511) * 2;
    }
    return findEntry(m.mem, root, la57, hi, lo, 12);
  };
  const base = 0x1000_0000n;
  for (let i = 0; i < dataPages; i++) map(base + BigInt(i) * 0x1000n, need(m.frames.allocZeroed(i % m.config.nodes), 'data page'), 12, true);
  const hugeVa = 0x4000_0000n;
  const hugeShift = paging === '32bit' ? 22 : 21;
  const huge = paging === '32bit' ? alignedRun(m, m.config.nodes - 1, 1024) : need(m.frames.allocContiguous(m.config.nodes - 1, 512), 'a 2 MiB page');
  map(hugeVa, huge, hugeShift, true);
  const flipVa = 0x7000_0000n;
  const fa = need(m.frames.allocZeroed(0), 'flip frame');
  const fb = need(m.frames.allocZeroed(0), 'flip frame');
  map(flipVa, fa, 12, true);
  // The two states differ in both halves where entries have two (keys 1 and 2 in IA-32e paging,
  // XD where there is one); a 32-bit entry is one word (the next word, the neighbour's entry, stays 0).
  const ia32e = paging === '4level' || paging === '5level';
  const [keyA, keyB] = ia32e ? [1, 2] : [0, 0];
  const stA: [number, number] = paging === '32bit' ? [(fa << 12) | PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D, 0] : [makeLo(fa, PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D), makeHi(fa, keyA, false)];
  const stB: [number, number] = paging === '32bit' ? [(fb << 12) | PTE_P | PTE_US | PTE_A | PTE_D, 0] : [makeLo(fb, PTE_P | PTE_US | PTE_A | PTE_D), makeHi(fb, keyB, true)];
  const flipWord = leafWord(flipVa);
  m.mem[flipWord + 1] = stA[1];
  m.mem[flipWord] = stA[0];
  const toggleWords = [0, 1, 2, 3].map((i) => leafWord(base + BigInt(i) * 0x1000n));
  const cr3 = BigInt(root) << 12n;
  const legacyCr0 = (CR0_PG | CR0_WP | 1) | 0;
  const regs = paging === '32bit' ? { cr0: legacyCr0, cr4: CR4_PSE | CR4_PGE, efer: 0 }
    : paging === 'pae' ? { cr0: legacyCr0, cr4: CR4_PAE | CR4_PGE, efer: EFER_NXE }
    : { cr0: DEFAULT_REGS.cr0, cr4: CR4_PAE | CR4_PGE | (la57 ? CR4_LA57 : 0), efer: DEFAULT_REGS.efer };
  for (let c = 0; c < m.config.cores; c++) m.setRegisters(c, { cr3, ...regs, cpl: 3 });
  return {
    cr3,
    paging,
    regions: [
      { va: '0x' + base.toString(16), bytes: dataPages * 4096 },
      { va: '0x' + hugeVa.toString(16), bytes: 2 ** hugeShift },
    ],
    flipVa: '0x' + flipVa.toString(16),
    flipWord,
    flipStates: [stA, stB],
    legalXlates: new Set([
      `${fa}:${F_USER | (1 << (F_PK_SHIFT + keyA))}`,
      `${fb}:${F_USER | F_NW | (paging === '32bit' ? 0 : F_XD) | (1 << (F_PK_SHIFT + keyB))}`,
      'fault:14:4',
    ]),
    toggleWords,
    toggleBits: (1 << 9) | PTE_D,
  };
}

/** The jobs of one round: every core runs `count` operations of the mix; only core 0 flips. */
export function hwStressJobs(m: Machine, s: HwStressSetup, seed: number, round: number, count: number, mix: StressMix, endsAt?: number): Job[] {
  const cores = [...Array(m.config.cores).keys()];
  return cores.map((c) => {
    const program: HwMixProgram = {
      kind: 'hw-mix',
      seed: (seed + round * 0x9e3779b1) | 0,
      count,
      regions: s.regions,
      targets: cores,
      flipVa: s.flipVa,
      flipWord: s.flipWord,
      flipStates: s.flipStates,
      toggleWords: s.toggleWords,
      toggleBits: s.toggleBits,
      mix: { ...mix, flip: c === 0 ? mix.flip : 0 },
      endsAt,
    };
    return { core: c, program };
  });
}
