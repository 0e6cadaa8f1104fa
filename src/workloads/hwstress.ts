// The hardware stress setup: one page-table hierarchy shared by every core, with a shared data
// region (4 KiB pages and one 2 MiB page), a "flip" page whose leaf entry core 0 rewrites between
// two states that differ in both halves, and a few leaf entries whose software bit 9 and D are
// flipped by compareExchange while walkers set A/D. Each round gives every core a seeded hw-mix
// program. What a round must satisfy is checked by src/check/hw.ts.

import type { Machine } from '../machine/machine.js';
import type { Job } from '../machine/machine.js';
import { findEntry, mapPage, MAP_OK } from '../hw/pagetable.js';
import { NO_FRAME } from '../hw/frames.js';
import { PTE_A, PTE_D, PTE_P, PTE_RW, PTE_US, makeHi, makeLo } from '../hw/pte.js';
import { split64 } from '../hw/vaddr.js';
import { F_NW, F_PK_SHIFT, F_USER, F_XD } from '../hw/fault.js';
import { CR4_PAE, CR4_PGE } from '../hw/regs.js';
import type { HwMixProgram } from './sources.js';

export const STRESS_MIX_KINDS = ['load', 'store', 'fetch', 'invlpg', 'ping', 'xlate', 'toggle', 'flip'] as const;
export type StressMix = Record<(typeof STRESS_MIX_KINDS)[number], number>;

/** Default weights: mostly accesses, with every protocol exercised each round. */
export const DEFAULT_STRESS_MIX: StressMix = { load: 600, store: 300, fetch: 20, invlpg: 20, ping: 2, xlate: 40, toggle: 15, flip: 3 };

export interface HwStressSetup {
  cr3: bigint;
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

/** Builds the shared tables on node 0 and points every core at them (user mode). Main thread, cores offline. */
export function setupHwStress(m: Machine, dataPages = 64): HwStressSetup {
  const root = need(m.frames.allocZeroed(0), 'root table');
  const map = (va: bigint, pfn: number, shift: number, write: boolean): void => {
    const { hi, lo } = split64(va);
    if (mapPage(m.mem, m.frames, 0, root, false, hi, lo, pfn, shift, { user: true, write }) !== MAP_OK) {
      throw new SetupError(`out of memory mapping 0x${va.toString(16)} for the stress run; give the machine more --memory`);
    }
  };
  const base = 0x1000_0000n;
  for (let i = 0; i < dataPages; i++) map(base + BigInt(i) * 0x1000n, need(m.frames.allocZeroed(i % m.config.nodes), 'data page'), 12, true);
  const hugeVa = 0x4000_0000n;
  const huge = need(m.frames.allocContiguous(m.config.nodes - 1, 512), 'a 2 MiB page');
  map(hugeVa, huge, 21, true);
  const flipVa = 0x7000_0000n;
  const fa = need(m.frames.allocZeroed(0), 'flip frame');
  const fb = need(m.frames.allocZeroed(0), 'flip frame');
  map(flipVa, fa, 12, true);
  const stA: [number, number] = [makeLo(fa, PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D), makeHi(fa, 1, false)];
  const stB: [number, number] = [makeLo(fb, PTE_P | PTE_US | PTE_A | PTE_D), makeHi(fb, 2, true)];
  const flipWord = leafWord(m, root, flipVa);
  m.mem[flipWord + 1] = stA[1];
  m.mem[flipWord] = stA[0];
  const toggleWords = [0, 1, 2, 3].map((i) => leafWord(m, root, base + BigInt(i) * 0x1000n));
  const cr3 = BigInt(root) << 12n;
  for (let c = 0; c < m.config.cores; c++) m.setRegisters(c, { cr3, cr4: CR4_PAE | CR4_PGE, cpl: 3 });
  return {
    cr3,
    regions: [
      { va: '0x' + base.toString(16), bytes: dataPages * 4096 },
      { va: '0x' + hugeVa.toString(16), bytes: 0x20_0000 },
    ],
    flipVa: '0x' + flipVa.toString(16),
    flipWord,
    flipStates: [stA, stB],
    legalXlates: new Set([
      `${fa}:${F_USER | (1 << (F_PK_SHIFT + 1))}`,
      `${fb}:${F_USER | F_NW | F_XD | (1 << (F_PK_SHIFT + 2))}`,
      'fault:14:4',
    ]),
    toggleWords,
    toggleBits: (1 << 9) | PTE_D,
  };
}

function leafWord(m: Machine, root: number, va: bigint): number {
  const { hi, lo } = split64(va);
  return findEntry(m.mem, root, false, hi, lo, 12);
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
