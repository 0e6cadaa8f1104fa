// Fork as one replicated operation (Linux's copy_page_range, xv6's uvmcopy): the two bulk passes
// a fork makes over an address space instead of an NR operation per page.
//
// - forkProtect is the effect of one VS_FORK entry of the parent's log on one replica: a pass over
//   the replica's mapping database that makes every shareable mapping copy-on-write (its rights
//   word) and clears R/W in its leaves, stepping through each page table once.
// - copyUserTables builds one replica of the child: the user half of the parent's page tables
//   copied table by table onto the replica's node (leaves as the parent's, now read-only where
//   shared, with A and D cleared: the child has not used them yet, as Linux's pte_mkold).
//
// Wired and I/O mappings are not shared (MH's export, device registers): fork.ts takes them out of
// the child after the copy.

import type { Frames } from '../hw/frames.js';
import { NO_FRAME } from '../hw/frames.js';
import { pieceShift, walkTo } from '../hw/pagetable.js';
import { FRAME_WORDS, HI_ADDR_MASK, PTE_A, PTE_D, PTE_P, PTE_PS, PTE_RW, entryFrame, makeHi, makeLo } from '../hw/pte.js';
import { addHi, addLo, vaJoin } from '../hw/vaddr.js';
import { panic } from '../hw/panic.js';
import type { MapDb } from './mapdb.js';
import { PAGE, R_COW, R_IO, R_WIRED, R_WRITE, R_ZERO, leafWritable } from './ops.js';

/** Whether a fork leaves mapping rights out of the child (wired to a device, or device memory). */
export function notShared(rights: number): boolean {
  return (rights & (R_WIRED | R_IO)) !== 0;
}

/**
 * The rights a shareable mapping has after a fork, in parent and child: copy-on-write, unless it
 * is demand-zero (the zero page is shared read-only already). MH's copy-on-write loses the
 * read/write bit (the seed: "returns into being private, but read-only, no matter the original
 * state").
 */
export function forkRights(rights: number, mh: boolean): number {
  if ((rights & R_ZERO) !== 0) return rights;
  return mh ? (rights & ~R_WRITE) | R_COW : rights | R_COW;
}

/**
 * VS_FORK on one replica: every shareable mapping of `db` takes its fork rights; where its leaf
 * was writable and is no longer, R/W is cleared in the leaves under `root` (an atomic AND: a walk
 * may be setting A or D in the same word). Returns how many mappings lost a writable leaf — the
 * caller shoots down when any did. The replica's combiner only.
 */
export function forkProtect(mem: Int32Array, db: MapDb, root: number, mh: boolean): number {
  let narrowed = 0;
  // The page table of the last 2 MiB region stepped through, so that consecutive pages of a
  // region cost an index each, not a walk.
  let ptHi = -1;
  let ptRegion = -1;
  let pt = 0;
  for (let at = db.firstSlot(); at >= 0; at = db.nextSlot(at)) {
    const old = db.slotRights(at);
    if (notShared(old)) continue;
    const rights = forkRights(old, mh);
    if (rights === old) continue;
    db.setSlotRights(at, rights);
    if (!leafWritable(old) || leafWritable(rights)) continue;
    narrowed++;
    const hi = db.slotHi(at);
    const lo = db.slotLo(at);
    const pfn = db.slotPfn(at);
    const pages = db.slotPages(at);
    for (let off = 0; off < pages;) {
      const vhi = addHi(hi, lo, off * PAGE);
      const vlo = addLo(lo, off * PAGE);
      const shift = pieceShift(vlo, pfn + off, pages - off);
      let word: number;
      if (shift === 12 && vhi === ptHi && vlo >>> 21 === ptRegion) {
        word = pt + ((vlo >>> 12) & 511) * 2;
      } else {
        word = walkTo(mem, root, false, vhi, vlo, shift, null, 0);
        if (word < 0) panic(`forkProtect: mapping at 0x${vaJoin(vhi, vlo).toString(16)} has no leaf`);
        if (shift === 12) {
          ptHi = vhi;
          ptRegion = vlo >>> 21;
          pt = word - (word & (FRAME_WORDS - 1));
        }
      }
      Atomics.and(mem, word, ~PTE_RW);
      off += 2 ** (shift - 12);
    }
  }
  return narrowed;
}

const NONE: readonly number[] = [];

/**
 * Copies the user half (top-level entries 0-255) of the 4-level tables under `srcRoot` into the
 * empty user half of `dstRoot`, every new table a frame of `node`. Table entries keep their flags
 * with A cleared; leaves keep theirs with A and D cleared. Returns the frames made, or null when
 * the node ran out (every frame made is freed again and dstRoot's user half is left empty). The
 * top-level entries in `skip` are left out (RPAL slots shared into the space: not its own).
 * Nobody may change either hierarchy meanwhile (the child is not running; the parent's space lock
 * is held alone).
 */
export function copyUserTables(mem: Int32Array, frames: Frames, srcRoot: number, dstRoot: number, node: number, skip: readonly number[] = NONE): number[] | null {
  const made: number[] = [];
  if (copyTable(mem, frames, node, made, srcRoot, dstRoot, 39, 256, skip)) return made;
  mem.fill(0, dstRoot * FRAME_WORDS, dstRoot * FRAME_WORDS + 256 * 2);
  for (const t of made) frames.free(t);
  return null;
}

/** Copies entries [0, to) of table src (entries covering 2^shift bytes; not those in `skip`) into dst, and the tables under them. */
function copyTable(mem: Int32Array, frames: Frames, node: number, made: number[], src: number, dst: number, shift: number, to: number, skip: readonly number[]): boolean {
  const s0 = src * FRAME_WORDS;
  const d0 = dst * FRAME_WORDS;
  for (let i = 0; i < to; i++) {
    const lo = mem[s0 + i * 2];
    if ((lo & PTE_P) === 0 || (skip.length > 0 && skip.includes(i))) continue;
    const hi = mem[s0 + i * 2 + 1];
    if (shift <= 30 && (lo & PTE_PS) !== 0) {
      mem[d0 + i * 2 + 1] = hi;
      mem[d0 + i * 2] = lo & ~(PTE_A | PTE_D);
      continue;
    }
    const t = frames.alloc(node);
    if (t === NO_FRAME) return false;
    made.push(t);
    const from = entryFrame(lo, hi);
    if (shift === 21) {
      copyLeaves(mem, from, t);
    } else {
      mem.fill(0, t * FRAME_WORDS, (t + 1) * FRAME_WORDS);
      if (!copyTable(mem, frames, node, made, from, t, shift - 9, 512, NONE)) return false;
    }
    mem[d0 + i * 2 + 1] = (hi & ~HI_ADDR_MASK) | makeHi(t, 0, false);
    mem[d0 + i * 2] = makeLo(t, lo & 0xfff & ~PTE_A);
  }
  return true;
}

/** A page table: its entries are all leaves; one block copy, then A and D cleared in each. */
function copyLeaves(mem: Int32Array, src: number, dst: number): void {
  const d0 = dst * FRAME_WORDS;
  mem.copyWithin(d0, src * FRAME_WORDS, (src + 1) * FRAME_WORDS);
  for (let i = 0; i < FRAME_WORDS; i += 2) mem[d0 + i] = mem[d0 + i] & ~(PTE_A | PTE_D);
}
