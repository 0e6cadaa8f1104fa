// The page-fault path, and the only fault-and-retry loop. A #PF in the current space looks the
// address up in the local replica brought up to date (Resolve's read). A write to a demand-zero
// page allocates a frame (PGZERO); a write to a copy-on-write page copies it (PGCOPY) or, for
// the last sharer, reuses it (or, under MH's policy, makes it private read-only); a mapping that
// allows the access means the fault was spurious (a lagging replica, or a stale read-only
// translation) and the access is retried; anything else is an invalid access, delivered to the
// program.

import type { Cpu } from '../hw/cpu.js';
import { ACC_FETCH, ACC_WRITE, PF_PK, VEC_PF, faultError, faultVector } from '../hw/fault.js';
import { NO_FRAME } from '../hw/frames.js';
import { FRAME_WORDS } from '../hw/pte.js';
import { PH_BEGIN, PH_END, TR_FAULT } from '../hw/trace.js';
import { vaJoin } from '../hw/vaddr.js';
import { BP_BEFORE_COW_COPY, BP_BEFORE_RESOLVE, type Kernel } from './context.js';
import { S_RPAL_SHARED } from './layout.js';
import { OK, PAGE, R_COW, R_IO, R_NX, R_USER, R_WAS_COW, R_WIRED, R_WRITE, R_ZERO, leafWritable } from './ops.js';
import { userFault } from './mrg.js';
import { kernelFault } from './khalf.js';
import { holdNew, refcount, release } from './refs.js';
import { lockShared, unlockShared } from './space.js';
import { ownerIn } from './slots.js';
import { switchTo } from './shootdown.js';
import { adjustLocked, lookup, remapLocked } from './vm.js';

/** Retries of one access after the fault handler found the fault spurious, before it is delivered. */
export const FAULT_RETRIES = 3;

/**
 * The page-fault handler for a fault `code` of an access of kind acc at vhi:vlo by cpu. Returns
 * true when the access should be retried (spurious, or repaired), false when the fault goes to
 * the program.
 */
export function onPageFault(kx: Kernel, cpu: Cpu, vhi: number, vlo: number, acc: number, code: number): boolean {
  // RPAL: the first kernel entry of a callee (thread.ts rpalCall) makes its process current — the
  // one lazy kernel switch — and the fault is then its own.
  // A callee whose process exited has had its slot taken out of the caller's space (proc.ts): no
  // switch then, and the fault goes to the program, whose call ends at its recovery point
  // (thread.ts recoverCall).
  if (kx.lazy[cpu.id] >= 0) {
    const s = kx.lazy[cpu.id];
    kx.lazy[cpu.id] = -1;
    const cur0 = kx.current[cpu.id];
    if (kx.isLive(s) && cur0 >= 0 && cur0 < 32 && ((Atomics.load(kx.v.k, kx.v.klayout.spaceBase(cur0) + S_RPAL_SHARED) >>> s) & 1) !== 0) switchTo(kx, cpu, s);
  }
  const cur = kx.current[cpu.id];
  if (cur < 0 || faultVector(code) !== VEC_PF) return false;
  // A protection-key violation (SDM 4.6.2: the entry allows the access, PKRU does not) is the
  // program's, as Linux's SEGV_PKUERR: no mapping change can repair it, so it is not retried.
  if ((faultError(code) & PF_PK) !== 0) {
    kx.stats.invalidAccesses++;
    return false;
  }
  // A kernel address: the kernel half's own repair (khalf.ts), never the user-space paths.
  if (vhi < 0) return cpu.regs.cpl === 0 && kernelFault(kx, cpu, cur, vhi, vlo);
  // RPAL (behaviour 28): a fault in another process's slot shared into this one is handled in
  // that process's address space (its log, frames and counters); the access is retried here.
  const owner = ownerIn(kx, cur, vaJoin(vhi, vlo));
  const s = owner >= 0 && !kx.faultInWrongSpace ? owner : cur;
  cpu.trace(PH_BEGIN, TR_FAULT, vlo);
  try {
    const r = handleFault(kx, cpu, s, vhi, vlo, acc);
    // MH: the fault goes to the process's user-level handler, with the space lock let go (the
    // handler's own operations take it).
    return r === USER ? userFault(kx, cpu, s, vhi, vlo) : r === RETRY;
  } finally {
    cpu.trace(PH_END, TR_FAULT, vlo);
  }
}

