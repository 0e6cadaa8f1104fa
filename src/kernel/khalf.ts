// The kernel half (seeds/os5-kernel-map-sync.txt): top-level entries 256-511 of every address
// space point at the kernel's own tables, shared by every process below the top level; leaves are
// global and supervisor-only. The kernel's mappings live in the kernel's own address space (the
// space after the processes': kx.kernelSpace), node-replicated like any other: its replica n's
// root is the master top-level table of node n, and every process's replica n points at kernel
// replica n's tables. kmap and kunmap change it; when a change adds, changes or removes a
// top-level entry, the copies in the address spaces are brought in line by one of os5's methods:
//
//   eager   every live space's every replica is written before kmap/kunmap returns
//   switch  a space copies the entries that changed when it is switched in (and, on a multi-core
//           machine, when a core already running it faults on a kernel address the master maps)
//   lazy    a supervisor fault on a missing top-level kernel entry copies that one entry from the
//           master and retries; it can only add: a changed or removed entry is never propagated
//           (removals are refused unless asked for, to show the hazard)
//
// A removal (the last mapping under a top-level entry unmapped) detaches the entry from every
// master, clears it everywhere the method reaches, shoots down every core running a space (kernel
// leaves are global), then frees the tables.

import type { Cpu } from '../hw/cpu.js';
import { NO_FRAME } from '../hw/frames.js';
import { missingTables } from '../hw/pagetable.js';
import { FRAME_WORDS, PTE_A, PTE_P } from '../hw/pte.js';
import { must, panic } from '../hw/panic.js';
import { IPI_OK, IPI_TARGET_OFFLINE, WAIT_OK, describeWait } from '../hw/apic.js';
import { vaHi, vaJoin, vaLo } from '../hw/vaddr.js';
import { BoundedWait, STEP_EXPIRED, STEP_SLEEP, sleepOn } from '../hw/wait.js';
import { BP_KHALF_PUBLISH, type Kernel } from './context.js';
import { S_ACTIVE, S_KLOCK, S_STATE, SPACE_CREATING, SPACE_LIVE, SR_KGEN, SR_ROOT } from './layout.js';
import type { MapEntry } from './mapdb.js';
import {
  A_PAGES, A_PFN, A_RESERVED, A_RIGHTS, A_VA, EINVAL, INVALID_BASE, IPI_KSHOOTDOWN, NOT_MAPPED, OK, OUT_OF_MEMORY, PAGE, R_GLOBAL, R_WRITE,
  RS_CODE, RS_UNMAP_PAGES, RS_UNMAP_PFN, VS_MAP, VS_PRUNE, VS_PRUNE_FREE, VS_UNMAP,
} from './ops.js';
import { dropRef, setRefcount } from './refs.js';

/** The first top-level index of the kernel half (4-level paging). */
export const KERNEL_TOP_FIRST = 256;
const TOP_SPAN = 2 ** 39;
/** The lowest kernel address, 0xffff_8000_0000_0000, as a number (negative: the sign-extended form). */
export const KERNEL_BASE = -(2 ** 47);
/** The kernel heap mapped at boot (top-level entry 256), and one page per core (entry 257). */
export const KHEAP_VA = KERNEL_BASE;
export const KHEAP_PAGES = 4;
export const KPERCORE_VA = KERNEL_BASE + TOP_SPAN;
/** Rights of every kernel mapping: writable, global, supervisor-only. */
export const KERNEL_RIGHTS = R_WRITE | R_GLOBAL;

/**
 * The kernel's own mappings at boot (the controller, before any core runs): a heap under
 * top-level entry 256 and one page per core under entry 257, whose first word holds the core's
 * number + 1. Returns false when memory ran out.
 */
