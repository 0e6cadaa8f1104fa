// The mapping database of one address-space replica: a B+tree in a shared arena, VA -> (frame,
// pages, rights), as NRK keeps a BTreeMap of mappings beside its page tables. Keys are user
// virtual addresses (below 2^56, so exact as JavaScript numbers) held as two 32-bit halves.
// Leaves are chained for ordered iteration. Deletion removes the entry from its leaf and does not
// rebalance: a leaf may become empty and stays in the tree (searches skip it); the arena is
// reclaimed whole when the address space is destroyed. Only the holder of the replica's combiner
// lock writes a tree; readers hold the replica's reader lock.
//
// Arena words: [0] next free node index, [1] root node, [2] entry count, then nodes of NODE_WORDS:
//   leaf:     [kind=1, count, next leaf, height 0, then FANOUT x (keyHi, keyLo, pfn, pages, rights)]
//   internal: [kind=2, count (children), -, height, then FANOUT x (keyHi, keyLo, child, -, -)]
// An internal node's key i is the smallest key under child i.

import { TWO32, vaJoin } from '../hw/vaddr.js';
import { panic } from '../hw/panic.js';

export const FANOUT = 32;
const HDR = 4;
const LEAF_SLOT = 5;
export const NODE_WORDS = HDR + FANOUT * LEAF_SLOT;
const A_NEXT = 0;
const A_ROOT = 1;
const A_COUNT = 2;
const ARENA_HDR = 16;
const LEAF = 1;
const INNER = 2;

/** A mapping: [va, va + pages * 4096) -> frames pfn .. pfn + pages - 1 with rights. */
export interface MapEntry {
  va: number;
  pfn: number;
  pages: number;
  rights: number;
}

/** Deepest path a descent records: (node, child index) per inner level. */
const MAX_PATH = 64;

/** Words an arena needs to hold `maxEntries` mappings in the worst case (half-full leaves). */
export function arenaWords(maxEntries: number): number {
  const leaves = Math.ceil((2 * maxEntries) / FANOUT) + 2;
  const inner = Math.ceil((2 * leaves) / FANOUT) * 2 + 8;
  return ARENA_HDR + (leaves + inner) * NODE_WORDS;
}

/**
 * A handle on one tree. Queries write the mapping they find into a caller's MapEntry and return
 * whether there was one (no allocation); a full arena is the value false from insert.
 */
export class MapDb {
  readonly maxNodes: number;
  /** The (node, child index) pairs of the last recording descent, and how many words it holds. */
  private readonly path = new Int32Array(MAX_PATH);
  private pathLen = 0;

  constructor(readonly w: Int32Array, readonly base: number, readonly words: number) {
    this.maxNodes = Math.floor((words - ARENA_HDR) / NODE_WORDS);
  }

  /** Empties the tree (a root leaf with no entries). */
  reset(): void {
    const w = this.w;
    w[this.base + A_NEXT] = 1;
    w[this.base + A_ROOT] = 0;
    w[this.base + A_COUNT] = 0;
    const n = this.node(0);
    w[n] = LEAF;
    w[n + 1] = 0;
    w[n + 2] = -1;
    w[n + 3] = 0;
  }

  get size(): number {
    return this.w[this.base + A_COUNT];
  }

  private node(i: number): number {
    return this.base + ARENA_HDR + i * NODE_WORDS;
  }

  private alloc(kind: number, height: number): number {
    const i = this.w[this.base + A_NEXT];
    if (i >= this.maxNodes) return -1;
    this.w[this.base + A_NEXT] = i + 1;
    const n = this.node(i);
    this.w[n] = kind;
    this.w[n + 1] = 0;
    this.w[n + 2] = -1;
    this.w[n + 3] = height;
    return i;
  }

  /** Compares key (hi, lo) with the key stored at word k: <0, 0, >0. */
  private cmp(hi: number, lo: number, k: number): number {
    const h = this.w[k];
    if (hi !== h) return hi < h ? -1 : 1;
    const l = this.w[k + 1] >>> 0;
    const x = lo >>> 0;
    return x === l ? 0 : x < l ? -1 : 1;
  }

  /** Index of the last key <= (hi, lo) in node n (by slots of `stride`), or -1. */
  private floorIndex(n: number, hi: number, lo: number): number {
    const count = this.w[n + 1];
    let a = 0;
    let b = count - 1;
    let r = -1;
    while (a <= b) {
      const m = (a + b) >> 1;
      if (this.cmp(hi, lo, n + HDR + m * LEAF_SLOT) >= 0) {
        r = m;
        a = m + 1;
      } else b = m - 1;
    }
    return r;
  }

