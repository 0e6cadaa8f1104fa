// Which cores may cache a space's translations, and how stale ones are removed (DESIGN.md, "TLB
// shootdown"; NRK's shootdown; Linux's tlb_gen). A core joins a space's active-core mask when it
// switches to the space and leaves it when it switches away; each space has a PCID (space + 1)
// and a TLB generation, bumped by every shootdown, so a core that comes back after a shootdown
// flushes that PCID first. The initiator of a permission-decreasing change sends a request to
// every other core in the mask, flushes locally and returns only after every ack (servicing its
// own queue meanwhile); a receiver acknowledges, syncs its replica, and invalidates (page by page
// up to SHOOTDOWN_FULL_FLUSH_PAGES, NRK's 20, else the whole PCID), running no program access in
// between.

import { type Cpu } from '../hw/cpu.js';
import { IPI_OK, IPI_TARGET_OFFLINE, WAIT_OK, describeWait } from '../hw/apic.js';
import { CR4_PCIDE, CR4_PKE, cr3Hi, cr3Lo } from '../hw/regs.js';
import { PH_BEGIN, PH_END, PH_INSTANT, TR_SHOOTDOWN, TR_SWITCH } from '../hw/trace.js';
import { vaHi, vaLo, vaJoin } from '../hw/vaddr.js';
import { must, panic } from '../hw/panic.js';
import { NO_FRAME } from '../hw/frames.js';
import { zeroPage } from './refs.js';
import { BP_BEFORE_EXIT_LEAVE, BP_BEFORE_RECEIVER_SYNC, BP_BEFORE_SHOOTDOWN_IPIS, type Kernel, type KernelStats } from './context.js';
import { S_ACTIVE, S_MSHARE_HOST, S_PKEYS, S_RPAL_SHARED, S_RPAL_SHARERS, S_TLBGEN } from './layout.js';
import { IPI_EXIT, IPI_REPLICA_ADVANCE, IPI_SHOOTDOWN, PAGE, IPI_KSHOOTDOWN } from './ops.js';
import * as khalf from './khalf.js';

export const SHOOTDOWN_FULL_FLUSH_PAGES = 20;

/** PCID of space s (CR3 bits 11:0 under CR4.PCIDE): s + 1, so PCID 0 stays the kernel's. */
export function pcid(s: number): number {
  return s + 1;
}

function maskWord(kx: Kernel, s: number, c: number): number {
  return kx.v.klayout.spaceBase(s) + S_ACTIVE + (c >>> 5);
}

/**
 * Runs space s on cpu: joins s's active mask, syncs the local replica (so that an unmap that
 * did not see this core in the mask is already applied here), flushes s's PCID if a shootdown
 * happened since this core last ran s (the TLB generation, as Linux's tlb_gen), loads CR3 with
 * the node's root and s's PCID without flushing, then leaves the previous space's mask. A switch
 * back to a space nobody changed keeps its translations.
 */
export function switchTo(kx: Kernel, cpu: Cpu, s: number): void {
  kx.checkSpace(s);
  const prev = kx.current[cpu.id];
  if (prev === s) return;
  const { k, klayout } = kx.v;
  kx.stats.switches++;
  cpu.trace(PH_INSTANT, TR_SWITCH, s);
  if (!cpu.regs.pcide) {
    // Setting PCIDE with CR3[11:0] != 0 is #GP(0): a CR3 given with PWT/PCD bits loses them first.
    if ((cpu.regs.cr3lo & 0xfff) !== 0) must(cpu.id, cpu.movCr3(cpu.regs.cr3hi, cpu.regs.cr3lo & ~0xfff), 'clearing CR3[11:0]');
    must(cpu.id, cpu.movCr4(cpu.regs.cr4 | CR4_PCIDE), 'setting CR4.PCIDE');
  }
  // Protection keys (SDM 4.6.2) are enabled on a core the first time it runs a space that
  // allocated one (RPAL, rpal.ts); until then every page's key 0 and PKRU 0 would change nothing.
  if (!cpu.regs.pke && s < 32 && Atomics.load(k, klayout.spaceBase(s) + S_PKEYS) !== 0) must(cpu.id, cpu.movCr4(cpu.regs.cr4 | CR4_PKE), 'setting CR4.PKE');
  Atomics.or(k, maskWord(kx, s, cpu.id), 1 << (cpu.id & 31));
  kx.sync(s, cpu.id, cpu);
  // The slots linked into s (RPAL shares, mshare regions) are walked in their owners' replicas:
  // those come up to date too, after joining s's mask (an owner's change that missed this core
  // is applied here; a later one sends it a shootdown, which syncs the owner's replica).
  const linked = s < 32 ? Atomics.load(k, klayout.spaceBase(s) + S_RPAL_SHARED) : 0;
  if (linked !== 0) for (let b = 0; b < 32; b++) if (((linked >>> b) & 1) !== 0 && kx.isLive(b)) kx.sync(b, cpu.id, cpu);
  const gen = Atomics.load(k, klayout.spaceBase(s) + S_TLBGEN);
  if (Atomics.load(k, klayout.coreGen(cpu.id, s)) !== gen) {
    invpcidOf(cpu, 1, pcid(s), 0, 0);
    Atomics.store(k, klayout.coreGen(cpu.id, s), gen);
    kx.stats.generationFlushes++;
  }
  khalf.switchIn(kx, cpu, s, kx.replicaFor(cpu.id));
  const root = kx.vspace(s).root(kx.replicaFor(cpu.id));
  must(cpu.id, cpu.movCr3(cr3Hi(root, true), cr3Lo(root, pcid(s))), `loading space ${s}'s root`);
  if (prev >= 0) leaveMask(kx, cpu, prev);
  kx.current[cpu.id] = s;
}

