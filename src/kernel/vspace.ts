// One replica of a replicated address space (NRK's VSpace behind NR): the mapping database plus
// the hardware page tables built from it, rooted at one PML4 per NUMA node. This module is the
// structure's `apply`: the deterministic effect of MapFrame, Unmap and Adjust on one replica.
// Every replica applies the same operations in log order and reaches the same mappings and the
// same leaf entries; intermediate tables are different frames (each replica's own node).
//
// Page-table frames come from the replica's pool, which the issuing core filled before the
// operation entered the log (reserveTables): so the outcome of an allocation is the
// same on every replica. Data frames are named in the operation: every replica maps the same one.

import type { Replicated } from '../nr/nr.js';
import { MapDb, type MapEntry } from './mapdb.js';
import { KernelLayout, SR_COUNT, SR_FRAMES, SR_LIMBO, SR_LOCK, SR_RESERVED, SR_ROOT, SR_TABLES } from './layout.js';
import { leafLo, pieceShift, pieceShiftAt, walkTo } from '../hw/pagetable.js';
import { FRAME_WORDS, HI_XD, PTE_G, PTE_P, PTE_PCD, PTE_PS, PTE_PWT, PTE_RW, PTE_US, entryFrame, makeHi } from '../hw/pte.js';
import { addHi, addLo, vaHi, vaJoin, vaLo } from '../hw/vaddr.js';
import { NO_FRAME, type Frames } from '../hw/frames.js';
import { BoundedWait, STEP_EXPIRED, STEP_SLEEP, sleepOn } from '../hw/wait.js';
import { panic } from '../hw/panic.js';
import {
  A_ADJ_MASK, A_ADJ_RIGHTS, A_ADJ_USER, A_MOVE_FROM, A_PAGES, A_PFN, A_REMAP_RIGHTS, A_RESERVED, A_RIGHTS, A_VA, A_WIRE_DELTA, A_WIRE_PAGES,
  ALREADY_MAPPED, EBUSY, EINVAL, EPERM, NOT_MAPPED, OK, OUT_OF_MEMORY, PAGE, R_GLOBAL, R_IO, R_NX, R_USER, RS_ADJ_NEW, RS_ADJ_OLD, RS_ADJ_PAGES, RS_CODE,
  RS_CONFLICT, RS_MOVE_OLD_PFN, RS_MOVE_OLD_RIGHTS, RS_REMAP_PFN, RS_REMAP_RIGHTS, RS_UNMAP_PAGES, RS_UNMAP_PFN, RS_UNMAP_RIGHTS,
  RS_FORK_NARROWED, RS_WIRE_COUNT, VS_ADJUST, VS_FORK, VS_MAP, VS_PKEY, VS_TOP, A_KEY, keyOf, VS_MOVE, VS_PRUNE, VS_PRUNE_FREE, VS_REMAP, VS_UNMAP, VS_WIRE, leafWritable,
} from './ops.js';
import { forkProtect } from './forkcopy.js';
import { applyPkey } from './keys.js';
import { adjustRule, moveRule, unmapRule, wireCount, wireRule, withWireCount } from './mhstate.js';

/** The personality's rules an apply follows (the same on every replica). */
export interface ApplyRules {
  /** MH's state machine (kernel/mh.ts): EBUSY, EINVAL, EPERM. */
  mh: boolean;
  /** Injected: unmap of a wired page succeeds. */
  skipWireCheck: boolean;
}

/** Leaf flags of a mapping with these rights: R/W, U/S, and PCD|PWT for I/O (uncached device registers). */
function leafFlags(rights: number): number {
  return (leafWritable(rights) ? PTE_RW : 0) | ((rights & R_USER) !== 0 ? PTE_US : 0) | ((rights & R_IO) !== 0 ? PTE_PCD | PTE_PWT : 0) |
    ((rights & R_GLOBAL) !== 0 ? PTE_G : 0);
}

/** Frames a pool keeps beyond its promises; more are given back to the node. */
export const POOL_SLACK = 16;