export function bootMappings(kx: Kernel): boolean {
  const cores = kx.v.replicaOf.length;
  if (kmap(kx, 0, vaHi(KHEAP_VA), vaLo(KHEAP_VA), KHEAP_PAGES) !== OK) return false;
  if (kmap(kx, 0, vaHi(KPERCORE_VA), vaLo(KPERCORE_VA), cores) !== OK) return false;
  for (let c = 0; c < cores; c++) kx.v.mem[(kx.anonFrame + c) * FRAME_WORDS] = c + 1;
  return true;
}

/** The top-level index of a kernel address. */
export function topIndex(va: number): number {
  return Math.floor((va - KERNEL_BASE) / TOP_SPAN) + KERNEL_TOP_FIRST;
}

/** The base of the 512 GiB top-level kernel entry i covers. */
export function topBase(i: number): number {
  return KERNEL_BASE + (i - KERNEL_TOP_FIRST) * TOP_SPAN;
}

/** Whether [va, va + pages pages) is inside the kernel half, page-aligned. */
function kernelRange(vhi: number, vlo: number, pages: number): boolean {
  const va = vaJoin(vhi, vlo);
  return Number.isInteger(vhi) && Number.isInteger(vlo) && vhi < 0 && va >= KERNEL_BASE && (vlo & (PAGE - 1)) === 0 &&
    Number.isSafeInteger(pages) && pages >= 1 && va + pages * PAGE <= 0;
}

// ---- locks ------------------------------------------------------------------------------------

/**
 * Takes a lock word, waiting (bounded) while cpu keeps servicing its interrupts: the holder may be
 * waiting for this core's ack of a kernel shootdown. With a progress word, the bound counts time
 * in which the holder did not move it (with hundreds of cores on a few CPUs an eager update or a
 * kernel shootdown can outlast the wait limit and be fine).
 */
function spin(kx: Kernel, word: number, owner: number, what: string, cpu?: Cpu, progressWord = -1): void {
  const k = kx.v.k;
  if (Atomics.compareExchange(k, word, 0, owner) === 0) return;
  const w = new BoundedWait(kx.v.waitLimitMs, undefined, kx.v.replicaOf.length);
  w.begin();
  let seen = progressWord < 0 ? 0 : Atomics.load(k, progressWord);
  while (Atomics.compareExchange(k, word, 0, owner) !== 0) {
    cpu?.apic.poll();
    if (progressWord >= 0 && Atomics.load(k, progressWord) !== seen) {
      seen = Atomics.load(k, progressWord);
      w.begin();
    }
    const st = w.step();
    if (st === STEP_EXPIRED) panic(`khalf: waited ${kx.v.waitLimitMs} ms for ${what} (held by ${Atomics.load(k, word) - 1})`);
    if (st === STEP_SLEEP) sleepOn(w, k, word, Atomics.load(k, word));
  }
}

function release(kx: Kernel, word: number): void {
  Atomics.store(kx.v.k, word, 0);
  Atomics.notify(kx.v.k, word);
}

// ---- the copies of the top-level entries ------------------------------------------------------

/** The word of top-level entry i in root frame `root`. */
function entryWord(root: number, i: number): number {
  return root * FRAME_WORDS + i * 2;
}

/** Whether two top-level entries are the same but for A (which the walker sets in each copy). */
export function sameEntry(mem: Int32Array, a: number, b: number): boolean {
  return (Atomics.load(mem, a) & ~PTE_A) === (Atomics.load(mem, b) & ~PTE_A) && mem[a + 1] === mem[b + 1];
}

/** Whether top-level entry i of space s's replica r is its node's master's (A aside). */
export function matchesMaster(kx: Kernel, s: number, r: number, i: number): boolean {
  return sameEntry(kx.v.mem, entryWord(kx.vspace(s).root(r), i), entryWord(masterRoot(kx, r), i));
}

/** Brings every node's master up to date, on thread c's behalf (it advances the other nodes' kernel replicas). */
function advanceMasters(kx: Kernel, c: number, cpu: Cpu | undefined): void {
  const t = kx.thread(c, cpu);
  for (let r = 0; r < kx.v.klayout.config.nodes; r++) kx.nr(kx.kernelSpace).advance(t, r);
}