/**
 * Takes cpu out of s's active mask. It keeps s's translations under s's PCID; the generation it
 * recorded when it switched in is older than any shootdown since, so it flushes them if one
 * happened before it runs s again. (Recording a newer generation here would race with an
 * initiator that bumps the generation and then reads the mask.)
 */
function leaveMask(kx: Kernel, cpu: Cpu, s: number): void {
  Atomics.and(kx.v.k, maskWord(kx, s, cpu.id), ~(1 << (cpu.id & 31)));
}

/**
 * Leaves the current space: flushes the TLB's non-global entries and, if the core ran a space,
 * loads a CR3 that maps no user address (the zero page as an empty top-level table, PCID 0: what
 * a core runs between processes, like Linux's init_mm), then leaves the mask. An access before
 * the next switch faults instead of walking the tables of a space that may since be destroyed.
 */
export function leave(kx: Kernel, cpu: Cpu): void {
  const prev = kx.current[cpu.id];
  cpu.mmu.flushNonGlobal();
  if (prev < 0) return; // a core the kernel never switched keeps the CR3 it was given (hardware-level programs)
  const z = zeroPage(kx);
  if (z !== NO_FRAME) must(cpu.id, cpu.movCr3(cr3Hi(z, true), cr3Lo(z, 0)), 'loading the kernel-only root');
  leaveMask(kx, cpu, prev);
  kx.current[cpu.id] = -1;
}

/** Drops cpu's translations of space s and takes it out of s's mask (before s is destroyed). */
export function forget(kx: Kernel, cpu: Cpu, s: number): void {
  if (kx.current[cpu.id] === s) kx.current[cpu.id] = -1;
  invpcidOf(cpu, 1, pcid(s), 0, 0);
  leaveMask(kx, cpu, s);
}

/** Cores in s's active mask. */
export function activeCores(kx: Kernel, s: number): number[] {
  const out: number[] = [];
  const base = kx.v.klayout.spaceBase(s) + S_ACTIVE;
  for (let w = 0; w < kx.v.klayout.maskWords; w++) {
    const m = Atomics.load(kx.v.k, base + w);
    for (let b = 0; b < 32; b++) if ((m >>> b) & 1) out.push(w * 32 + b);
  }
  return out;
}

/**
 * Shoots down [hi:lo, + pages * 4 KiB) of space s: a request to every other core in the active
 * mask, the local flush, and the wait for every ack. Panics (naming the cores) past the bound.
 * `progress` (a fork holding its space's lock) is called per request sent and as acks come in.
 */
export function shootdown(kx: Kernel, cpu: Cpu, s: number, hi: number, lo: number, pages: number, progress?: () => void): void {
  cpu.trace(PH_BEGIN, TR_SHOOTDOWN, pages);
  try {
    shootdownTraced(kx, cpu, s, hi, lo, pages, progress, -1);
    // RPAL (rpal.ts, behaviour 29): the spaces s's slot is shared into translate its pages too;
    // their cores refill from s's tables, so they bring s's replica up to date first.
    const sharers = Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_RPAL_SHARERS);
    if (kx.mshareFlushAll && sharers !== 0 && Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_MSHARE_HOST) === 1) flushEverywhere(kx, cpu, s, progress);
    else if (sharers !== 0 && !kx.ownerOnlyShootdown) {
      for (let a = 0; a < 32; a++) if (((sharers >>> a) & 1) !== 0 && kx.isLive(a)) shootdownTraced(kx, cpu, a, hi, lo, pages, progress, s);
    }
  } finally {
    cpu.trace(PH_END, TR_SHOOTDOWN, pages);
  }
}

