// Address spaces as objects of the kernel: create (an empty replica per node, a fresh TLB
// generation), destroy (every replica synced, data frames handed back, page-table frames and
// pools freed), and the space lock, Linux's mmap_lock in miniature — mapping changes share it, a
// fork's snapshot takes it alone. The replicas themselves are vspace.ts; running operations on
// them is context.ts.

import type { Cpu } from '../hw/cpu.js';
import { NO_FRAME } from '../hw/frames.js';
import { tableFrames } from '../hw/pagetable.js';
import { panic } from '../hw/panic.js';
import type { Kernel } from './context.js';
import {
  S_ACTIVE, S_FORKING, S_GEN, S_LOCK_PROGRESS, S_MSHARE_HOST, S_PKEYS, S_RPAL_KEY, S_RPAL_SHARED, S_RPAL_SHARERS, S_RPAL_SLOT, S_RWLOCK, S_STATE, S_TLBGEN, SPACE_CREATING, SPACE_FREE, SPACE_LIVE, SR_COUNT, SR_FRAMES, SR_ROOT,
} from './layout.js';
import { ALREADY_MAPPED, OUT_OF_MEMORY } from './ops.js';
import { activeCores, forget } from './shootdown.js';
import { syncSpace } from './khalf.js';
import { detachAll } from './slots.js';

/**
 * Creates an address space: an empty replica per node, whose top-level kernel entries are copied
 * from the master (khalf.ts). Returns its number, or -1 - OUT_OF_MEMORY / -1 - ALREADY_MAPPED (no
 * free slot).
 */
export function createSpace(kx: Kernel): number {
  for (let s = 0; s < kx.maxSpaces; s++) {
    const got = createIn(kx, s);
    if (got !== -2) return got;
  }
  return -1 - ALREADY_MAPPED;
}

/** Creates the kernel's own address space (kx.kernelSpace): its replicas' roots are the master tables of the kernel half. */
export function createKernelSpace(kx: Kernel): number {
  return createIn(kx, kx.kernelSpace);
}

/** Creates space s if it is free: s, -1 - OUT_OF_MEMORY, or -2 when it is taken. */
function createIn(kx: Kernel, s: number): number {
  const { k, klayout, frames } = kx.v;
  {
    const b = klayout.spaceBase(s);
    if (Atomics.compareExchange(k, b + S_STATE, SPACE_FREE, SPACE_CREATING) !== SPACE_FREE) return -2;
    k.fill(0, b + S_ACTIVE, b + S_ACTIVE + klayout.maskWords);
    // A new generation: cores that still cache translations of an earlier space with this
    // number (and PCID) flush them when they first switch in.
    Atomics.add(k, b + S_TLBGEN, 1);
    const roots: number[] = [];
    for (let r = 0; r < klayout.config.nodes; r++) {
      const f = frames.allocZeroed(r);
      if (f === NO_FRAME) {
        for (const x of roots) frames.free(x);
        Atomics.store(k, b + S_STATE, SPACE_FREE);
        return -1 - OUT_OF_MEMORY;
      }
      roots.push(f);
    }
    for (let r = 0; r < klayout.config.nodes; r++) {
      const rb = klayout.replicaBase(s, r);
      k.fill(0, rb, rb + klayout.replicaWords);
      k[rb + SR_ROOT] = roots[r];
      kx.vspace(s).db(r).reset();
    }
    kx.nr(s).reset();
    k[b + S_GEN]++;
    k[b + S_RPAL_SLOT] = 0;
    k[b + S_RPAL_SHARED] = 0;
    k[b + S_RPAL_SHARERS] = 0;
    k[b + S_PKEYS] = 0;
    k[b + S_MSHARE_HOST] = 0;
    k[b + S_RPAL_KEY] = 0;
    // The roots are set, so an eager update of the kernel half reaches this space from now on;
    // copying the master after that misses no update (both hold the space's kernel-half lock).
    if (s !== kx.kernelSpace) syncSpace(kx, s);
    Atomics.store(k, b + S_STATE, SPACE_LIVE);
    return s;
  }
}

/**
 * Destroys space s: syncs every replica, hands every data frame still mapped to `freeData`, and
 * frees every page-table frame, the pools and the roots. Controller only (or cpu, which drops
 * its own translations first), with no core running s.
 */