/** The master top-level table of node r: the root of the kernel space's replica r (as up to date as that replica is). */
export function masterRoot(kx: Kernel, r: number): number {
  return Atomics.load(kx.v.k, kx.v.klayout.replicaBase(kx.kernelSpace, r) + SR_ROOT);
}

/**
 * Copies top-level kernel entries from master root `m` into root `root` (entry i only, or all
 * when i < 0; only the missing ones when `onlyMissing`), high half first, low half last. Returns
 * how many entries changed. The caller holds the space's kernel-half lock.
 */
function copyEntries(kx: Kernel, m: number, root: number, i: number, onlyMissing: boolean): number {
  const mem = kx.v.mem;
  let n = 0;
  for (let e = i < 0 ? KERNEL_TOP_FIRST : i; e < (i < 0 ? 512 : i + 1); e++) {
    const from = entryWord(m, e);
    const to = entryWord(root, e);
    // The walker sets A in a space's own copy of the entry: that is no difference.
    if (sameEntry(mem, to, from)) continue;
    if (onlyMissing && (Atomics.load(mem, to) & PTE_P) !== 0) continue;
    const lo = Atomics.load(mem, from);
    const hi = mem[from + 1];
    Atomics.store(mem, to, 0);
    mem[to + 1] = hi;
    Atomics.store(mem, to, lo);
    n++;
  }
  return n;
}

/**
 * Brings space s's replicas' kernel halves in line with the masters (all replicas, or replica r):
 * under s's kernel-half lock, from the master as it is then. Used by the creator of a space
 * (every method), eager updates, and switch-in copies. Returns the entries written.
 */
export function syncSpace(kx: Kernel, s: number, r = -1, c = -1, cpu?: Cpu): number {
  const { k, klayout } = kx.v;
  if (Atomics.load(k, klayout.replicaBase(kx.kernelSpace, 0) + SR_ROOT) === 0) return 0; // no kernel half (yet)
  const lock = klayout.spaceBase(s) + S_KLOCK;
  spin(kx, lock, c + 2, `space ${s}'s kernel-half lock`, cpu);
  let n = 0;
  try {
    const gen = Atomics.load(k, klayout.kgenWord);
    for (let q = r < 0 ? 0 : r; q < (r < 0 ? klayout.config.nodes : r + 1); q++) {
      const rb = klayout.replicaBase(s, q);
      const root = Atomics.load(k, rb + SR_ROOT);
      if (root === 0) continue;
      n += copyEntries(kx, masterRoot(kx, q), root, -1, false);
      Atomics.store(k, rb + SR_KGEN, gen);
    }
  } finally {
    release(kx, lock);
  }
  kx.stats.kernelEntryCopies += n;
  return n;
}

/** Spaces an eager update must reach: live, and those being created (their roots set). */
function visibleSpaces(kx: Kernel): number[] {
  const out: number[] = [];
  for (let s = 0; s < kx.maxSpaces; s++) {
    const st = Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_STATE);
    if (st === SPACE_LIVE || st === SPACE_CREATING) out.push(s);
  }
  return out;
}

/**
 * After a change of the master's top-level entries: every master brought up to date (this
 * thread advances the other nodes' kernel replicas), the kernel generation bumped, and under
 * 'eager' every visible space's every replica written.
 */
function publish(kx: Kernel, c: number, cpu: Cpu | undefined): void {
  advanceMasters(kx, c, cpu);
  Atomics.add(kx.v.k, kx.v.klayout.kgenWord, 1);
  cpu?.debug.breakpoint(BP_KHALF_PUBLISH);
  if (kx.khalf !== 'eager') return;
  for (const s of visibleSpaces(kx)) {
    syncSpace(kx, s, -1, c, cpu);
    Atomics.add(kx.v.k, kx.v.klayout.kprogressWord, 1);
  }
}

