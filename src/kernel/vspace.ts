// One replica of a replicated address space (NRK's VSpace behind NR): the mapping database plus
// the hardware page tables built from it, rooted at one PML4 per NUMA node. This module is the
// structure's `apply`: the deterministic effect of MapFrame, Unmap and Adjust on one replica.
// Every replica applies the same operations in log order and reaches the same mappings and the
// same leaf entries; intermediate tables are different frames (each replica's own node).
//
// Page-table frames come from the replica's pool, which the issuing core filled before the
// operation entered the log (kernel.ts, reserveTables): so the outcome of an allocation is the
// same on every replica. Data frames are named in the operation: every replica maps the same one.

import type { Replicated } from '../nr/nr.js';
import { MapDb } from './mapdb.js';
import {
  KernelLayout, SR_COUNT, SR_FRAMES, SR_LOCK, SR_RESERVED, SR_ROOT, SR_TABLES,
} from './layout.js';
import { findEntry, leafEntry, walkCreate, type LeafAttrs } from '../hw/ptbuild.js';
import { HI_XD, PTE_P, PTE_RW, PTE_US } from '../hw/pte.js';
import { panic } from '../hw/panic.js';

// ---- operations and results ----
export const VS_MAP = 1;
export const VS_UNMAP = 2;
export const VS_ADJUST = 3;
/** Replace the frame (and rights) of a one-page mapping: copy-on-write and zero-page faults. */
export const VS_REMAP = 4;

/** Rights of a mapping. */
export const R_WRITE = 1;
export const R_USER = 2;
export const R_NX = 4;
/** Kinds (MH's states), kept in the same word. A COW or ZERO mapping's leaf is read-only whatever R_WRITE says. */
/** Copy-on-write: the frame is shared read-only; R_WRITE says whether it becomes writable on its first write. */
export const R_COW = 8;
/** Demand-zero: mapped to the zero page read-only; the first write allocates a frame. */
export const R_ZERO = 16;
/** Wired (exported to a device): never shared by fork, never moved. */
export const R_WIRED = 32;
/** Mapped to device (I/O) memory: absent in a forked child. */
export const R_IO = 64;
/** MH policy: made private read-only by a copy-on-write fault; the user-level handler restores write on the next fault. */
export const R_WAS_COW = 128;
/** The access rights a program may change with Adjust; the kinds (COW, ZERO, WIRED, IO...) stay. */
export const R_ACCESS = R_WRITE | R_USER | R_NX;
export const R_ALL = 0xff;

/** Outcomes (NRK's errors as values). */
export const OK = 0;
export const ALREADY_MAPPED = 1;
export const INVALID_FRAME = 2;
export const INVALID_BASE = 3;
export const NOT_MAPPED = 4;
export const OUT_OF_MEMORY = 5;
export const RESULT_NAMES = ['Ok', 'AlreadyMapped', 'InvalidFrame', 'InvalidBase', 'NotMapped', 'OutOfMemory'];

export const PAGE = 4096;

/** Splits a mapping into pages of the largest size that fits (1 GiB, 2 MiB, 4 KiB): [va, pfn, shift]. */
export function* pieces(va: number, pfn: number, pages: number): Generator<[number, number, number]> {
  let off = 0;
  while (off < pages) {
    const v = va + off * PAGE;
    const f = pfn + off;
    const left = pages - off;
    let shift = 12;
    if (v % 2 ** 30 === 0 && f % 2 ** 18 === 0 && left >= 2 ** 18) shift = 30;
    else if (v % 2 ** 21 === 0 && f % 512 === 0 && left >= 512) shift = 21;
    yield [v, f, shift];
    off += 2 ** (shift - 12);
  }
}

/** Frames a pool keeps beyond its promises; more are given back to the node. */
export const POOL_SLACK = 16;

/** The leaf attributes of a mapping: COW and ZERO mappings are read-only in hardware. */
export function attrsOf(rights: number): LeafAttrs {
  return { write: (rights & R_WRITE) !== 0 && (rights & (R_COW | R_ZERO)) === 0, user: (rights & R_USER) !== 0, nx: (rights & R_NX) !== 0 };
}

/** Whether the hardware leaf of a mapping with these rights is writable. */
export function leafWritable(rights: number): boolean {
  return (rights & R_WRITE) !== 0 && (rights & (R_COW | R_ZERO)) === 0;
}