  /** The leaf that would hold key hi:lo; with `record`, the path of (node, child index) above it goes to this.path. */
  private descend(hi: number, lo: number, record: boolean): number {
    let i = this.w[this.base + A_ROOT];
    this.pathLen = 0;
    for (;;) {
      const n = this.node(i);
      if (this.w[n] === LEAF) return i;
      let c = this.floorIndex(n, hi, lo);
      if (c < 0) c = 0;
      if (record) {
        if (this.pathLen + 2 > MAX_PATH) panic(`MapDb.descend: tree deeper than ${MAX_PATH / 2} levels`);
        this.path[this.pathLen++] = i;
        this.path[this.pathLen++] = c;
      }
      i = this.w[n + HDR + c * LEAF_SLOT + 2];
    }
  }

  /**
   * Copies the mapping at leaf slot word k into out. The key's halves are joined here, not by a
   * call to the codec: deep in a combine that call is not inlined, and a number it returns above
   * 2^31 would be a heap allocation per lookup.
   */
  private readAt(k: number, out: MapEntry): void {
    const w = this.w;
    out.va = w[k] * TWO32 + (w[k + 1] >>> 0);
    out.pfn = w[k + 2];
    out.pages = w[k + 3];
    out.rights = w[k + 4];
  }

  /** Word of the mapping with the largest base <= hi:lo, or -1. */
  private floorSlot(hi: number, lo: number): number {
    let leaf = this.descend(hi, lo, false);
    let n = this.node(leaf);
    const s = this.floorIndex(n, hi, lo);
    if (s >= 0) return n + HDR + s * LEAF_SLOT;
    // The floor lies in an earlier leaf: search from the left (rare: empty or first leaves).
    let best = -1;
    leaf = this.firstLeaf();
    while (leaf >= 0) {
      n = this.node(leaf);
      const c = this.w[n + 1];
      for (let k = 0; k < c; k++) {
        if (this.cmp(hi, lo, n + HDR + k * LEAF_SLOT) < 0) return best;
        best = n + HDR + k * LEAF_SLOT;
      }
      leaf = this.w[n + 2];
    }
    return best;
  }

  /** The mapping with the largest base <= hi:lo, into out. Returns whether there is one. */
  floor(hi: number, lo: number, out: MapEntry): boolean {
    const k = this.floorSlot(hi, lo);
    if (k < 0) return false;
    this.readAt(k, out);
    return true;
  }

  /** The mapping with the smallest base >= hi:lo, into out. Returns whether there is one. */
  ceil(hi: number, lo: number, out: MapEntry): boolean {
    let leaf = this.descend(hi, lo, false);
    while (leaf >= 0) {
      const n = this.node(leaf);
      const c = this.w[n + 1];
      for (let k = 0; k < c; k++) {
        if (this.cmp(hi, lo, n + HDR + k * LEAF_SLOT) <= 0) {
          this.readAt(n + HDR + k * LEAF_SLOT, out);
          return true;
        }
      }
      leaf = this.w[n + 2];
    }
    return false;
  }

  /** The mapping containing hi:lo, into out. Returns whether there is one (out may be written either way). */
  find(hi: number, lo: number, out: MapEntry): boolean {
    return this.floor(hi, lo, out) && vaJoin(hi, lo) < out.va + out.pages * 4096;
  }

  private firstLeaf(): number {
    let i = this.w[this.base + A_ROOT];
    for (;;) {
      const n = this.node(i);
      if (this.w[n] === LEAF) return i;
      i = this.w[n + HDR + 2];
    }
  }

  /** Inserts the mapping [hi:lo, + pages * 4 KiB) -> pfn with rights; its base must not be in the tree. Returns false when the arena is full. */
  insert(hi: number, lo: number, pfn: number, pages: number, rights: number): boolean {
    const leaf = this.descend(hi, lo, true);
    const w = this.w;
    const n = this.node(leaf);
    if (w[n + 1] === FANOUT) {
      // Split first (needs up to depth + 1 new nodes); then re-descend.
      if (this.w[this.base + A_NEXT] + this.pathLen / 2 + 2 > this.maxNodes) return false;
      this.split(leaf, this.pathLen);
      return this.insert(hi, lo, pfn, pages, rights);
    }
    const pos = this.floorIndex(n, hi, lo) + 1;
    const at = n + HDR + pos * LEAF_SLOT;
    w.copyWithin(at + LEAF_SLOT, at, n + HDR + w[n + 1] * LEAF_SLOT);
    w[at] = hi;
    w[at + 1] = lo;
    w[at + 2] = pfn;
    w[at + 3] = pages;
    w[at + 4] = rights;
    w[n + 1]++;
    w[this.base + A_COUNT]++;
    if (pos === 0 && this.pathLen > 0) this.fixSeparators(hi, lo);
    return true;
  }

