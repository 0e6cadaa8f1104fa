// mshare (the RPAL seed's reviewer points at it; the Linux mshare patches): a shared region backed
// by an address space of its own — the host, with its own NR instance and no process — covering
// one 512 GiB slot. Processes attach the region at the slot's address (the same address in every
// process, as the patches' first API asks): their top-level entry for it points at the host's
// tables in every replica (the link rpal.ts makes), so the host's mappings appear in each. Faults
// in the range are handled in the host's space (fault.ts, as RPAL's cross-slot faults); a change
// in the region shoots down the cores of every attached process (the sharers of the host's slot,
// shootdown.ts). The host lives until the last detach, which destroys it and gives its frames
// and tables back.

import type { Cpu } from '../hw/cpu.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import type { Kernel } from './context.js';
import { S_MSHARE_HOST, S_RPAL_SHARED, S_RPAL_SHARERS } from './layout.js';
import { EBUSY, EINVAL, OK } from './ops.js';
import { releaseMapping } from './refs.js';
import { enterSlot, link } from './rpal.js';
import { RPAL_SPACES, SLOT_BYTES, slotOf, unlink } from './slots.js';
import { createSpace, destroySpace, lockExclusive, unlockExclusive } from './space.js';
import type { MapEntry } from './mapdb.js';

const probe: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };

/**
 * A new mshare region over slot n (1-255, one no other space has): its host space, which the
 * region's own map/unmap/adjust operate on (vm.ts, as on any space). Returns the host, or -1 -
 * the error (no free space; EINVAL for the slot).
 */
export function mshareCreate(kx: Kernel, n: number, cpu?: Cpu): number {
  const h = createSpace(kx);
  if (h < 0) return h;
  const code = h >= RPAL_SPACES ? EINVAL : enterSlot(kx, h, n, cpu);
  if (code !== OK) {
    destroySpace(kx, h, (pfn, pages, rights) => releaseMapping(kx, h, pfn, pages, rights));
    return -1 - code;
  }
  Atomics.store(kx.v.k, kx.v.klayout.spaceBase(h) + S_MSHARE_HOST, 1);
  return h;
}

/** Whether h is a live mshare host. */
export function isHost(kx: Kernel, h: number): boolean {
  return Number.isInteger(h) && h >= 0 && h < RPAL_SPACES && kx.isLive(h) && Atomics.load(kx.v.k, kx.v.klayout.spaceBase(h) + S_MSHARE_HOST) === 1;
}

/**
 * Attaches region h to space a at address va, which must be the region's slot base (EINVAL for
 * any other, a misaligned one included, for a host that is not one, for a space above 31, or one
 * attached already); EBUSY when a has mappings of its own in the range. From then on a's maps
 * there are INVALID_BASE (vm.ts). Holds a's lock, then h's, alone: an attach, a detach and a's
 * maps take turns, and a host being destroyed takes no attach.
 */
export function mshareAttach(kx: Kernel, a: number, h: number, va: number, cpu?: Cpu): number {
  if (!isHost(kx, h) || !Number.isInteger(a) || a < 0 || a >= RPAL_SPACES || a === h || !kx.isLive(a)) return kx.err({ code: EINVAL }).code;
  lockExclusive(kx, a, cpu);
  lockExclusive(kx, h, cpu);
  try {
    if (!isHost(kx, h)) return kx.err({ code: EINVAL }).code;
    const slot = slotOf(kx, h);
    if (va !== slot * SLOT_BYTES) return kx.err({ code: EINVAL }).code;
    const c = cpu?.id ?? kx.v.replicaOf.indexOf(0);
    const r = kx.beginRead(a, c, cpu);
    const busy = kx.vspace(a).db(r).ceil(vaHi(va), vaLo(va), probe) && probe.va < va + SLOT_BYTES;
    kx.endRead(a, c);
    if (busy) return kx.err({ code: EBUSY }).code;
    return link(kx, a, h, cpu);
  } finally {
    unlockExclusive(kx, h);
    unlockExclusive(kx, a);
  }
}

/**
 * Detaches region h from space a (its cores shot down from cpu; without one, no core may run a).
 * The last detach destroys the host: its frames and tables go back — unless `keepHost`, when the
 * last detach is EBUSY instead (a stress run keeps its regions). EINVAL when h is not attached to a.
 */
export function mshareDetach(kx: Kernel, a: number, h: number, cpu?: Cpu, keepHost = false): number {
  const { k, klayout } = kx.v;
  if (!isHost(kx, h) || !Number.isInteger(a) || a < 0 || a >= RPAL_SPACES || a === h) return kx.err({ code: EINVAL }).code;
  let last = false;
  lockExclusive(kx, a, cpu);
  lockExclusive(kx, h, cpu);
  try {
    if (!isHost(kx, h) || (Atomics.load(k, klayout.spaceBase(a) + S_RPAL_SHARED) & (1 << h)) === 0) return kx.err({ code: EINVAL }).code;
    last = Atomics.load(k, klayout.spaceBase(h) + S_RPAL_SHARERS) === 1 << a;
    if (last && keepHost) return kx.err({ code: EBUSY }).code;
    unlink(kx, a, h, cpu);
    // The host is dying: no attach can link it from here on (isHost is false).
    if (last) Atomics.store(k, klayout.spaceBase(h) + S_MSHARE_HOST, HOST_DYING);
  } finally {
    unlockExclusive(kx, h);
    unlockExclusive(kx, a);
  }
  if (last) destroySpace(kx, h, (pfn, pages, rights) => releaseMapping(kx, h, pfn, pages, rights));
  return OK;
}

/** S_MSHARE_HOST of a host whose last detach is destroying it. */
const HOST_DYING = 2;
