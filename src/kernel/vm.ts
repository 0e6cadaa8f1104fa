// The address-space operations of NRK's process structure, as a core issues them (xv6's vm.c
// in spirit): MapFrame, Unmap, Adjust and the read Resolve, with errors as values; the remap of
// one page that copy-on-write and zero-fill faults use; a demand-zero page; and mapAnon, the one
// way to map fresh frames (allocate, reference, own, map, and release on failure). Mutations hold
// the space lock shared and go through the context's exec (NR or the lock baseline); those that
// take rights away shoot down.
//
// A virtual address enters as its two 32-bit halves (vhi, vlo; hw/vaddr.ts) and stays so down to
// the mapping database and the page tables: a number above 2^31 passed between functions would be
// a heap allocation on every call (bench scale's B/op). Callers with a number split it once.

import type { Cpu } from '../hw/cpu.js';
import { NO_FRAME } from '../hw/frames.js';
import { missingTables } from '../hw/pagetable.js';
import { getVa, vaJoin } from '../hw/vaddr.js';
import type { Kernel } from './context.js';
import type { MapEntry } from './mapdb.js';
import {
  A_ADJ_MASK, A_ADJ_RIGHTS, A_ADJ_USER, A_PAGES, A_PFN, A_REMAP_RIGHTS, A_RESERVED, A_RIGHTS, A_VA, ALREADY_MAPPED, INVALID_BASE,
  EINVAL, INVALID_FRAME, NOT_MAPPED, OK, OUT_OF_MEMORY, PAGE, R_ACCESS, R_ALL, R_IO, R_NX, R_USER, R_ZERO, RS_ADJ_NEW, RS_ADJ_OLD,
  RS_ADJ_PAGES, RS_CODE, RS_CONFLICT, RS_UNMAP_PAGES, RS_UNMAP_PFN, USER_TOP, VS_ADJUST,
  VS_MAP, VS_REMAP, VS_UNMAP, leafWritable,
} from './ops.js';
import { holdNew, refcount, release, zeroPage } from './refs.js';
import { shootdown } from './shootdown.js';
import { lockShared, unlockShared } from './space.js';
import { inSlot, overlapsLinked, slotOf, withSlotKey } from './slots.js';

export interface MapResult {
  code: number;
  /** Lowest conflicting VA for ALREADY_MAPPED. */
  conflict?: number;
}

export interface UnmapResult {
  code: number;
  pfn: number;
  pages: number;
}

export type ResolveResult = { code: typeof OK; pa: number; rights: number } | { code: typeof NOT_MAPPED };

const MAP_OK: MapResult = Object.freeze({ code: OK });

/**
 * MapFrame: maps [vhi:vlo, + size) to physical [pa, pa + size) with rights (R_*). Errors:
 * INVALID_BASE (misaligned or outside the user half), INVALID_FRAME (zero size, misaligned or
 * outside memory), ALREADY_MAPPED with the lowest conflicting VA, OUT_OF_MEMORY. Never shoots down.
 */
export function map(kx: Kernel, c: number, s: number, vhi: number, vlo: number, pa: number, size: number, rights: number, cpu?: Cpu): MapResult {
  kx.checkSpace(s);
  lockShared(kx, s, cpu);
  try {
    return mapLocked(kx, c, s, vhi, vlo, pa, size, rights, cpu);
  } finally {
    unlockShared(kx, s);
  }
}

/** MapFrame with the space lock held (fork holds it alone). */
export function mapLocked(kx: Kernel, c: number, s: number, vhi: number, vlo: number, pa: number, size: number, rights: number, cpu?: Cpu): MapResult {
  kx.stats.maps++;
  if (!Number.isInteger(vhi) || !Number.isInteger(vlo) || (vlo & (PAGE - 1)) !== 0 || vhi < 0 || vaJoin(vhi, vlo) + Math.max(size, 0) > USER_TOP) return kx.err({ code: INVALID_BASE });
  // RPAL: a space in a slot maps inside it only (behaviour 25).
  const slot = slotOf(kx, s);
  if (slot >= 0 && !inSlot(slot, vaJoin(vhi, vlo), Math.max(size, PAGE))) return kx.err({ code: INVALID_BASE });
  // RPAL: a slot with a key gives it to every mapping made there (the owner's key, behaviour 27).
  if (slot >= 0) rights = withSlotKey(kx, s, rights);
  // A slot linked in (RPAL share, mshare region) is its owner's to map.
  if (overlapsLinked(kx, s, vaJoin(vhi, vlo), Math.max(size, PAGE))) return kx.err({ code: INVALID_BASE });
  if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE !== 0 || !Number.isSafeInteger(pa) || pa % PAGE !== 0 || pa < 0 ||
      !framesOk(kx, pa / PAGE, size / PAGE, rights)) return kx.err({ code: INVALID_FRAME });
  const pages = size / PAGE;
  const vs = kx.vspace(s);
  // Tables are never freed while the space lives, so the state the operation meets in the log has
  // at least the tables the local replica has now: what is missing here bounds every replica's need.
  const need = missingTables(kx.v.mem, vs.root(kx.replicaFor(c)), vhi, vlo, pages);
  if (!vs.reserveTables(need, kx.lockMode ? 1 : kx.v.klayout.config.nodes)) return kx.err({ code: OUT_OF_MEMORY });
  const a = kx.args;
  a[A_VA] = vhi;
  a[A_VA + 1] = vlo;
  a[A_PFN] = pa / PAGE;
  a[A_PAGES] = pages;
  a[A_RIGHTS] = rights;
  a[A_RESERVED] = need;
  kx.exec(s, c, cpu, VS_MAP);
  const code = kx.resp[RS_CODE];
  if (code === ALREADY_MAPPED) return kx.err({ code, conflict: getVa(kx.resp, RS_CONFLICT) });
  if (code !== OK) return kx.err({ code });
  return MAP_OK;
}