/** The top-level entries present in replica r's master, as a bit set over 256-511 (8 words). */
function presentTops(kx: Kernel, r: number, out: Int32Array): void {
  const m = masterRoot(kx, r);
  for (let i = 0; i < 256; i++) {
    const p = (Atomics.load(kx.v.mem, entryWord(m, KERNEL_TOP_FIRST + i)) & PTE_P) !== 0;
    if (p) out[i >>> 5] |= 1 << (i & 31);
    else out[i >>> 5] &= ~(1 << (i & 31));
  }
}

// ---- kmap and kunmap -------------------------------------------------------------------------

/**
 * Maps `pages` fresh zeroed frames at vhi:vlo in the kernel half (global, supervisor-only,
 * writable). Errors: INVALID_BASE (not a page-aligned kernel-half range), ALREADY_MAPPED,
 * OUT_OF_MEMORY. A new top-level entry reaches the address spaces by the kernel's method.
 * The first frame is left in kx.anonFrame.
 */
export function kmap(kx: Kernel, c: number, vhi: number, vlo: number, pages: number, cpu?: Cpu): number {
  if (!kernelRange(vhi, vlo, pages)) return kx.err({ code: INVALID_BASE }).code;
  const { k, klayout, frames } = kx.v;
  const ks = kx.kernelSpace;
  const node = kx.v.replicaOf[c];
  const first = pages === 1 ? frames.allocAny(node) : frames.allocContiguous(node, pages);
  kx.anonFrame = first;
  if (first === NO_FRAME) return kx.err({ code: OUT_OF_MEMORY }).code;
  for (let p = 0; p < pages; p++) {
    frames.zero(first + p);
    setRefcount(kx, first + p, 1);
    Atomics.store(k, klayout.ownerBase + first + p, -1); // kernel memory: every space may reach it
  }
  spin(kx, klayout.kmutexWord, c + 2, 'the kernel mapping lock (its holder made no progress)', cpu, klayout.kprogressWord);
  let code: number;
  try {
    kx.stats.kmaps++;
    const vs = kx.vspace(ks);
    const r = kx.replicaFor(c);
    kx.sync(ks, c, cpu);
    const need = missingTables(kx.v.mem, vs.root(r), vhi, vlo, pages);
    if (!vs.reserveTables(need, kx.lockMode ? 1 : klayout.config.nodes)) code = OUT_OF_MEMORY;
    else {
      const before = new Int32Array(8);
      presentTops(kx, r, before);
      const a = kx.args;
      a[A_VA] = vhi;
      a[A_VA + 1] = vlo;
      a[A_PFN] = first;
      a[A_PAGES] = pages;
      a[A_RIGHTS] = KERNEL_RIGHTS;
      a[A_RESERVED] = need;
      kx.exec(ks, c, cpu, VS_MAP);
      code = kx.resp[RS_CODE];
      if (code === OK) {
        const after = new Int32Array(8);
        presentTops(kx, r, after);
        if (before.some((w, i) => w !== after[i])) publish(kx, c, cpu);
      }
    }
  } finally {
    release(kx, klayout.kmutexWord);
  }
  if (code !== OK) {
    for (let p = 0; p < pages; p++) releaseKernelFrame(kx, first + p);
    return kx.err({ code }).code;
  }
  return OK;
}

function releaseKernelFrame(kx: Kernel, pfn: number): void {
  Atomics.store(kx.v.k, kx.v.klayout.ownerBase + pfn, 0);
  dropRef(kx, pfn);
}

/** The kernel mapping containing vhi:vlo (read from c's replica brought up to date), into `out`. */
export function klookup(kx: Kernel, c: number, vhi: number, vlo: number, out: MapEntry, cpu?: Cpu): boolean {
  const ks = kx.kernelSpace;
  const r = kx.beginRead(ks, c, cpu);
  try {
    return kx.vspace(ks).db(r).find(vhi, vlo, out);
  } finally {
    kx.endRead(ks, c);
  }
}

