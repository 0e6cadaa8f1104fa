// Building and reading page tables directly in physical memory, as an OS's low-level paging code
// does (after xv6's walk/mappages). Two traversals and nothing else: `walkTo` follows (and, given
// a table source, builds) the chain of tables down to one level for one address — entry lookup,
// table building, `mapPage` and the kernel's table accounting all use it; `visitTables` visits
// every entry of a hierarchy in address order without side effects — enumeration of mappings
// for dumps and checkers, and the list of table frames a space holds. The architectural walk
// (walk.ts) stays apart: it is the hot path and sets A/D. Errors are values.
//
//   63     57 56   48 47   39 38   30 29   21 20   12 11        0
//   | sign  | PML5  | PML4  | PDPT  |  PD   |  PT   |  offset   |   (shift 48, 39, 30, 21, 12)

import type { Frames } from './frames.js';
import { NO_FRAME } from './frames.js';
import { FRAME_WORDS, HI_ADDR_MASK, HI_PKEY_SHIFT, HI_XD, PTE_A, PTE_D, PTE_G, PTE_P, PTE_PAT_HUGE, PTE_PS, PTE_RW, PTE_US, entryFrame, makeHi, makeLo, PTE_PCD, PTE_PWT } from './pte.js';
import { addHi, addLo, tableIndex, vaJoin } from './vaddr.js';

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

/** walkTo's outcome when a table on the way is missing and no table source was given. */
export const MAP_ABSENT = 3;

/**
 * Returns the word index of the entry for vhi:vlo at the level whose entries cover 2^shift
 * bytes, following present tables. A missing table is taken from `newTable` (a zeroed frame,
 * linked with `tableFlags`), or, with no table source, ends the walk: -1 - MAP_ABSENT. A huge
 * leaf above the level is -1 - MAP_CONFLICT; no frame for a table, -1 - MAP_OUT_OF_MEMORY.
 * Without a table source it has no side effects (any thread); with one, single writer per
 * hierarchy (the caller serialises).
 */