/** Whether frames [pfn, + pages) may be mapped with these rights: RAM, or (R_IO) the device's register pages. */
function framesOk(kx: Kernel, pfn: number, pages: number, rights: number): boolean {
  const ram = kx.v.klayout.config.totalFrames;
  if ((rights & R_IO) === 0) return pfn + pages <= ram;
  const dev = kx.v.device;
  return dev !== undefined && pfn >= ram && pfn + pages <= ram + dev.pages;
}

/**
 * MapFrame as a program issues it: map() with access rights only. Under MH, copy-on-write is
 * the only sharing: a frame some mapping already holds is refused (INVALID_FRAME).
 */
export function mapFrame(kx: Kernel, c: number, s: number, vhi: number, vlo: number, pa: number, size: number, rights: number, cpu?: Cpu): MapResult {
  if (kx.mh && Number.isSafeInteger(pa) && Number.isSafeInteger(size) && pa >= 0 && size > 0) {
    const ram = kx.v.klayout.config.totalFrames;
    for (let f = Math.floor(pa / PAGE); f < Math.min(ram, Math.ceil((pa + size) / PAGE)); f++) {
      if (refcount(kx, f) > 0) return kx.err({ code: INVALID_FRAME });
    }
  }
  return map(kx, c, s, vhi, vlo, pa, size, rights & R_ACCESS, cpu);
}

/**
 * Maps `pages` fresh zeroed frames from core c's node (contiguous when more than one; one page
 * falls back to other nodes) at vhi:vlo in space s with rights: each gets one reference and s as its
 * owner; when the map fails they are released. Returns the map's outcome; the first frame is in
 * kx.anonFrame (NO_FRAME when memory ran out). The one way to map fresh memory.
 */
export function mapAnon(kx: Kernel, c: number, s: number, vhi: number, vlo: number, pages: number, rights: number, cpu?: Cpu): number {
  const frames = kx.v.frames;
  const node = kx.v.replicaOf[c];
  const first = pages === 1 ? frames.allocAny(node) : frames.allocContiguous(node, pages);
  kx.anonFrame = first;
  if (first === NO_FRAME) return OUT_OF_MEMORY;
  for (let p = 0; p < pages; p++) {
    frames.zero(first + p);
    holdNew(kx, first + p, s);
  }
  const code = map(kx, c, s, vhi, vlo, first * PAGE, pages * PAGE, rights, cpu).code;
  if (code !== OK) for (let p = 0; p < pages; p++) release(kx, first + p, s);
  return code;
}

/** Maps one demand-zero page at vhi:vlo: the zero page, read-only, writable on demand when `rights` has R_WRITE. */
export function mapZero(kx: Kernel, c: number, s: number, vhi: number, vlo: number, rights: number, cpu?: Cpu): MapResult {
  // MH has no demand-zero pages: its memory is private or copy-on-write shared, nothing else.
  if (kx.mh) return kx.err({ code: EINVAL });
  const z = zeroPage(kx);
  if (z === NO_FRAME) return kx.err({ code: OUT_OF_MEMORY });
  return map(kx, c, s, vhi, vlo, z * PAGE, PAGE, rights | R_ZERO, cpu);
}

/** Unmap: removes the mapping based at vhi:vlo and shoots down stale translations. The caller releases the frames. */
export function unmap(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number): UnmapResult {
  kx.checkSpace(s);
  lockShared(kx, s, cpu);
  try {
    kx.stats.unmaps++;
    kx.args[A_VA] = vhi;
    kx.args[A_VA + 1] = vlo;
    kx.exec(s, cpu.id, cpu, VS_UNMAP);
    if (kx.resp[RS_CODE] !== OK) return kx.err({ code: kx.resp[RS_CODE], pfn: -1, pages: 0 });
    const pfn = kx.resp[RS_UNMAP_PFN];
    const pages = kx.resp[RS_UNMAP_PAGES];
    shootdown(kx, cpu, s, vhi, vlo, pages);
    return { code: OK, pfn, pages };
  } finally {
    unlockShared(kx, s);
  }
}