  /** After inserting a new smallest key in a leaf, lowers the separators above it (on this.path). */
  private fixSeparators(hi: number, lo: number): void {
    const path = this.path;
    for (let p = this.pathLen - 2; p >= 0; p -= 2) {
      const n = this.node(path[p]);
      const k = n + HDR + path[p + 1] * LEAF_SLOT;
      if (this.cmp(hi, lo, k) < 0) {
        this.w[k] = hi;
        this.w[k + 1] = lo;
      }
      if (path[p + 1] !== 0) break;
    }
  }

  /** Splits node i (full) in two, inserting the new node into its parent (splitting upward); its ancestors are this.path[0 .. depth). */
  private split(i: number, depth: number): void {
    const path = this.path;
    const w = this.w;
    const n = this.node(i);
    const kind = w[n];
    const j = this.alloc(kind, w[n + 3]);
    const m = this.node(j);
    const half = FANOUT >> 1;
    w.copyWithin(m + HDR, n + HDR + half * LEAF_SLOT, n + HDR + FANOUT * LEAF_SLOT);
    w[m + 1] = FANOUT - half;
    w[n + 1] = half;
    if (kind === LEAF) {
      w[m + 2] = w[n + 2];
      w[n + 2] = j;
    }
    const sepHi = w[m + HDR];
    const sepLo = w[m + HDR + 1];
    if (depth === 0) {
      const r = this.alloc(INNER, w[n + 3] + 1);
      const rn = this.node(r);
      w[rn + 1] = 2;
      w[rn + HDR] = w[n + HDR];
      w[rn + HDR + 1] = w[n + HDR + 1];
      w[rn + HDR + 2] = i;
      w[rn + HDR + LEAF_SLOT] = sepHi;
      w[rn + HDR + LEAF_SLOT + 1] = sepLo;
      w[rn + HDR + LEAF_SLOT + 2] = j;
      w[this.base + A_ROOT] = r;
      return;
    }
    const parent = path[depth - 2];
    const ci = path[depth - 1];
    const p = this.node(parent);
    if (w[p + 1] === FANOUT) {
      this.split(parent, depth - 2);
      // The parent moved; re-insert the separator by descending again from the root.
      this.insertChild(sepHi, sepLo, j);
      return;
    }
    this.putChild(p, ci + 1, sepHi, sepLo, j);
  }

  /** Inserts (key, child j) at position pos of inner node n (which has room). */
  private putChild(n: number, pos: number, hi: number, lo: number, j: number): void {
    const w = this.w;
    const at = n + HDR + pos * LEAF_SLOT;
    w.copyWithin(at + LEAF_SLOT, at, n + HDR + w[n + 1] * LEAF_SLOT);
    w[at] = hi;
    w[at + 1] = lo;
    w[at + 2] = j;
    w[n + 1]++;
  }

  /** Inserts child j with separator key into the inner node that should hold it. */
  private insertChild(hi: number, lo: number, j: number): void {
    const w = this.w;
    const path = this.path;
    let depth = 0;
    let i = w[this.base + A_ROOT];
    for (;;) {
      const n = this.node(i);
      let c = this.floorIndex(n, hi, lo);
      if (c < 0) c = 0;
      const child = w[n + HDR + c * LEAF_SLOT + 2];
      // Stop at the inner node whose children are at j's height.
      if (w[n + 3] === w[this.node(j) + 3] + 1) {
        if (w[n + 1] === FANOUT) {
          this.split(i, depth);
          this.insertChild(hi, lo, j);
          return;
        }
        this.putChild(n, c + 1, hi, lo, j);
        return;
      }
      path[depth++] = i;
      path[depth++] = c;
      i = child;
    }
  }

  /** Word of the leaf slot of the mapping based exactly at hi:lo, or -1. */
  private exact(hi: number, lo: number): number {
    const n = this.node(this.descend(hi, lo, false));
    const s = this.floorIndex(n, hi, lo);
    if (s < 0 || this.cmp(hi, lo, n + HDR + s * LEAF_SLOT) !== 0) return -1;
    return n + HDR + s * LEAF_SLOT;
  }