function halves(va: number): [number, number] {
  return [Math.floor(va / 4294967296) | 0, va % 4294967296 | 0];
}

/** The replicated address space `space`: apply() for NR, and direct reads for Resolve and checks. */
export class VSpace implements Replicated {
  private readonly dbs: MapDb[] = [];

  constructor(
    readonly klayout: KernelLayout,
    readonly k: Int32Array,
    readonly mem: Int32Array,
    readonly space: number,
    /** Returns a spare pool frame to its node. */
    readonly freeFrame: (pfn: number) => void,
  ) {
    for (let r = 0; r < klayout.config.nodes; r++) {
      this.dbs.push(new MapDb(k, klayout.arenaBase(space, r), klayout.arenaWordsEach));
    }
  }

  db(r: number): MapDb {
    return this.dbs[r];
  }

  root(r: number): number {
    return Atomics.load(this.k, this.klayout.replicaBase(this.space, r) + SR_ROOT);
  }

  /** Takes one zeroed frame from replica r's pool (reserved by the issuer). Combiner of r only. */
  private takeTable(r: number): number {
    const k = this.k;
    const b = this.klayout.replicaBase(this.space, r);
    lockPool(k, b);
    try {
      const n = k[b + SR_COUNT];
      if (n === 0) panic(`vspace.takeTable: space ${this.space} replica ${r}: pool empty although frames were reserved`);
      k[b + SR_COUNT] = n - 1;
      k[b + SR_TABLES]++;
      const f = k[b + SR_FRAMES + n - 1];
      this.mem.fill(0, f * 1024, f * 1024 + 1024);
      return f;
    } finally {
      Atomics.store(k, b + SR_LOCK, 0);
    }
  }

  /** Drops an applied operation's promise; frames beyond POOL_SLACK spare go back to the node. */
  private releaseReservation(r: number, need: number): void {
    // Nothing was promised (no table was missing): the pool is as the last release left it.
    if (need === 0) return;
    const k = this.k;
    const b = this.klayout.replicaBase(this.space, r);
    lockPool(k, b);
    k[b + SR_RESERVED] -= need;
    while (k[b + SR_COUNT] - k[b + SR_RESERVED] > POOL_SLACK) {
      k[b + SR_COUNT]--;
      this.freeFrame(k[b + SR_FRAMES + k[b + SR_COUNT]]);
    }
    Atomics.store(k, b + SR_LOCK, 0);
  }

  apply(r: number, op: number, w: Int32Array, a: number, resp: Int32Array, ro: number): void {
    const va = w[a] * 4294967296 + (w[a + 1] >>> 0);
    switch (op) {
      case VS_MAP:
        this.applyMap(r, va, w[a + 2], w[a + 3], w[a + 4], resp, ro);
        this.releaseReservation(r, w[a + 5]);
        return;
      case VS_UNMAP:
        this.applyUnmap(r, va, resp, ro);
        return;
      case VS_ADJUST:
        this.applyAdjust(r, va, w[a + 2], w[a + 3], resp, ro);
        return;
      case VS_REMAP:
        this.applyRemap(r, va, w[a + 2], w[a + 3], resp, ro);
        return;
      default:
        panic(`vspace.apply: unknown operation ${op}`);
    }
  }

  private applyMap(r: number, va: number, pfn: number, pages: number, rights: number, resp: Int32Array, ro: number): void {
    const db = this.dbs[r];
    const end = va + pages * PAGE;
    const f = db.floor(va);
    let conflict = -1;
    if (f && f.va + f.pages * PAGE > va) {
      if (f.va === va && f.pfn === pfn && f.pages === pages && f.rights === rights) {
        resp[ro] = OK; // an identical mapping is accepted
        return;
      }
      conflict = va;
    } else {
      const c = db.ceil(va);
      if (c && c.va < end) conflict = c.va;
    }
    if (conflict >= 0) {
      resp[ro] = ALREADY_MAPPED;
      [resp[ro + 1], resp[ro + 2]] = halves(conflict);
      return;
    }
    if (!db.insert({ va, pfn, pages, rights })) {
      resp[ro] = OUT_OF_MEMORY;
      return;
    }
    const root = this.root(r);
    const attrs = attrsOf(rights);
    for (const [v, p, shift] of pieces(va, pfn, pages)) {
      const [hi, lo] = halves(v);
      const word = walkCreate(this.mem, () => this.takeTable(r), root, false, hi, lo, shift, PTE_RW | PTE_US);
      if (word < 0) panic(`vspace.applyMap: space ${this.space} replica ${r}: no table for 0x${v.toString(16)} (${-1 - word})`);
      const [elo, ehi] = leafEntry(p, shift, attrs);
      this.mem[word + 1] = ehi;
      Atomics.store(this.mem, word, elo);
    }
    resp[ro] = OK;
  }