/** The kernel's mappings (from c's replica). */
export function kentries(kx: Kernel, c = 0, cpu?: Cpu): MapEntry[] {
  const ks = kx.kernelSpace;
  const r = kx.beginRead(ks, c, cpu);
  try {
    return kx.vspace(ks).db(r).entries();
  } finally {
    kx.endRead(ks, c);
  }
}

const found: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };

/**
 * Unmaps the kernel mapping based at vhi:vlo: every core's TLB loses it (global entries too),
 * then its frames are freed. When it was the last mapping under its top-level entry, the entry
 * goes from the master and (eager, switch) from every address space before its tables are freed.
 * Under 'lazy' that removal cannot reach the spaces that copied the entry: it is refused (EINVAL,
 * nothing changed) unless `unsafe` asks for it, which leaves them pointing at freed tables.
 * Errors: INVALID_BASE, NOT_MAPPED, EINVAL.
 */
export function kunmap(kx: Kernel, cpu: Cpu, vhi: number, vlo: number, unsafe = false): number {
  if (!kernelRange(vhi, vlo, 1)) return kx.err({ code: INVALID_BASE }).code;
  const { klayout } = kx.v;
  const ks = kx.kernelSpace;
  const c = cpu.id;
  spin(kx, klayout.kmutexWord, c + 2, 'the kernel mapping lock (its holder made no progress)', cpu, klayout.kprogressWord);
  try {
    const va = vaJoin(vhi, vlo);
    if (!klookup(kx, c, vhi, vlo, found, cpu) || found.va !== va) return kx.err({ code: NOT_MAPPED }).code;
    const top = topIndex(va);
    const base = topBase(top);
    const last = !kentries(kx, c, cpu).some((e) => e.va !== va && e.va >= base && e.va < base + TOP_SPAN);
    if (last && kx.khalf === 'lazy' && !unsafe) return kx.err({ code: EINVAL }).code;
    kx.stats.kunmaps++;
    const a = kx.args;
    a[A_VA] = vhi;
    a[A_VA + 1] = vlo;
    kx.exec(ks, c, cpu, VS_UNMAP);
    if (kx.resp[RS_CODE] !== OK) return kx.err({ code: kx.resp[RS_CODE] }).code;
    const pfn = kx.resp[RS_UNMAP_PFN];
    const pages = kx.resp[RS_UNMAP_PAGES];
    if (last) {
      // Detach the entry from every master first (its tables wait in limbo), so that no copy made
      // from here on (a switch-in, a new space, a fault) brings it back; then take it out of the
      // spaces the method reaches; the shootdown below ends every walk still inside the tables.
      a[A_VA] = vaHi(base);
      a[A_VA + 1] = vaLo(base);
      kx.exec(ks, c, cpu, VS_PRUNE);
      if (kx.resp[RS_CODE] !== OK) panic(`kunmap: the removal of kernel entry ${top} failed (${kx.resp[RS_CODE]})`);
      advanceMasters(kx, c, cpu);
      if (kx.khalf !== 'lazy') for (const s of visibleSpaces(kx)) clearTop(kx, s, top, cpu);
    }
    kshootdown(kx, cpu, vhi, vlo, pages, last);
    for (let p = 0; p < pages; p++) releaseKernelFrame(kx, pfn + p);
    if (last) {
      kx.exec(ks, c, cpu, VS_PRUNE_FREE);
      publish(kx, c, cpu);
    }
    return OK;
  } finally {
    release(kx, klayout.kmutexWord);
  }
}