function shootdownTraced(kx: Kernel, cpu: Cpu, s: number, hi: number, lo: number, pages: number, progress: (() => void) | undefined, owner: number): void {
  const { k, klayout } = kx.v;
  kx.stats.shootdowns++;
  // First a new generation: a core that left s and comes back later flushes s's PCID; then the
  // cores running s now, who get the request.
  Atomics.add(k, klayout.spaceBase(s) + S_TLBGEN, 1);
  cpu.debug.breakpoint(BP_BEFORE_SHOOTDOWN_IPIS);
  if (!kx.skipShootdown) kx.stats.shootdownIpis += requestActive(kx, cpu, s, hi, lo, pages, owner, progress);
  invalidateRange(cpu, pcid(s), hi, lo, pages, null);
  const r = cpu.apic.waitAcks(progress);
  if (r !== WAIT_OK) panic(`shootdown: core ${cpu.id} (space ${s}, targets ${otherActive(kx, s, cpu.id)}): ${describeWait(cpu, r)}`);
}

/**
 * Before space `owner`'s slot is linked into space a (rpal.ts link): every core running a brings
 * owner's replica on its node up to date (a shootdown of no page that names the owner), this core
 * too — a core of a may walk owner's tables as soon as the entry is written, and owner's changes
 * made before a joined its sharers reached none of a's cores.
 */
export function syncForLink(kx: Kernel, cpu: Cpu, a: number, owner: number): void {
  requestActive(kx, cpu, a, 0, 0, 0, owner, undefined);
  kx.sync(owner, cpu.id, cpu);
  const r = cpu.apic.waitAcks();
  if (r !== WAIT_OK) panic(`rpal: core ${cpu.id} (linking space ${owner}'s slot into ${a}, targets ${otherActive(kx, a, cpu.id)}): ${describeWait(cpu, r)}`);
}

/**
 * Sends a shootdown request — `pages` pages of space s from hi:lo (none: only the replicas'
 * syncs), naming `owner` whose replica the receiver syncs too (-1: none) — to every core in s's
 * active mask but cpu, calling `progress` per request. Returns how many were sent (an offline
 * core gets none); the caller waits for the acks.
 */
function requestActive(kx: Kernel, cpu: Cpu, s: number, hi: number, lo: number, pages: number, owner: number, progress: (() => void) | undefined): number {
  const { k, klayout } = kx.v;
  const base = klayout.spaceBase(s) + S_ACTIVE;
  let sent = 0;
  for (let w = 0; w < klayout.maskWords; w++) {
    const m = Atomics.load(k, base + w);
    for (let b = 0; b < 32; b++) {
      const c = w * 32 + b;
      if (((m >>> b) & 1) === 0 || c === cpu.id) continue;
      const r = cpu.apic.sendIpi(c, IPI_SHOOTDOWN, s, hi, lo, pages, owner + 1);
      if (r === IPI_TARGET_OFFLINE) continue;
      if (r !== IPI_OK) panic(`shootdown: core ${cpu.id} could not send to core ${c}: ${describeWait(cpu, r)}`);
      sent++;
      if (progress !== undefined) progress();
    }
  }
  return sent;
}

/**
 * mshare's "flush all" (config kernel.mshareFlush 'all'): a change in host s's region, made
 * without knowing who attached it — every other online core flushes all its non-global
 * translations (INVPCID type 3) after syncing s's replica, this core too, and every space's
 * generation moves so that cores not running now flush when they switch in.
 */
