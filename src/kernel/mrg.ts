// The process's user-level page-fault handler under the MH personality: what MH's MRG system
// library does when the kernel forwards a write fault to the process. It runs on the faulting
// core as user code: its loads and stores go through the core's MMU, and it changes the address
// space only with the operations any program has (MapFrame of a fresh frame, Adjust, Move).
//
//   RO-Shared page: copy it into the library's scratch page (512 loads, 512 stores), then move
//                   the scratch page over the shared mapping: the process's page becomes Private
//                   RW, the shared frame loses one reference.
//   Private RO page: make it writable (the read/write bit lost by copy-on-write, or a page the
//                   program made read-only: MRG cannot tell them apart and fixes both).
//
// Each thread (core) has its own scratch page, the (1 + core)-th page from the top of the user
// half: two threads of a process copying at once must not share one. A move takes it away, so
// the next copy maps a new one; one inherited from a fork (RO-Shared in the child) is unmapped
// and replaced.

import type { Cpu } from '../hw/cpu.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import { BP_BEFORE_USER_MOVE, type Kernel } from './context.js';
import { move } from './mh.js';
import { stateOf, ST_PRIVATE_RW } from './mhstate.js';
import { OK, PAGE, R_ACCESS, R_COW, R_IO, R_USER, R_WIRED, R_WRITE, USER_TOP } from './ops.js';
import { release } from './refs.js';
import { adjust, lookup, mapAnon, unmap } from './vm.js';

/** The library's scratch page of core c. */
export function scratchVa(c: number): number {
  return USER_TOP - PAGE * (1 + c);
}

/**
 * Handles a write fault at vhi:vlo the kernel forwarded to the process running on cpu (space s).
 * Returns true when the write should be retried (handled, or the page changed meanwhile and the
 * retry will decide), false when the process cannot handle it (the fault reaches the program).
 */
export function userFault(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number): boolean {
  kx.stats.userFaults++;
  const e = kx.found;
  if (!lookup(kx, cpu.id, s, vhi, vlo, e, cpu)) return true;
  const hi = vaHi(e.va);
  const lo = vaLo(e.va);
  const rights = e.rights;
  const va = e.va;
  if ((rights & (R_IO | R_WIRED)) !== 0) return false;
  if ((rights & R_COW) !== 0) {
    const sva = scratchVa(cpu.id);
    const shi = vaHi(sva);
    const slo = vaLo(sva);
    if (e.pages !== 1 || !scratchPage(kx, cpu, s, shi, slo)) return false;
    const mmu = cpu.mmu;
    for (let off = 0; off < PAGE; off += 8) {
      // A fault here (the page went away) ends the copy: the retried write decides what follows.
      if (mmu.load64(hi, lo + off) !== 0) return true;
      if (mmu.store64(shi, slo + off, mmu.valHi, mmu.valLo) !== 0) return true;
    }
    cpu.debug.breakpoint(BP_BEFORE_USER_MOVE);
    if (move(kx, cpu, s, hi, lo, shi, slo) === OK) {
      kx.stats.userCopies++;
      kx.onEvent?.('copy', va);
    }
    return true;
  }
  if ((rights & R_WRITE) === 0) adjust(kx, cpu, s, hi, lo, (rights & R_ACCESS) | R_WRITE);
  return true;
}

/** Makes sure the scratch page is a Private RW page of s. False when memory ran out. */
function scratchPage(kx: Kernel, cpu: Cpu, s: number, shi: number, slo: number): boolean {
  const e = kx.found;
  if (lookup(kx, cpu.id, s, shi, slo, e, cpu)) {
    if (stateOf(e.rights) === ST_PRIVATE_RW && e.pages === 1) return true;
    const u = unmap(kx, cpu, s, shi, slo);
    if (u.code !== OK) return false;
    for (let p = 0; p < u.pages; p++) release(kx, u.pfn + p, s);
  }
  return mapAnon(kx, cpu.id, s, shi, slo, 1, R_WRITE | R_USER, cpu) === OK;
}