/** Clears top-level entry i in every replica of space s (a removal reaching it). */
function clearTop(kx: Kernel, s: number, i: number, cpu: Cpu): void {
  const { k, klayout, mem } = kx.v;
  const lock = klayout.spaceBase(s) + S_KLOCK;
  spin(kx, lock, cpu.id + 2, `space ${s}'s kernel-half lock`, cpu);
  try {
    for (let q = 0; q < klayout.config.nodes; q++) {
      const root = Atomics.load(k, klayout.replicaBase(s, q) + SR_ROOT);
      if (root === 0 || (Atomics.load(mem, entryWord(root, i)) & PTE_P) === 0) continue;
      Atomics.store(mem, entryWord(root, i), 0);
      mem[entryWord(root, i) + 1] = 0;
      kx.stats.kernelEntryCopies++;
    }
  } finally {
    release(kx, lock);
  }
}

// ---- the kernel's shootdown ------------------------------------------------------------------

/**
 * Every other core running an address space drops the pages' translations (global ones too:
 * INVLPG), and so does cpu; a core running none now flushes its global entries when it next
 * switches in (the kernel TLB generation, bumped first). When the removal freed page tables
 * (`tablesFreed`), each core invalidates every PCID's entries instead (INVPCID type 2): INVLPG
 * drops the paging-structure-cache entries of the current PCID only (SDM 4.10.4.1), and another
 * PCID's could still name a freed table when the core switches back to it without a flush.
 * Returns after every ack; every walk that began before has ended.
 */
export function kshootdown(kx: Kernel, cpu: Cpu, vhi: number, vlo: number, pages: number, tablesFreed = false): void {
  const { k, klayout } = kx.v;
  Atomics.add(k, klayout.ktlbGenWord, 1);
  kx.stats.kernelShootdowns++;
  const running = new Set<number>();
  for (let s = 0; s < kx.maxSpaces; s++) {
    if (Atomics.load(k, klayout.spaceBase(s) + S_STATE) !== SPACE_LIVE) continue;
    for (let w = 0; w < klayout.maskWords; w++) {
      const m = Atomics.load(k, klayout.spaceBase(s) + S_ACTIVE + w);
      for (let b = 0; b < 32; b++) if ((m >>> b) & 1) running.add(w * 32 + b);
    }
  }
  for (const c of running) {
    if (c === cpu.id || kx.skipShootdown) continue;
    const r = cpu.apic.sendIpi(c, IPI_KSHOOTDOWN, tablesFreed ? 1 : 0, vhi, vlo, pages);
    if (r === IPI_TARGET_OFFLINE) continue;
    if (r !== IPI_OK) panic(`kshootdown: core ${cpu.id} could not send to core ${c}: ${describeWait(cpu, r)}`);
    kx.stats.shootdownIpis++;
    Atomics.add(k, klayout.kprogressWord, 1);
  }
  invalidatePages(kx, cpu, vhi, vlo, pages, tablesFreed);
  const r = cpu.apic.waitAcks(() => void Atomics.add(k, klayout.kprogressWord, 1));
  if (r !== WAIT_OK) panic(`kshootdown: core ${cpu.id}: ${describeWait(cpu, r)}`);
}

/** INVLPG of each page, or (tables freed) INVPCID type 2: every PCID's entries and paging-structure caches. */
function invalidatePages(kx: Kernel, cpu: Cpu, vhi: number, vlo: number, pages: number, tablesFreed: boolean): void {
  if (tablesFreed && !kx.skipTableFlush) {
    must(cpu.id, cpu.mmu.invpcid(2, 0, 0, 0), 'INVPCID 2');
    return;
  }
  const va = vaJoin(vhi, vlo);
  for (let p = 0; p < pages; p++) cpu.mmu.invlpg(vaHi(va + p * PAGE), vaLo(va + p * PAGE));
}