function flushEverywhere(kx: Kernel, cpu: Cpu, s: number, progress: (() => void) | undefined): void {
  const { k, klayout } = kx.v;
  kx.stats.shootdowns++;
  for (let t = 0; t < kx.maxSpaces; t++) if (kx.isLive(t)) Atomics.add(k, klayout.spaceBase(t) + S_TLBGEN, 1);
  for (let c = 0; c < klayout.config.cores; c++) {
    if (c === cpu.id) continue;
    const r = cpu.apic.sendIpi(c, IPI_SHOOTDOWN, s, 0, 0, FLUSH_EVERYTHING, s + 1);
    if (r === IPI_TARGET_OFFLINE) continue;
    if (r !== IPI_OK) panic(`shootdown: core ${cpu.id} could not send a flush-all to core ${c}: ${describeWait(cpu, r)}`);
    kx.stats.shootdownIpis++;
    if (progress !== undefined) progress();
  }
  must(cpu.id, cpu.mmu.invpcid(3, 0, 0, 0), 'INVPCID 3');
  kx.stats.fullFlushes++;
  const r = cpu.apic.waitAcks(progress);
  if (r !== WAIT_OK) panic(`shootdown: core ${cpu.id} (flush-all for mshare region ${s}): ${describeWait(cpu, r)}`);
}

/** The pages argument of a shootdown IPI that asks for every non-global translation to go (flushEverywhere). */
const FLUSH_EVERYTHING = -1;

/** The cores running s other than `me`, as "1,2,3" (for a message; no closure in shootdownTraced). */
function otherActive(kx: Kernel, s: number, me: number): string {
  return activeCores(kx, s).filter((c) => c !== me).join(',');
}

/**
 * INVPCID of `type` for a space's PCID `id`. A core with CR4.PCIDE = 0 (one the kernel never
 * switched to a space) caches nothing under that PCID — its entries are PCID 0's — and INVPCID of
 * a PCID other than 0 would be #GP(0): there is nothing to do.
 */
function invpcidOf(cpu: Cpu, type: number, id: number, hi: number, lo: number): void {
  if (!cpu.regs.pcide && id !== 0) return;
  must(cpu.id, cpu.mmu.invpcid(type, id, hi, lo), `INVPCID ${type}`);
}

/**
 * Invalidates a range of the space with this PCID, whichever space the core runs now: INVPCID
 * type 0 page by page, or type 1 (the whole PCID) above the threshold.
 */
function invalidateRange(cpu: Cpu, id: number, hi: number, lo: number, pages: number, stats: KernelStats | null): void {
  if (pages > SHOOTDOWN_FULL_FLUSH_PAGES) {
    invpcidOf(cpu, 1, id, 0, 0);
    if (stats) stats.fullFlushes++;
    return;
  }
  if (stats) stats.pageInvalidations += pages;
  const va = vaJoin(hi, lo);
  for (let i = 0; i < pages; i++) {
    const v = va + i * PAGE;
    invpcidOf(cpu, 0, id, vaHi(v), vaLo(v));
  }
}

/** Registers the shootdown and replica-advance receivers on cpu. */
export function installHandlers(kx: Kernel, cpu: Cpu): void {
  cpu.apic.handlers[IPI_REPLICA_ADVANCE] = (c, sender, s) => {
    c.apic.ack(sender);
    kx.stats.advancesReceived++;
    if (kx.isLive(s)) kx.sync(s, c.id, c);
  };
  cpu.apic.handlers[IPI_EXIT] = (c, sender, s) => {
    // The process of s exited: this core stops running it before it acks, so that once every
    // ack is in no core can translate through s and its frames may go.
    c.debug.breakpoint(BP_BEFORE_EXIT_LEAVE);
    if (kx.current[c.id] === s) leave(kx, c);
    c.apic.ack(sender);
  };
  cpu.apic.handlers[IPI_KSHOOTDOWN] = (c, sender, a0, hi, lo, pages) => khalf.onKernelShootdown(kx, c, sender, hi, lo, pages, a0 === 1);
  cpu.apic.handlers[IPI_SHOOTDOWN] = (c, sender, s, hi, lo, pages, owner) => {
    c.apic.ack(sender);
    kx.stats.shootdownsReceived++;
    c.debug.breakpoint(BP_BEFORE_RECEIVER_SYNC);
    if (!kx.skipReplicaSync) kx.sync(s, c.id, c);
    // A sharer's core (RPAL): the pages are the owner's, in the owner's tables.
    if (owner > 0 && !kx.skipReplicaSync && kx.isLive(owner - 1)) kx.sync(owner - 1, c.id, c);
    if (pages === FLUSH_EVERYTHING) {
      must(c.id, c.mmu.invpcid(3, 0, 0, 0), 'INVPCID 3');
      kx.stats.fullFlushes++;
      return;
    }
    invalidateRange(c, pcid(s), hi, lo, pages, kx.stats);
  };
}