  /** Word of the leaf entry for one piece of a mapping in replica r. */
  private leafWord(r: number, v: number, shift: number): number {
    const [hi, lo] = halves(v);
    const word = findEntry(this.mem, this.root(r), false, hi, lo, shift);
    if (word < 0) panic(`vspace: space ${this.space} replica ${r}: mapping at 0x${v.toString(16)} has no leaf`);
    return word;
  }

  private applyUnmap(r: number, va: number, resp: Int32Array, ro: number): void {
    const e = this.dbs[r].remove(va);
    if (!e) {
      resp[ro] = NOT_MAPPED;
      return;
    }
    for (const [v, , shift] of pieces(e.va, e.pfn, e.pages)) Atomics.store(this.mem, this.leafWord(r, v, shift), 0);
    resp[ro] = OK;
    resp[ro + 1] = e.pfn;
    resp[ro + 2] = e.pages;
    resp[ro + 3] = e.rights;
  }

  /**
   * Changes the rights of the mapping based at va. Each leaf changes in two single-word steps,
   * first to the intersection of old and new rights, then to the new rights: a walk that reads
   * the entry between any two stores sees rights no wider than the old or the new ones.
   */
  private applyAdjust(r: number, va: number, requested: number, mask: number, resp: Int32Array, ro: number): void {
    const db = this.dbs[r];
    const old = db.find(va);
    if (!old || old.va !== va) {
      resp[ro] = NOT_MAPPED;
      return;
    }
    // Only the bits in `mask` change: a program's Adjust keeps a copy-on-write page copy-on-write.
    const rights = (old.rights & ~mask) | (requested & mask);
    db.setRights(va, rights);
    const mem = this.mem;
    const clearLo = (leafWritable(rights) ? 0 : PTE_RW) | (rights & R_USER ? 0 : PTE_US);
    const setLo = (leafWritable(rights) ? PTE_RW : 0) | (rights & R_USER ? PTE_US : 0);
    for (const [v, , shift] of pieces(old.va, old.pfn, old.pages)) {
      const word = this.leafWord(r, v, shift);
      Atomics.and(mem, word, ~clearLo);
      if (rights & R_NX) Atomics.or(mem, word + 1, HI_XD);
      else Atomics.and(mem, word + 1, ~HI_XD);
      Atomics.or(mem, word, setLo | PTE_P);
    }
    resp[ro] = OK;
    resp[ro + 1] = old.pages;
    resp[ro + 2] = old.rights;
    resp[ro + 3] = rights;
  }

  /**
   * Points the one-page mapping based at va at frame pfn with new rights. The leaf is cleared,
   * then rewritten high half first; the caller shoots down the old translation before the old
   * frame can be written by anyone else.
   */
  private applyRemap(r: number, va: number, pfn: number, rights: number, resp: Int32Array, ro: number): void {
    const old = this.dbs[r].find(va);
    if (!old || old.va !== va || old.pages !== 1) {
      resp[ro] = NOT_MAPPED;
      return;
    }
    this.dbs[r].update(va, pfn, rights);
    const word = this.leafWord(r, va, 12);
    const [lo, hi] = leafEntry(pfn, 12, attrsOf(rights));
    Atomics.store(this.mem, word, 0);
    Atomics.store(this.mem, word + 1, hi);
    Atomics.store(this.mem, word, lo);
    resp[ro] = OK;
    resp[ro + 1] = old.pfn;
    resp[ro + 2] = old.rights;
  }
}

/** Takes a replica pool's lock (short critical sections; bounded). */
export function lockPool(k: Int32Array, b: number): void {
  for (let i = 0; Atomics.compareExchange(k, b + SR_LOCK, 0, 1) !== 0; i++) {
    if (i > 50_000_000) panic(`vspace.lockPool: page-table pool lock at word ${b + SR_LOCK} held for too long`);
  }
}