/**
 * The receiver of a kernel shootdown: ack, bring the local kernel replica up to date, invalidate.
 * It still flushes everything at its next switch-in (the kernel TLB generation): INVLPG drops
 * the page's entries of the current PCID and its global ones, and a kernel entry is global only
 * under CR4.PGE. The injected free-table-without-flush treats the core as up to date instead
 * (INVLPG of the pages, the generation recorded): entries and paging-structure caches of the
 * other PCIDs survive the freeing of the tables they lead to.
 */
export function onKernelShootdown(kx: Kernel, c: Cpu, sender: number, vhi: number, vlo: number, pages: number, tablesFreed: boolean): void {
  c.apic.ack(sender);
  kx.stats.shootdownsReceived++;
  const { k, klayout } = kx.v;
  const kg = Atomics.load(k, klayout.ktlbGenWord);
  if (!kx.skipReplicaSync) kx.sync(kx.kernelSpace, c.id, c);
  invalidatePages(kx, c, vhi, vlo, pages, tablesFreed);
  if (tablesFreed && kx.skipTableFlush && kx.current[c.id] >= 0) Atomics.store(k, klayout.coreGen(c.id, kx.kernelSpace), kg);
}

// ---- switch-in and faults --------------------------------------------------------------------

/**
 * Switching space s in on cpu (replica r): the node's kernel replica is brought up to date, a
 * core that missed a kernel shootdown flushes its global entries, and under 'switch' the entries
 * that changed since s last copied are copied.
 */
export function switchIn(kx: Kernel, cpu: Cpu, s: number, r: number): void {
  const { k, klayout } = kx.v;
  // Every core walks the kernel's tables of its node whatever space it runs: like a space's own
  // replica, they are brought up to date before the core can walk them (a kunmap whose shootdown
  // this core was not running a space for has been applied here, then, before its frame is reused).
  kx.sync(kx.kernelSpace, cpu.id, cpu);
  const kg = Atomics.load(k, klayout.ktlbGenWord);
  const mine = klayout.coreGen(cpu.id, kx.kernelSpace);
  if (Atomics.load(k, mine) !== kg) {
    must(cpu.id, cpu.mmu.invpcid(2, 0, 0, 0), 'INVPCID 2');
    Atomics.store(k, mine, kg);
  }
  if (kx.khalf !== 'switch') return;
  if (Atomics.load(k, klayout.replicaBase(s, r) + SR_KGEN) === Atomics.load(k, klayout.kgenWord)) return;
  syncSpace(kx, s, r, cpu.id, cpu);
}

/**
 * A supervisor page fault at a kernel address in space s: the local kernel replica is brought up
 * to date; if the kernel maps the address, the space's top-level entry is made to match the
 * master as the method allows (lazy: only a missing entry is copied in) and the access is retried.
 * Returns whether to retry.
 */
export function kernelFault(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number): boolean {
  if (!klookup(kx, cpu.id, vhi, vlo, found, cpu)) return false;
  const { k, klayout, mem } = kx.v;
  const r = kx.replicaFor(cpu.id);
  const root = Atomics.load(k, klayout.replicaBase(s, r) + SR_ROOT);
  const i = topIndex(vaJoin(vhi, vlo));
  const m = masterRoot(kx, r);
  const same = sameEntry(mem, entryWord(root, i), entryWord(m, i));
  if (same) return true; // a lower level was behind on this node: it is not now
  if (kx.khalf === 'lazy' && (Atomics.load(mem, entryWord(root, i)) & PTE_P) !== 0) return false; // a changed entry: lazy cannot fix it
  const lock = klayout.spaceBase(s) + S_KLOCK;
  spin(kx, lock, cpu.id + 2, `space ${s}'s kernel-half lock`, cpu);
  let n = 0;
  try {
    n = copyEntries(kx, m, root, kx.khalf === 'lazy' ? i : -1, kx.khalf === 'lazy');
  } finally {
    release(kx, lock);
  }
  kx.stats.kernelFaults++;
  kx.stats.kernelEntryCopies += n;
  return true;
}