  /** Whether `inserts` more inserts fit in the arena, whatever node splits they cause. */
  hasRoom(inserts: number): boolean {
    const height = this.w[this.node(this.w[this.base + A_ROOT]) + 3];
    return this.w[this.base + A_NEXT] + inserts * (height + 3) <= this.maxNodes;
  }

  /** Removes the mapping based exactly at hi:lo, copying it into out. Returns whether there was one. */
  remove(hi: number, lo: number, out: MapEntry): boolean {
    const at = this.exact(hi, lo);
    if (at < 0) return false;
    const w = this.w;
    this.readAt(at, out);
    // The leaf node holding the slot: slots start HDR words into a node.
    const n = this.base + ARENA_HDR + Math.floor((at - this.base - ARENA_HDR) / NODE_WORDS) * NODE_WORDS;
    w.copyWithin(at, at + LEAF_SLOT, n + HDR + w[n + 1] * LEAF_SLOT);
    w[n + 1]--;
    w[this.base + A_COUNT]--;
    return true;
  }

  /** Changes the rights of the mapping based exactly at hi:lo. Returns whether there is one. */
  setRights(hi: number, lo: number, rights: number): boolean {
    const at = this.exact(hi, lo);
    if (at < 0) return false;
    this.w[at + 4] = rights;
    return true;
  }

  /** Replaces frame and rights of the mapping based exactly at hi:lo. Returns whether there is one. */
  update(hi: number, lo: number, pfn: number, rights: number): boolean {
    const at = this.exact(hi, lo);
    if (at < 0) return false;
    this.w[at + 2] = pfn;
    this.w[at + 4] = rights;
    return true;
  }

  // A cursor over the mappings in address order, for passes over a whole tree (fork): a slot is
  // the word of one mapping; no allocation, no call per mapping. One pass at a time per handle.
  private cursorLeaf = -1;
  private cursorEnd = 0;

  /** The slot of the first mapping, or -1 (starts a pass). */
  firstSlot(): number {
    return this.slotFrom(this.firstLeaf());
  }

  /** The slot of the mapping after the one at slot `at` (the pass's last answer), or -1. */
  nextSlot(at: number): number {
    if (at + LEAF_SLOT < this.cursorEnd) return at + LEAF_SLOT;
    return this.slotFrom(this.w[this.node(this.cursorLeaf) + 2]);
  }

  /** The first slot of the first non-empty leaf from leaf index `leaf` on, or -1. */
  private slotFrom(leaf: number): number {
    while (leaf >= 0) {
      const n = this.node(leaf);
      const count = this.w[n + 1];
      if (count > 0) {
        this.cursorLeaf = leaf;
        this.cursorEnd = n + HDR + count * LEAF_SLOT;
        return n + HDR;
      }
      leaf = this.w[n + 2];
    }
    return -1;
  }

  /** The base address's halves, frame, pages and rights of the mapping at slot `at`. */
  slotHi(at: number): number {
    return this.w[at];
  }

  slotLo(at: number): number {
    return this.w[at + 1];
  }

  slotPfn(at: number): number {
    return this.w[at + 2];
  }

  slotPages(at: number): number {
    return this.w[at + 3];
  }

  slotRights(at: number): number {
    return this.w[at + 4];
  }

  setSlotRights(at: number, rights: number): void {
    this.w[at + 4] = rights;
  }

  /** Makes this tree a copy of `src` (the same arena size): the used part of its arena, word for word. */
  copyFrom(src: MapDb): void {
    if (src.words !== this.words) panic(`MapDb.copyFrom: arenas of ${src.words} and ${this.words} words`);
    const used = ARENA_HDR + src.w[src.base + A_NEXT] * NODE_WORDS;
    if (src.w === this.w) this.w.copyWithin(this.base, src.base, src.base + used);
    else this.w.set(src.w.subarray(src.base, src.base + used), this.base);
  }

  /** Every mapping in address order. */
  entries(): MapEntry[] {
    const out: MapEntry[] = [];
    let leaf = this.firstLeaf();
    while (leaf >= 0) {
      const n = this.node(leaf);
      for (let k = 0; k < this.w[n + 1]; k++) {
        const e = { va: 0, pfn: 0, pages: 0, rights: 0 };
        this.readAt(n + HDR + k * LEAF_SLOT, e);
        out.push(e);
      }
      leaf = this.w[n + 2];
    }
    return out;
  }
}