/** What the kernel's handler decided: deliver the fault to the program, retry the access, or (MH) run the user-level handler. */
const DELIVER = 0;
const RETRY = 1;
const USER = 2;

function handleFault(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number, acc: number): number {
  cpu.debug.breakpoint(BP_BEFORE_RESOLVE);
  // A write may have to change the mapping: look it up under the space lock, so that what it
  // finds (a fork, another core's fault may have changed it) is what it changes.
  const write = acc === ACC_WRITE;
  if (write) lockShared(kx, s, cpu);
  try {
    const e = kx.found;
    const found = lookup(kx, cpu.id, s, vhi, vlo, e, cpu);
    // The frame of the faulting page (a mapping may span pages).
    const pfn = found ? e.pfn + Math.floor((vaJoin(vhi, vlo) - e.va) / PAGE) : 0;
    if (found && write && kx.mh) {
      const u = mhWriteFault(kx, cpu, s, vhi, vlo & ~(PAGE - 1), pfn, e.rights);
      if (u !== DELIVER) return u;
    }
    if (found && write && (e.rights & R_WRITE) !== 0 && (e.rights & (R_COW | R_ZERO)) !== 0) {
      if (writeFault(kx, cpu, s, vhi, vlo & ~(PAGE - 1), pfn, e.rights)) return RETRY;
      kx.stats.invalidAccesses++;
      return DELIVER;
    }
    if (found && write && (e.rights & R_WAS_COW) !== 0) {
      // MH: a page made private read-only by a copy-on-write fault faults again on the retried
      // write; the user-level handler (MH's MRG library) makes it writable.
      adjustLocked(kx, cpu, s, vhi, vlo & ~(PAGE - 1), (e.rights & ~R_WAS_COW) | R_WRITE);
      kx.stats.spuriousFaults++;
      return RETRY;
    }
    let ok = found;
    if (found) {
      if (write && !leafWritable(e.rights)) ok = false;
      if (acc === ACC_FETCH && (e.rights & R_NX) !== 0) ok = false;
      if (cpu.regs.cpl === 3 && (e.rights & R_USER) === 0) ok = false;
    }
    if (ok) kx.stats.spuriousFaults++;
    else kx.stats.invalidAccesses++;
    return ok ? RETRY : DELIVER;
  } finally {
    if (write) unlockShared(kx, s);
  }
}

/**
 * MH's write fault on the page at hi:lo (frame pfn, these rights), the space lock held: the last
 * sharer of an RO-Shared page gets it back Private RO with no copy (the retried write faults once
 * more, as a plain read-only fault); an RO-Shared page with other sharers, or a Private RO page,
 * goes to the process's user-level handler. DELIVER: not MH's case (the default path decides).
 */
function mhWriteFault(kx: Kernel, cpu: Cpu, s: number, hi: number, lo: number, pfn: number, rights: number): number {
  if ((rights & (R_IO | R_WIRED)) !== 0) return DELIVER;
  if ((rights & R_COW) !== 0) {
    if (refcount(kx, pfn) > 1) return USER;
    adjustLocked(kx, cpu, s, hi, lo, rights & ~(R_COW | R_WRITE));
    kx.stats.cowReuses++;
    kx.onEvent?.('reuse', vaJoin(hi, lo));
    return RETRY;
  }
  return (rights & R_WRITE) === 0 ? USER : DELIVER;
}

