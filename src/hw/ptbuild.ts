// Building and reading page tables directly in physical memory, as an OS's low-level paging code
// does (after xv6's walk/mappages): one `walkCreate` that finds or allocates the table chain
// down to a level, and `mapPage` on top of it. Side-effect-free enumeration of every leaf of a
// hierarchy serves dumps and checkers. Errors are values.

import type { Frames } from './frames.js';
import { NO_FRAME } from './frames.js';
import {
  FRAME_WORDS, HI_ADDR_MASK, HI_PKEY_SHIFT, HI_XD, PTE_A, PTE_D, PTE_G, PTE_P, PTE_PAT_HUGE, PTE_PS, PTE_RW,
  PTE_US, entryFrame, makeHi, makeLo, tableIndex,
} from './pte.js';

/** Rights and attributes of a new leaf. */
export interface LeafAttrs {
  write?: boolean;
  user?: boolean;
  nx?: boolean;
  global?: boolean;
  pkey?: number;
  accessed?: boolean;
  dirty?: boolean;
}

export const MAP_OK = 0;
export const MAP_OUT_OF_MEMORY = 1;
/** A huge leaf sits where a table is needed, or a leaf already exists at the target. */
export const MAP_CONFLICT = 2;

/** Supplies a zeroed frame for a new page table, or NO_FRAME. */
export type TableSource = () => number;

/**
 * Returns the word index of the entry for vhi:vlo at the level whose entries cover 2^shift
 * bytes, taking missing tables above it from `newTable` (zeroed frames) with `tableFlags`.
 * Returns -1 - MAP_* on failure. Single writer per hierarchy (the caller serialises).
 */
export function walkCreate(
  mem: Int32Array, newTable: TableSource, rootPfn: number, la57: boolean,
  vhi: number, vlo: number, shift: number, tableFlags: number,
): number {
  let table = rootPfn;
  for (let s = la57 ? 48 : 39; ; s -= 9) {
    const word = table * FRAME_WORDS + tableIndex(vhi, vlo, s) * 2;
    if (s === shift) return word;
    const lo = Atomics.load(mem, word);
    if ((lo & PTE_P) === 0) {
      const t = newTable();
      if (t === NO_FRAME) return -1 - MAP_OUT_OF_MEMORY;
      mem[word + 1] = makeHi(t, 0, false);
      Atomics.store(mem, word, makeLo(t, tableFlags | PTE_P));
      table = t;
    } else {
      if (s <= 30 && (lo & PTE_PS) !== 0) return -1 - MAP_CONFLICT;
      table = entryFrame(lo, mem[word + 1]);
    }
  }
}

/** Low and high halves of a leaf for frame pfn, page size 2^shift, with attrs. */
export function leafEntry(pfn: number, shift: number, attrs: LeafAttrs): [number, number] {
  let flags = PTE_P;
  if (attrs.write) flags |= PTE_RW;
  if (attrs.user) flags |= PTE_US;
  if (attrs.global) flags |= PTE_G;
  if (attrs.accessed) flags |= PTE_A;
  if (attrs.dirty) flags |= PTE_D;
  if (shift !== 12) flags |= PTE_PS;
  return [makeLo(pfn, flags), makeHi(pfn, attrs.pkey ?? 0, attrs.nx ?? false)];
}

/**
 * Word index of the entry for vhi:vlo at the level whose entries cover 2^shift bytes, following
 * present tables only; -1 when a table on the way is missing or a huge leaf sits above. No side
 * effects. Any thread.
 */
export function findEntry(mem: Int32Array, rootPfn: number, la57: boolean, vhi: number, vlo: number, shift: number): number {
  let table = rootPfn;
  for (let s = la57 ? 48 : 39; ; s -= 9) {
    const word = table * FRAME_WORDS + tableIndex(vhi, vlo, s) * 2;
    if (s === shift) return word;
    const lo = Atomics.load(mem, word);
    if ((lo & PTE_P) === 0 || (s <= 30 && (lo & PTE_PS) !== 0)) return -1;
    table = entryFrame(lo, mem[word + 1]);
  }
}

/**
 * Maps one page of 2^shift bytes (12, 21, 30) at vhi:vlo to frame pfn, creating tables
 * (present, writable, user) on `node`. Returns MAP_OK or a MAP_* error.
 */
export function mapPage(
  mem: Int32Array, frames: Frames, node: number, rootPfn: number, la57: boolean,
  vhi: number, vlo: number, pfn: number, shift: number, attrs: LeafAttrs,
): number {
  const word = walkCreate(mem, () => frames.allocZeroed(node), rootPfn, la57, vhi, vlo, shift, PTE_RW | PTE_US);
  if (word < 0) return -1 - word;
  if ((Atomics.load(mem, word) & PTE_P) !== 0) return MAP_CONFLICT;
  const [lo, hi] = leafEntry(pfn, shift, attrs);
  mem[word + 1] = hi;
  Atomics.store(mem, word, lo);
  return MAP_OK;
}

/** A leaf as the dump format shows it. Rights are combined over all levels. */
export interface Mapping {
  va: bigint;
  pa: bigint;
  size: number;
  write: boolean;
  user: boolean;
  nx: boolean;
  global: boolean;
  accessed: boolean;
  dirty: boolean;
  pkey: number;
}

/**
 * Every present leaf under the root, in address order, read without side effects (no A/D
 * update). Entries with reserved bits or pointing outside memory are skipped as the walker
 * would refuse them. Any thread.
 */
export function enumerateMappings(mem: Int32Array, totalFrames: number, rootPfn: number, la57: boolean): Mapping[] {
  const out: Mapping[] = [];
  const bits = la57 ? 57 : 48;
  const visit = (table: number, shift: number, base: bigint, rw: boolean, us: boolean, xd: boolean): void => {
    if (table >= totalFrames) return;
    for (let i = 0; i < 512; i++) {
      const word = table * FRAME_WORDS + i * 2;
      const lo = Atomics.load(mem, word);
      if ((lo & PTE_P) === 0) continue;
      const hi = mem[word + 1];
      const va = base | (BigInt(i) << BigInt(shift));
      const w = rw && (lo & PTE_RW) !== 0;
      const u = us && (lo & PTE_US) !== 0;
      const x = xd || (hi & HI_XD) !== 0;
      const leaf = shift === 12 || (shift <= 30 && (lo & PTE_PS) !== 0);
      if (!leaf) {
        if (shift >= 39 && (lo & PTE_PS) !== 0) continue;
        visit(entryFrame(lo, hi), shift - 9, va, w, u, x);
        continue;
      }
      const pfn = (((shift === 12 ? lo : lo & ~PTE_PAT_HUGE) >>> 12) + (hi & HI_ADDR_MASK) * 0x100000);
      const sign = (va >> BigInt(bits - 1)) & 1n;
      const canon = sign ? va | (((1n << 64n) - 1n) ^ ((1n << BigInt(bits)) - 1n)) : va;
      out.push({
        va: canon,
        pa: BigInt(pfn) << 12n,
        size: 2 ** shift,
        write: w,
        user: u,
        nx: x,
        global: (lo & PTE_G) !== 0,
        accessed: (lo & PTE_A) !== 0,
        dirty: (lo & PTE_D) !== 0,
        pkey: (hi >>> HI_PKEY_SHIFT) & 0xf,
      });
    }
  };
  visit(rootPfn, la57 ? 48 : 39, 0n, true, true, false);
  return out;
}