export function walkTo(
  mem: Int32Array, rootPfn: number, la57: boolean, vhi: number, vlo: number, shift: number,
  newTable: TableSource | null, tableFlags: number,
): number {
  let table = rootPfn;
  for (let s = la57 ? 48 : 39; ; s -= 9) {
    const word = table * FRAME_WORDS + tableIndex(vhi, vlo, s) * 2;
    if (s === shift) return word;
    const lo = Atomics.load(mem, word);
    if ((lo & PTE_P) === 0) {
      if (newTable === null) return -1 - MAP_ABSENT;
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

/**
 * The page size of the next piece of a mapping at an address whose low half is vlo (frame pfn,
 * `left` pages to go): the largest of 1 GiB, 2 MiB and 4 KiB that both are aligned to and that
 * fits. Returns its shift.
 */
export function pieceShift(vlo: number, pfn: number, left: number): number {
  if ((vlo & (2 ** 30 - 1)) === 0 && pfn % 2 ** 18 === 0 && left >= 2 ** 18) return 30;
  if ((vlo & (2 ** 21 - 1)) === 0 && pfn % 512 === 0 && left >= 512) return 21;
  return 12;
}

/** The page size (shift) of the piece holding page `idx` of a mapping of `pages` pages at vlo / frame pfn (pieceShift's pieces). */
export function pieceShiftAt(vlo: number, pfn: number, pages: number, idx: number): number {
  for (let off = 0; off < pages;) {
    const shift = pieceShift(addLo(vlo, off * 4096), pfn + off, pages - off);
    off += 2 ** (shift - 12);
    if (idx < off) return shift;
  }
  return -1;
}

/**
 * Calls fn(word, vhi, vlo) for the leaf entry of every piece (pieceShift's) of the mapping of
 * `pages` pages at vhi:vlo / frame pfn under a 4-level root, in address order; word < 0 when a
 * table on the way is missing. A closure per call: for cold paths (the replicas' hot applies
 * walk their pieces inline).
 */
export function forEachLeaf(
  mem: Int32Array, root: number, hi: number, lo: number, pfn: number, pages: number, fn: (word: number, vhi: number, vlo: number) => void,
): void {
  for (let off = 0; off < pages;) {
    const vhi = addHi(hi, lo, off * 4096);
    const vlo = addLo(lo, off * 4096);
    const shift = pieceShift(vlo, pfn + off, pages - off);
    fn(walkTo(mem, root, false, vhi, vlo, shift, null, 0), vhi, vlo);
    off += 2 ** (shift - 12);
  }
}

/** Low half of a leaf for frame pfn, page size 2^shift, with `flags` (PTE_RW, PTE_US, PTE_G, PTE_A, PTE_D): present, PS above 4 KiB. */
export function leafLo(pfn: number, shift: number, flags: number): number {
  return makeLo(pfn, flags | PTE_P | (shift !== 12 ? PTE_PS : 0));
}

/** Low and high halves of a leaf for frame pfn, page size 2^shift, with attrs (the public edge's form). */
export function leafEntry(pfn: number, shift: number, attrs: LeafAttrs): [number, number] {
  let flags = 0;
  if (attrs.write) flags |= PTE_RW;
  if (attrs.user) flags |= PTE_US;
  if (attrs.global) flags |= PTE_G;
  if (attrs.accessed) flags |= PTE_A;
  if (attrs.dirty) flags |= PTE_D;
  return [leafLo(pfn, shift, flags), makeHi(pfn, attrs.pkey ?? 0, attrs.nx ?? false)];
}

/**
 * Word index of the entry for vhi:vlo at the level whose entries cover 2^shift bytes, following
 * present tables only; -1 when a table on the way is missing or a huge leaf sits above. No side
 * effects. Any thread.
 */
export function findEntry(mem: Int32Array, rootPfn: number, la57: boolean, vhi: number, vlo: number, shift: number): number {
  const w = walkTo(mem, rootPfn, la57, vhi, vlo, shift, null, 0);
  return w < 0 ? -1 : w;
}

/**
 * Tables that mapping [vhi:vlo, + pages * 4 KiB) would add under a 4-level root: one per PDPT,
 * PD and PT the range needs and the hierarchy lacks now. No side effects. Any thread.
 */
export function missingTables(mem: Int32Array, rootPfn: number, vhi: number, vlo: number, pages: number): number {
  const va = vaJoin(vhi, vlo);
  const last = va + pages * 4096 - 1;
  let need = 0;
  // A PDPT per 512 GiB (its entry in the PML4), a PD per 1 GiB, a PT per 2 MiB.
  // The k-th region of a level holds vhi:vlo + k spans (the walk reads only the index bits).
  for (let shift = 39; shift >= 21; shift -= 9) {
    const span = 2 ** shift;
    const regions = Math.floor(last / span) - Math.floor(va / span) + 1;
    for (let k = 0; k < regions; k++) {
      const w = walkTo(mem, rootPfn, false, addHi(vhi, vlo, k * span), addLo(vlo, k * span), shift, null, 0);
      if (w < 0 || (Atomics.load(mem, w) & PTE_P) === 0) need++;
    }
  }
  return need;
}

/**
 * Maps one page of 2^shift bytes (12, 21, 30) at vhi:vlo to frame pfn, creating tables
 * (present, writable, user) on `node`. Returns MAP_OK or a MAP_* error.
 */
export function mapPage(
  mem: Int32Array, frames: Frames, node: number, rootPfn: number, la57: boolean,
  vhi: number, vlo: number, pfn: number, shift: number, attrs: LeafAttrs,
): number {
  const word = walkTo(mem, rootPfn, la57, vhi, vlo, shift, () => frames.allocZeroed(node), PTE_RW | PTE_US);
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
  /** Cache control of the leaf: page-level cache disable and write-through (set on I/O mappings). */
  pcd: boolean;
  pwt: boolean;
}

/**
 * Visits every present entry under the root in address order, without side effects: `fn(lo, hi,
 * shift, va)` for each (va as a BigInt, not yet sign-extended), descending into the table the
 * entry points at when `fn` returns true (it must not for a leaf). Top-level entries
 * [topFrom, topTo) only (0-256: the user half of a 4-level root). Tables outside memory are
 * skipped. Any thread.
 */
export function visitTables(
  mem: Int32Array, totalFrames: number, rootPfn: number, la57: boolean, topFrom: number, topTo: number,
  fn: (lo: number, hi: number, shift: number, va: bigint) => boolean,
): void {
  const visit = (t: number, shift: number, base: bigint, from: number, to: number): void => {
    if (t >= totalFrames) return;
    for (let i = from; i < to; i++) {
      const word = t * FRAME_WORDS + i * 2;
      const lo = Atomics.load(mem, word);
      if ((lo & PTE_P) === 0) continue;
      const hi = mem[word + 1];
      const va = base | (BigInt(i) << BigInt(shift));
      if (fn(lo, hi, shift, va) && shift > 12) visit(entryFrame(lo, hi), shift - 9, va, 0, 512);
    }
  };
  visit(rootPfn, la57 ? 48 : 39, 0n, topFrom, topTo);
}

/**
 * Every page-table frame under a 4-level root, root included, for the user half (entries 0-255 of
 * the PML4), or for top-level entries [from, to).
 */
export function tableFrames(mem: Int32Array, totalFrames: number, rootPfn: number, from = 0, to = 256): number[] {
  const out = [rootPfn];
  visitTables(mem, totalFrames, rootPfn, false, from, to, (lo, hi, shift) => {
    if (shift <= 30 && (lo & PTE_PS) !== 0) return false; // a 1 GiB or 2 MiB leaf
    out.push(entryFrame(lo, hi));
    return shift > 21; // the PT frames are the last level of tables
  });
  return out;
}

/**
 * Every present leaf under the root, in address order, read without side effects (no A/D
 * update). Entries with reserved bits or pointing outside memory are skipped as the walker
 * would refuse them. Any thread.
 */
export function enumerateMappings(mem: Int32Array, totalFrames: number, rootPfn: number, la57: boolean): Mapping[] {
  const out: Mapping[] = [];
  const bits = la57 ? 57 : 48;
  // Rights combined down the path: the visitor goes depth first, so one slot per level holds them.
  const rw: boolean[] = [];
  const us: boolean[] = [];
  const xd: boolean[] = [];
  const top = la57 ? 48 : 39;
  visitTables(mem, totalFrames, rootPfn, la57, 0, 512, (lo, hi, shift, va) => {
    const up = (shift - 12) / 9 + 1;
    const w = (shift === top || rw[up]) && (lo & PTE_RW) !== 0;
    const u = (shift === top || us[up]) && (lo & PTE_US) !== 0;
    const x = (shift !== top && xd[up]) || (hi & HI_XD) !== 0;
    const leaf = shift === 12 || (shift <= 30 && (lo & PTE_PS) !== 0);
    if (!leaf) {
      const level = (shift - 12) / 9;
      rw[level] = w;
      us[level] = u;
      xd[level] = x;
      return (lo & PTE_PS) === 0; // a PS bit above 1 GiB is reserved: the walker refuses it
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
      pcd: (lo & PTE_PCD) !== 0,
      pwt: (lo & PTE_PWT) !== 0,
    });
    return false;
  });
  return out;
}