/**
 * A write to the copy-on-write or demand-zero page at hi:lo (frame `old`, these rights) of space s, with
 * the space lock held: allocate and zero (demand-zero), copy (other sharers remain), or reuse the
 * frame (this is the last sharer). Returns true when the write may be retried. Copies before
 * dropping the reference, so a sharer that reuses the frame never writes it while it is copied.
 */
function writeFault(kx: Kernel, cpu: Cpu, s: number, hi: number, lo: number, old: number, rights: number): boolean {
  const { frames, mem } = kx.v;
  const plain = (rights & ~(R_COW | R_ZERO)) | R_WRITE;
  if ((rights & R_ZERO) !== 0) {
    const nf = frames.allocAny(cpu.node);
    if (nf === NO_FRAME) return false;
    frames.zero(nf);
    holdNew(kx, nf, s);
    if (remapLocked(kx, cpu, s, hi, lo, nf, plain) !== OK) {
      release(kx, nf, s);
      return false;
    }
    kx.stats.zeroFills++;
    kx.onEvent?.('zero', vaJoin(hi, lo));
    return true;
  }
  if (refcount(kx, old) === 1) {
    // The last sharer: the same frame becomes writable. MH's policy makes it private read-only
    // instead (the write permission is lost), and the retried write faults once more.
    adjustLocked(kx, cpu, s, hi, lo, kx.cowPolicy === 'mh' ? (rights & ~(R_COW | R_WRITE)) | R_WAS_COW : plain);
    kx.stats.cowReuses++;
    kx.onEvent?.('reuse', vaJoin(hi, lo));
    return true;
  }
  if (kx.skipCowCopy) {
    // Injected fault: the shared frame simply becomes writable here; the other sharers see our writes.
    adjustLocked(kx, cpu, s, hi, lo, plain);
    return true;
  }
  cpu.debug.breakpoint(BP_BEFORE_COW_COPY);
  const nf = frames.allocAny(cpu.node);
  if (nf === NO_FRAME) return false;
  mem.copyWithin(nf * FRAME_WORDS, old * FRAME_WORDS, (old + 1) * FRAME_WORDS);
  holdNew(kx, nf, s);
  if (remapLocked(kx, cpu, s, hi, lo, nf, plain) !== OK) {
    release(kx, nf, s);
    return false;
  }
  release(kx, old, s); // the shootdown has returned: s no longer reaches the old frame
  kx.stats.cowCopies++;
  kx.onEvent?.('copy', vaJoin(hi, lo));
  return true;
}

/**
 * One 8-byte access (load, store of hi:lo, or fetch) by cpu, retried while the page-fault
 * handler finds its fault spurious or repairs it (zero page, copy-on-write), at most
 * FAULT_RETRIES times. Returns 0 (a loaded value in cpu.valHi:valLo) or the fault delivered.
 */
export function access(kx: Kernel, cpu: Cpu, acc: number, vhi: number, vlo: number, hi = 0, lo = 0, size = 8): number {
  let r = accessOnce(cpu, acc, vhi, vlo, hi, lo, size);
  // The handler is given the faulting address, CR2: for an access that crosses into the next
  // page and faults there, that page's (a #GP is never handled, whatever CR2 holds).
  for (let k = 0; k < FAULT_RETRIES && r !== 0 && onPageFault(kx, cpu, cpu.mmu.cr2hi, cpu.mmu.cr2lo, acc, r); k++) r = accessOnce(cpu, acc, vhi, vlo, hi, lo, size);
  return r;
}

function accessOnce(cpu: Cpu, acc: number, vhi: number, vlo: number, hi: number, lo: number, size: number): number {
  if (size !== 8 || (vlo & 7) !== 0) return cpu.mmu.access(vhi, vlo, size, acc === ACC_WRITE, hi, lo);
  return acc === ACC_WRITE ? cpu.mmu.store64(vhi, vlo, hi, lo) : acc === ACC_FETCH ? cpu.mmu.fetch64(vhi, vlo) : cpu.mmu.load64(vhi, vlo);
}