/**
 * Adjust: sets the access rights (R_WRITE, R_USER, R_NX) of the mapping based at vhi:vlo; its kind
 * stays (a copy-on-write page made writable stays copy-on-write until its first write copies
 * it, as Linux's mprotect does). Returns the mapping's pages. Shoots down when any right the
 * hardware sees decreases (a permission increase costs at most one spurious fault).
 */
export function adjust(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number, rights: number): { code: number; pages: number } {
  kx.checkSpace(s);
  lockShared(kx, s, cpu);
  try {
    return adjustLocked(kx, cpu, s, vhi, vlo, rights, R_ACCESS, true, true);
  } finally {
    unlockShared(kx, s);
  }
}

/**
 * Adjust as the kernel uses it, with the space lock held: `mask` says which bits of the rights
 * word change (R_ALL: kinds too); `shoot` false leaves the shootdown to the caller (fork); `user`
 * says a program asked (MH's rules apply to it, not to the kernel's own changes).
 */
export function adjustLocked(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number, rights: number, mask = R_ALL, shoot = true, user = false): { code: number; pages: number } {
  kx.stats.adjusts++;
  const a = kx.args;
  a[A_VA] = vhi;
  a[A_VA + 1] = vlo;
  a[A_ADJ_RIGHTS] = rights;
  a[A_ADJ_MASK] = mask;
  a[A_ADJ_USER] = user ? 1 : 0;
  kx.exec(s, cpu.id, cpu, VS_ADJUST);
  if (kx.resp[RS_CODE] !== OK) return kx.err({ code: kx.resp[RS_CODE], pages: 0 });
  const pages = kx.resp[RS_ADJ_PAGES];
  const old = kx.resp[RS_ADJ_OLD];
  const now = kx.resp[RS_ADJ_NEW];
  // What the hardware sees decides: a writable leaf that becomes read-only (R_WRITE cleared, or
  // the page turned copy-on-write) leaves stale writable translations behind.
  const decreased = (leafWritable(old) && !leafWritable(now)) || ((old & R_USER) !== 0 && (now & R_USER) === 0) ||
    ((old & R_NX) === 0 && (now & R_NX) !== 0);
  if (decreased && shoot) shootdown(kx, cpu, s, vhi, vlo, pages);
  return { code: OK, pages };
}

/**
 * Points the one-page mapping at vhi:vlo at frame pfn with rights, then shoots down the old
 * translation. The caller holds the space lock. Returns OK or NOT_MAPPED; the old frame and
 * rights are in kx.resp (RS_REMAP_PFN, RS_REMAP_RIGHTS).
 */
export function remapLocked(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number, pfn: number, rights: number): number {
  const a = kx.args;
  a[A_VA] = vhi;
  a[A_VA + 1] = vlo;
  a[A_PFN] = pfn;
  a[A_REMAP_RIGHTS] = rights;
  kx.exec(s, cpu.id, cpu, VS_REMAP);
  if (kx.resp[RS_CODE] !== OK) return kx.resp[RS_CODE];
  shootdown(kx, cpu, s, vhi, vlo, 1);
  return OK;
}

/**
 * Looks vhi:vlo up in core c's replica of s, brought up to date (NR's read): the mapping
 * containing it goes into `out`. Returns whether there is one. Counts nothing; allocates nothing.
 */
export function lookup(kx: Kernel, c: number, s: number, vhi: number, vlo: number, out: MapEntry, cpu?: Cpu): boolean {
  const r = kx.beginRead(s, c, cpu);
  try {
    return kx.vspace(s).db(r).find(vhi, vlo, out);
  } finally {
    kx.endRead(s, c);
  }
}

/** Resolve: syncs the local replica and looks vhi:vlo up. Returns the physical address and rights. */
export function resolve(kx: Kernel, c: number, s: number, vhi: number, vlo: number, cpu?: Cpu): ResolveResult {
  if (resolveCode(kx, c, s, vhi, vlo, cpu) !== OK) return { code: NOT_MAPPED };
  const e = kx.found;
  return { code: OK, pa: e.pfn * PAGE + (vaJoin(vhi, vlo) - e.va), rights: e.rights };
}

/** Resolve as a program issues it: the outcome only (OK or NOT_MAPPED), no allocation. */
export function resolveCode(kx: Kernel, c: number, s: number, vhi: number, vlo: number, cpu?: Cpu): number {
  kx.checkSpace(s);
  kx.stats.resolves++;
  return lookup(kx, c, s, vhi, vlo, kx.found, cpu) ? OK : NOT_MAPPED;
}

/** The entries of s's mapping database, read from core c's up-to-date replica. */
export function entries(kx: Kernel, c: number, s: number, cpu?: Cpu): MapEntry[] {
  const r = kx.beginRead(s, c, cpu);
  try {
    return kx.vspace(s).db(r).entries();
  } finally {
    kx.endRead(s, c);
  }
}