/** The replicated address space `space`: apply() for NR, and direct reads for Resolve and checks. */
export class VSpace implements Replicated {
  private readonly dbs: MapDb[] = [];
  /** Per replica: a table source for walkTo (made once: no closure per operation). */
  private readonly takers: (() => number)[] = [];
  /** The mapping an operation found (reused). */
  private readonly found: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };
  /** A second mapping an operation found (VS_MOVE's source). */
  private readonly other: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };
  private readonly poolWait: BoundedWait;

  constructor(
    readonly klayout: KernelLayout,
    readonly k: Int32Array,
    readonly mem: Int32Array,
    readonly space: number,
    /** The frame allocator: pools fill from it and give spare frames back to it. */
    readonly frames: Frames,
    /** Bound on waiting for a pool lock (the machine's waitLimitMs). */
    waitLimitMs: number,
    readonly rules: ApplyRules = { mh: false, skipWireCheck: false },
  ) {
    for (let r = 0; r < klayout.config.nodes; r++) {
      this.dbs.push(new MapDb(k, klayout.arenaBase(space, r), klayout.arenaWordsEach));
      this.takers.push(() => this.takeTable(r));
    }
    this.poolWait = new BoundedWait(waitLimitMs, undefined, klayout.config.cores);
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
    this.lockPool(r);
    try {
      const n = k[b + SR_COUNT];
      if (n === 0) panic(`vspace.takeTable: space ${this.space} replica ${r}: pool empty although frames were reserved`);
      k[b + SR_COUNT] = n - 1;
      k[b + SR_TABLES]++;
      const f = k[b + SR_FRAMES + n - 1];
      this.mem.fill(0, f * FRAME_WORDS, (f + 1) * FRAME_WORDS);
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
    this.lockPool(r);
    k[b + SR_RESERVED] -= need;
    while (k[b + SR_COUNT] - k[b + SR_RESERVED] > POOL_SLACK) {
      k[b + SR_COUNT]--;
      this.frames.free(k[b + SR_FRAMES + k[b + SR_COUNT]]);
    }
    Atomics.store(k, b + SR_LOCK, 0);
  }

  /**
   * Makes sure the pools of replicas 0 .. replicas-1 each hold `need` more frames than already
   * promised, allocating from each replica's own node. All or nothing: false (nothing reserved)
   * when a node or a pool is full. The issuer of a MapFrame, before the operation enters the log.
   */
  reserveTables(need: number, replicas: number): boolean {
    // Nothing missing (the common case): no pool is touched, so a map on one node does not take
    // every other node's pool lock.
    if (need === 0) return true;
    const k = this.k;
    for (let r = 0; r < replicas; r++) {
      const b = this.klayout.replicaBase(this.space, r);
      this.lockPool(r);
      let ok = true;
      while (k[b + SR_COUNT] - k[b + SR_RESERVED] < need) {
        const f = k[b + SR_COUNT] >= this.klayout.config.ptPoolFrames ? NO_FRAME : this.frames.alloc(r);
        if (f === NO_FRAME) {
          ok = false;
          break;
        }
        k[b + SR_FRAMES + k[b + SR_COUNT]] = f;
        k[b + SR_COUNT]++;
      }
      if (ok) k[b + SR_RESERVED] += need;
      Atomics.store(k, b + SR_LOCK, 0);
      if (!ok) {
        for (let q = 0; q < r; q++) {
          const qb = this.klayout.replicaBase(this.space, q);
          this.lockPool(q);
          k[qb + SR_RESERVED] -= need;
          Atomics.store(k, qb + SR_LOCK, 0);
        }
        return false;
      }
    }
    return true;
  }

  /** Takes replica r's pool lock (short critical sections; a bounded wait that names the holder). */
  private lockPool(r: number): void {
    const k = this.k;
    const lock = this.klayout.replicaBase(this.space, r) + SR_LOCK;
    if (Atomics.compareExchange(k, lock, 0, 1) === 0) return;
    this.poolWait.begin();
    while (Atomics.compareExchange(k, lock, 0, 1) !== 0) {
      const st = this.poolWait.step();
      if (st === STEP_EXPIRED) panic(`vspace.lockPool: space ${this.space} replica ${r}: page-table pool lock held for ${this.poolWait.limitMs} ms`);
      if (st === STEP_SLEEP) sleepOn(this.poolWait, k, lock, 1);
    }
  }

  /** NR's apply: the effect of one logged operation (arguments at w[a ..]) on replica r, its response at resp[ro ..]. */
  apply(r: number, op: number, w: Int32Array, a: number, resp: Int32Array, ro: number): void {
    const hi = w[a + A_VA];
    const lo = w[a + A_VA + 1];
    switch (op) {
      case VS_MAP:
        this.applyMap(r, hi, lo, w[a + A_PFN], w[a + A_PAGES], w[a + A_RIGHTS], resp, ro);
        this.releaseReservation(r, w[a + A_RESERVED]);
        return;
      case VS_UNMAP:
        this.applyUnmap(r, hi, lo, resp, ro);
        return;
      case VS_ADJUST:
        this.applyAdjust(r, hi, lo, w[a + A_ADJ_RIGHTS], w[a + A_ADJ_MASK], w[a + A_ADJ_USER] === 1, resp, ro);
        return;
      case VS_WIRE:
        this.applyWire(r, hi, lo, w[a + A_WIRE_PAGES], w[a + A_WIRE_DELTA], resp, ro);
        return;
      case VS_MOVE:
        this.applyMove(r, hi, lo, w[a + A_MOVE_FROM], w[a + A_MOVE_FROM + 1], resp, ro);
        return;
      case VS_PRUNE:
        this.applyPrune(r, hi, lo, resp, ro);
        return;
      case VS_PRUNE_FREE:
        this.applyPruneFree(r, resp, ro);
        return;
      case VS_TOP: {
        // RPAL: the slot's PDPT exists in every replica before it is shared (rpal.ts).
        const word = walkTo(this.mem, this.root(r), false, hi, lo, 30, this.takers[r], PTE_RW | PTE_US);
        resp[ro + RS_CODE] = word < 0 ? OUT_OF_MEMORY : OK;
        this.releaseReservation(r, w[a + A_RESERVED]);
        return;
      }
      case VS_PKEY:
        applyPkey(this.mem, this.dbs[r], this.root(r), hi, lo, w[a + A_KEY], resp, ro);
        return;
      case VS_FORK:
        resp[ro + RS_CODE] = OK;
        resp[ro + RS_FORK_NARROWED] = forkProtect(this.mem, this.dbs[r], this.root(r), this.rules.mh);
        return;
      case VS_REMAP:
        this.applyRemap(r, hi, lo, w[a + A_PFN], w[a + A_REMAP_RIGHTS], resp, ro);
        return;
      default:
        panic(`vspace.apply: unknown operation ${op}`);
    }
  }

  private applyMap(r: number, hi: number, lo: number, pfn: number, pages: number, rights: number, resp: Int32Array, ro: number): void {
    const db = this.dbs[r];
    const va = vaJoin(hi, lo);
    const end = va + pages * PAGE;
    const f = this.found;
    // A kernel address is a negative number: no sentinel value can mean "none".
    let conflict = 0;
    let clash = false;
    if (db.floor(hi, lo, f) && f.va + f.pages * PAGE > va) {
      if (f.va === va && f.pfn === pfn && f.pages === pages && f.rights === rights) {
        resp[ro + RS_CODE] = OK; // an identical mapping is accepted
        return;
      }
      conflict = va;
      clash = true;
    } else if (db.ceil(hi, lo, f) && f.va < end) {
      conflict = f.va;
      clash = true;
    }
    if (clash) {
      resp[ro + RS_CODE] = ALREADY_MAPPED;
      resp[ro + RS_CONFLICT] = vaHi(conflict);
      resp[ro + RS_CONFLICT + 1] = vaLo(conflict);
      return;
    }
    if (!db.insert(hi, lo, pfn, pages, rights)) {
      resp[ro + RS_CODE] = OUT_OF_MEMORY;
      return;
    }
    const root = this.root(r);
    const flags = leafFlags(rights);
    const nx = (rights & R_NX) !== 0;
    for (let off = 0; off < pages;) {
      const vhi = addHi(hi, lo, off * PAGE);
      const vlo = addLo(lo, off * PAGE);
      const p = pfn + off;
      const shift = pieceShift(vlo, p, pages - off);
      const word = walkTo(this.mem, root, false, vhi, vlo, shift, this.takers[r], PTE_RW | PTE_US);
      if (word < 0) panic(`vspace.applyMap: space ${this.space} replica ${r}: no table for 0x${vaJoin(vhi, vlo).toString(16)} (${-1 - word})`);
      this.mem[word + 1] = makeHi(p, keyOf(rights), nx);
      Atomics.store(this.mem, word, leafLo(p, shift, flags));
      off += 2 ** (shift - 12);
    }
    resp[ro + RS_CODE] = OK;
  }

  /** Word of the leaf entry for one piece of a mapping in replica r. */
  private leafWord(r: number, hi: number, lo: number, shift: number): number {
    const word = walkTo(this.mem, this.root(r), false, hi, lo, shift, null, 0);
    if (word < 0) panic(`vspace: space ${this.space} replica ${r}: mapping at 0x${vaJoin(hi, lo).toString(16)} has no leaf`);
    return word;
  }

  private applyUnmap(r: number, hi: number, lo: number, resp: Int32Array, ro: number): void {
    const e = this.found;
    if (this.rules.mh && this.dbs[r].find(hi, lo, e) && e.va === vaJoin(hi, lo)) {
      const code = unmapRule(e.rights, this.rules.skipWireCheck);
      if (code !== OK) {
        resp[ro + RS_CODE] = code;
        return;
      }
    }
    if (!this.dbs[r].remove(hi, lo, e)) {
      resp[ro + RS_CODE] = NOT_MAPPED;
      return;
    }
    for (let off = 0; off < e.pages;) {
      const vlo = addLo(lo, off * PAGE);
      const shift = pieceShift(vlo, e.pfn + off, e.pages - off);
      Atomics.store(this.mem, this.leafWord(r, addHi(hi, lo, off * PAGE), vlo, shift), 0);
      off += 2 ** (shift - 12);
    }
    resp[ro + RS_CODE] = OK;
    resp[ro + RS_UNMAP_PFN] = e.pfn;
    resp[ro + RS_UNMAP_PAGES] = e.pages;
    resp[ro + RS_UNMAP_RIGHTS] = e.rights;
  }

  /**
   * Changes the rights of the mapping based at va. Each leaf changes in two single-word steps,
   * first to the intersection of old and new rights, then to the new rights: a walk that reads
   * the entry between any two stores sees rights no wider than the old or the new ones.
   */
  private applyAdjust(r: number, hi: number, lo: number, requested: number, mask: number, user: boolean, resp: Int32Array, ro: number): void {
    const db = this.dbs[r];
    const old = this.found;
    if (!db.find(hi, lo, old) || old.va !== vaJoin(hi, lo)) {
      resp[ro + RS_CODE] = user && this.rules.mh ? EPERM : NOT_MAPPED;
      return;
    }
    if (user && this.rules.mh) {
      const code = adjustRule(old.rights, requested);
      if (code !== OK) {
        resp[ro + RS_CODE] = code;
        return;
      }
    }
    // Only the bits in `mask` change: a program's Adjust keeps a copy-on-write page copy-on-write.
    const rights = (old.rights & ~mask) | (requested & mask);
    db.setRights(hi, lo, rights);
    const mem = this.mem;
    const clearLo = (leafWritable(rights) ? 0 : PTE_RW) | (rights & R_USER ? 0 : PTE_US);
    const setLo = (leafWritable(rights) ? PTE_RW : 0) | (rights & R_USER ? PTE_US : 0);
    for (let off = 0; off < old.pages;) {
      const vlo = addLo(lo, off * PAGE);
      const shift = pieceShift(vlo, old.pfn + off, old.pages - off);
      const word = this.leafWord(r, addHi(hi, lo, off * PAGE), vlo, shift);
      Atomics.and(mem, word, ~clearLo);
      if (rights & R_NX) Atomics.or(mem, word + 1, HI_XD);
      else Atomics.and(mem, word + 1, ~HI_XD);
      Atomics.or(mem, word, setLo | PTE_P);
      off += 2 ** (shift - 12);
    }
    resp[ro + RS_CODE] = OK;
    resp[ro + RS_ADJ_PAGES] = old.pages;
    resp[ro + RS_ADJ_OLD] = old.rights;
    resp[ro + RS_ADJ_NEW] = rights;
  }

  /**
   * Points the page at va (a 4 KiB leaf) at frame pfn with new rights: copy-on-write and zero
   * fills. A page of a longer mapping splits it (the pages before and after keep their frames and
   * rights; their leaves do not change, since a piece never straddles the page); a page inside a
   * 2 MiB or 1 GiB leaf is NOT_MAPPED. The leaf is cleared, then rewritten high half first; the
   * caller shoots down the old translation before the old frame can be written by anyone else.
   */
  private applyRemap(r: number, hi: number, lo: number, pfn: number, rights: number, resp: Int32Array, ro: number): void {
    const db = this.dbs[r];
    const old = this.found;
    if (!db.find(hi, lo, old) || (lo & (PAGE - 1)) !== 0) {
      resp[ro + RS_CODE] = NOT_MAPPED;
      return;
    }
    const idx = (vaJoin(hi, lo) - old.va) / PAGE;
    const oldPfn = old.pfn + idx;
    const oldRights = old.rights;
    if (old.pages === 1) db.update(hi, lo, pfn, rights);
    else {
      const code = pieceShiftAt(vaLo(old.va), old.pfn, old.pages, idx) !== 12 ? NOT_MAPPED : db.hasRoom(2) ? OK : OUT_OF_MEMORY;
      if (code !== OK) {
        resp[ro + RS_CODE] = code;
        return;
      }
      const { pfn: base, pages } = old;
      const ohi = vaHi(old.va);
      const olo = vaLo(old.va);
      db.remove(ohi, olo, this.other);
      if (idx > 0) db.insert(ohi, olo, base, idx, oldRights);
      db.insert(hi, lo, pfn, 1, rights);
      if (idx + 1 < pages) db.insert(addHi(hi, lo, PAGE), addLo(lo, PAGE), base + idx + 1, pages - idx - 1, oldRights);
    }
    const word = this.leafWord(r, hi, lo, 12);
    Atomics.store(this.mem, word, 0);
    Atomics.store(this.mem, word + 1, makeHi(pfn, keyOf(rights), (rights & R_NX) !== 0));
    Atomics.store(this.mem, word, leafLo(pfn, 12, leafFlags(rights)));
    resp[ro + RS_CODE] = OK;
    resp[ro + RS_REMAP_PFN] = oldPfn;
    resp[ro + RS_REMAP_RIGHTS] = oldRights;
  }

  /**
   * Kernel half: if no mapping is left in the 512 GiB that the top-level entry covering hi:lo
   * maps, clears that entry in replica r's root (the master) and keeps the table it pointed at in
   * limbo (EBUSY when a mapping is left). The tables are freed by VS_PRUNE_FREE, once no address
   * space points at them and no walk is inside them.
   */
  private applyPrune(r: number, hi: number, lo: number, resp: Int32Array, ro: number): void {
    const base = vaJoin(hi, lo) - (vaJoin(hi, lo) % 2 ** 39 + 2 ** 39) % 2 ** 39;
    const f = this.found;
    if (this.dbs[r].ceil(vaHi(base), vaLo(base), f) && f.va < base + 2 ** 39) {
      resp[ro + RS_CODE] = EBUSY;
      return;
    }
    const mem = this.mem;
    const word = walkTo(mem, this.root(r), false, vaHi(base), vaLo(base), 39, null, 0);
    const lo0 = Atomics.load(mem, word);
    if ((lo0 & PTE_P) === 0) {
      resp[ro + RS_CODE] = NOT_MAPPED;
      return;
    }
    const table = entryFrame(lo0, mem[word + 1]);
    Atomics.store(mem, word, 0);
    mem[word + 1] = 0;
    this.k[this.klayout.replicaBase(this.space, r) + SR_LIMBO] = table + 1;
    resp[ro + RS_CODE] = OK;
  }

  /** Kernel half: frees the tables in replica r's limbo (the table VS_PRUNE detached and those under it). */
  private applyPruneFree(r: number, resp: Int32Array, ro: number): void {
    const b = this.klayout.replicaBase(this.space, r);
    const limbo = this.k[b + SR_LIMBO];
    resp[ro + RS_CODE] = OK;
    if (limbo === 0) return;
    const mem = this.mem;
    const tables: number[] = [];
    const collect = (t: number, level: number): void => {
      tables.push(t);
      if (level === 0) return;
      for (let i = 0; i < 512; i++) {
        const e = Atomics.load(mem, t * FRAME_WORDS + i * 2);
        if ((e & PTE_P) !== 0 && (e & PTE_PS) === 0) collect(entryFrame(e, mem[t * FRAME_WORDS + i * 2 + 1]), level - 1);
      }
    };
    collect(limbo - 1, 2);
    for (const t of tables) this.frames.free(t);
    this.k[b + SR_TABLES] -= tables.length;
    this.k[b + SR_LIMBO] = 0;
  }

  /**
   * MH: changes the wiring count of the mapping based at va by delta. The mapping must be exactly
   * `pages` long (a range crossing a state boundary is EINVAL); the leaves do not change.
   */
  private applyWire(r: number, hi: number, lo: number, pages: number, delta: number, resp: Int32Array, ro: number): void {
    const db = this.dbs[r];
    const e = this.found;
    if (!db.find(hi, lo, e)) {
      resp[ro + RS_CODE] = EPERM;
      return;
    }
    const code = e.va !== vaJoin(hi, lo) || e.pages !== pages ? EINVAL : wireRule(e.rights, delta);
    if (code !== OK) {
      resp[ro + RS_CODE] = code;
      return;
    }
    const n = wireCount(e.rights) + delta;
    db.setRights(hi, lo, withWireCount(e.rights, n));
    resp[ro + RS_CODE] = OK;
    resp[ro + RS_WIRE_COUNT] = n;
  }

  /**
   * MH: the one-page mapping at (shi, slo) replaces the one-page mapping at (hi, lo): the
   * destination's leaf is cleared and rewritten with the source's frame and rights, high half
   * first; the source's leaf is cleared. The caller shoots both pages down and drops the old frame.
   */
  private applyMove(r: number, hi: number, lo: number, shi: number, slo: number, resp: Int32Array, ro: number): void {
    const db = this.dbs[r];
    const d = this.found;
    const src = this.other;
    if (!db.find(hi, lo, d) || !db.find(shi, slo, src)) {
      resp[ro + RS_CODE] = EPERM;
      return;
    }
    let code = d.va !== vaJoin(hi, lo) || src.va !== vaJoin(shi, slo) || d.pages !== 1 || src.pages !== 1 || d.va === src.va ? EINVAL : OK;
    if (code === OK) code = moveRule(d.rights, src.rights);
    if (code !== OK) {
      resp[ro + RS_CODE] = code;
      return;
    }
    const oldPfn = d.pfn;
    const oldRights = d.rights;
    const pfn = src.pfn;
    const rights = src.rights;
    db.remove(shi, slo, src);
    db.update(hi, lo, pfn, rights);
    const mem = this.mem;
    Atomics.store(mem, this.leafWord(r, shi, slo, 12), 0);
    const word = this.leafWord(r, hi, lo, 12);
    Atomics.store(mem, word, 0);
    Atomics.store(mem, word + 1, makeHi(pfn, keyOf(rights), (rights & R_NX) !== 0));
    Atomics.store(mem, word, leafLo(pfn, 12, leafFlags(rights)));
    resp[ro + RS_CODE] = OK;
    resp[ro + RS_MOVE_OLD_PFN] = oldPfn;
    resp[ro + RS_MOVE_OLD_RIGHTS] = oldRights;
  }
}