export function destroySpace(kx: Kernel, s: number, freeData: (pfn: number, pages: number, rights: number) => void, cpu?: Cpu): void {
  const { k, klayout, frames, mem } = kx.v;
  if (!kx.isLive(s)) panic(`destroySpace: space ${s} is not live`);
  if (cpu) forget(kx, cpu, s);
  const holders = activeCores(kx, s);
  if (holders.length > 0) panic(`destroySpace: space ${s} is destroyed while cores ${holders.join(',')} may hold its translations`);
  // RPAL: the slots linked in leave it, and its slot leaves the spaces it is shared into, before
  // any table goes (a link is not the space's table to free).
  detachAll(kx, s, cpu);
  syncAll(kx, s);
  // The device lets go of the space's exports first (waiting for a transfer in progress on one):
  // no DMA lands in a frame freed below.
  const dev = kx.v.device;
  if (dev) for (const slot of dev.slotsOf(s)) dev.release(slot, s);
  for (const e of kx.vspace(s).db(0).entries()) freeData(e.pfn, e.pages, e.rights);
  for (let r = 0; r < klayout.config.nodes; r++) {
    const rb = klayout.replicaBase(s, r);
    for (const t of tableFrames(mem, klayout.config.totalFrames, k[rb + SR_ROOT])) frames.free(t);
    for (let i = 0; i < k[rb + SR_COUNT]; i++) frames.free(k[rb + SR_FRAMES + i]);
    k[rb + SR_COUNT] = 0;
    k[rb + SR_ROOT] = 0;
  }
  Atomics.store(k, klayout.spaceBase(s) + S_STATE, SPACE_FREE);
}

/** Brings every replica of s up to date, acting on the controller's behalf (no core running). */
export function syncAll(kx: Kernel, s: number): void {
  for (let r = 0; r < kx.v.klayout.config.nodes; r++) kx.sync(s, kx.v.replicaOf.indexOf(r));
}

/** Takes space s's lock shared (a mapping change), waiting while a fork holds or wants it. */
export function lockShared(kx: Kernel, s: number, cpu?: Cpu): void {
  const k = kx.v.k;
  const b = kx.v.klayout.spaceBase(s);
  const v = Atomics.load(k, b + S_RWLOCK);
  if (v >= 0 && Atomics.load(k, b + S_FORKING) === 0 && Atomics.compareExchange(k, b + S_RWLOCK, v, v + 1) === v) return;
  kx.beginWait(cpu, `space ${s}'s lock (a fork, share or attach holds it and made no progress)`);
  let progress = Atomics.load(k, b + S_LOCK_PROGRESS);
  for (;;) {
    const x = Atomics.load(k, b + S_RWLOCK);
    if (x >= 0 && Atomics.load(k, b + S_FORKING) === 0 && Atomics.compareExchange(k, b + S_RWLOCK, x, x + 1) === x) return;
    // The bound is on the holder making no progress: a fork of a large space on a machine with
    // more simulated cores than CPUs may hold the lock longer than waitLimitMs and be fine.
    const p = Atomics.load(k, b + S_LOCK_PROGRESS);
    if (p !== progress) {
      progress = p;
      kx.bw.begin();
    }
    kx.waitStep(0, b + S_RWLOCK);
  }
}

/** Releases space s's lock taken shared. */
export function unlockShared(kx: Kernel, s: number): void {
  Atomics.sub(kx.v.k, kx.v.klayout.spaceBase(s) + S_RWLOCK, 1);
}

/** Takes space s's lock alone (a fork; RPAL's share and unshare, mshare's attach and detach): announces itself, then waits for changes in flight to finish. */
export function lockExclusive(kx: Kernel, s: number, cpu?: Cpu): void {
  const k = kx.v.k;
  const b = kx.v.klayout.spaceBase(s);
  kx.beginWait(cpu, `another holder of space ${s}'s lock alone (a fork, share, unshare, attach or detach)`);
  while (Atomics.compareExchange(k, b + S_FORKING, 0, 1) !== 0) kx.waitStep(0, b + S_FORKING);
  kx.beginWait(cpu, `mapping changes of space ${s} to finish`);
  while (Atomics.compareExchange(k, b + S_RWLOCK, 0, -1) !== 0) kx.waitStep(0, b + S_RWLOCK);
}

/** Releases space s's lock taken alone. */
export function unlockExclusive(kx: Kernel, s: number): void {
  const k = kx.v.k;
  const b = kx.v.klayout.spaceBase(s);
  Atomics.store(k, b + S_RWLOCK, 0);
  Atomics.store(k, b + S_FORKING, 0);
}
