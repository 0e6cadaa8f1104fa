// The kernel operations of a program (executor.ts runs them on the cold path): switch, map,
// unmap, adjust, resolve, fork, exit, the isolation oracle's own-slot writes and checked reads,
// and the kernel half's kmap, kunmap and supervisor accesses. MH's own operations are mhops.ts.

import type { Cpu } from '../hw/cpu.js';
import { ACC_READ, ACC_WRITE } from '../hw/fault.js';
import { getVa, hex64, pageNumber, vaHi, vaLo } from '../hw/vaddr.js';
import type { Kernel } from '../kernel/context.js';
import { OK } from '../kernel/ops.js';
import {
  CURRENT_SPACE, OP_K_ADJUST, OP_K_KMAP, OP_K_KUNMAP, OP_K_EXIT, OP_K_FORK, OP_K_MAP, OP_K_OWN, OP_K_RESOLVE, OP_K_SWITCH, OP_K_UNMAP,
} from './program.js';
import * as faults from '../kernel/fault.js';
import { EV_ADJUST, EV_MAP, EV_STORE, EV_UNMAP, STORE_FAULT } from './mhops.js';
import type { RunState } from './runstate.js';
import * as forks from '../kernel/fork.js';
import * as khalf from '../kernel/khalf.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';
import * as shootdowns from '../kernel/shootdown.js';
import * as threads from '../kernel/thread.js';
import * as spaces from '../kernel/space.js';
import * as vm from '../kernel/vm.js';
import type { CoreResult } from './executor.js';

/** A kernel-half operation of a program: kmap, kunmap, or a supervisor access to a kernel address. */
export function kernelHalfOp(cpu: Cpu, kernel: Kernel, buf: Int32Array, w: number, index: number, st: RunState, res: CoreResult): string {
  const op = buf[w];
  if (op === OP_K_KMAP) {
    st.tally('kmap', khalf.kmap(kernel, cpu.id, buf[w + 2], buf[w + 3], buf[w + 4], cpu));
    return '';
  }
  if (op === OP_K_KUNMAP) {
    st.tally('kunmap', khalf.kunmap(kernel, cpu, buf[w + 2], buf[w + 3]));
    return '';
  }
  const space = kernel.current[cpu.id];
  if (space < 0) return '';
  const write = buf[w + 3] === 1;
  const user = cpu.regs.cpl;
  cpu.setMode(0, false);
  const r = faults.access(kernel, cpu, write ? ACC_WRITE : ACC_READ, buf[w + 1], buf[w + 2], 0, buf[w + 4]);
  cpu.setMode(user, false);
  st.tally('kaccess', r === 0 ? 'Ok' : 'Fault');
  if (!write) res.values?.push(r === 0 ? hex64(cpu.mmu.valHi, cpu.mmu.valLo) : 'fault');
  // The stale-tlb oracle over kernel frames: a kernel frame is every space's while mapped, nobody's once kunmap released it.
  if (r === 0) st.checkOwner(index, buf[w + 1], buf[w + 2], cpu.mmu.lastWord, space);
  return '';
}

/** An 8-byte access at a numeric address through the kernel's fault path. */
function kernelAccess(cpu: Cpu, kernel: Kernel, va: number, write: boolean, value: number): number {
  return faults.access(kernel, cpu, write ? ACC_WRITE : ACC_READ, vaHi(va), vaLo(va), 0, value);
}

/**
 * Kernel operations of a program: switch, map (allocating frames), unmap (releasing them),
 * adjust, resolve, fork, exit, and writes and checked reads of the core's own slots (the
 * isolation oracle: each core remembers what it wrote to its own slots in each space).
 */
export function kernelOp(cpu: Cpu, kernel: Kernel, buf: Int32Array, w: number, index: number, res: CoreResult, st: RunState): string {
  const op = buf[w];
  const cur = kernel.current[cpu.id];
  if (op === OP_K_SWITCH && buf[w + 1] === CURRENT_SPACE) {
    // With threads (--threads): a thread of any live process, as a scheduler would pick it.
    if (st.threads > 0) {
      st.tally('switch', threads.switchAny(kernel, cpu, buf[w + 2]));
      return '';
    }
    const live = procs.liveSpaces(kernel);
    if (live.length > 0) shootdowns.switchTo(kernel, cpu, live[(buf[w + 2] >>> 0) % live.length]);
    return '';
  }
  if (op === OP_K_FORK || op === OP_K_EXIT || op === OP_K_OWN) {
    if (cur < 0) return '';
    if (op === OP_K_FORK) {
      const child = forks.fork(kernel, cpu, cur);
      const pid = child < 0 ? -1 : procs.spawn(kernel, child, procs.pidOf(kernel, cur));
      if (child >= 0 && pid < 0) spaces.destroySpace(kernel, child, (pfn, pages, rights) => refs.releaseMapping(kernel, child, pfn, pages, rights));
      st.tally('fork', pid >= 0 ? 'Ok' : 'NoRoom');
      // The child gets a copy of the forking thread (on the same stack address), and as many more
      // as a process of the run has (each a stack of its own).
      if (pid >= 0 && kernel.runs[cpu.id] >= 0) threads.forkThread(kernel, kernel.runs[cpu.id], pid);
      if (pid >= 0) for (let t = threads.threadsOf(kernel, pid).length; t < st.threads; t++) if (threads.spawnThread(kernel, pid, cpu) < 0) break;
      if (pid >= 0) {
        const copy = new Map<number, Map<number, number>>();
        for (const [page, v] of st.shadowOf(cur)) copy.set(page, new Map(v));
        st.shadow.set(child, copy);
      }
      return '';
    }
    if (op === OP_K_EXIT) {
      const others = procs.liveSpaces(kernel);
      const mine = others.indexOf(cur);
      if (mine >= 0) others.splice(mine, 1);
      if (others.length === 0) {
        st.tally('exit', 'Last');
        return '';
      }
      // Its thread stops here first (its process will never run again); then the core runs
      // another process's thread, if one is runnable (the space exit switched to otherwise).
      if (st.threads > 0) threads.parkThread(kernel, cpu);
      procs.exitProcess(kernel, cpu, procs.pidOf(kernel, cur), others[(buf[w + 2] >>> 0) % others.length]);
      if (st.threads > 0) threads.switchAny(kernel, cpu, buf[w + 2]);
      st.tally('exit', 'Ok');
      return '';
    }
    if (buf[w + 3] === 1) ownWrite(cpu, kernel, st, cur, getVa(buf, w + 1));
    else ownCheck(cpu, kernel, st, res, cur, buf[w + 1], buf[w + 2], index);
    return '';
  }
  const space = buf[w + 1] === CURRENT_SPACE ? cur : buf[w + 1];
  if (!kernel.isLive(space)) return space < 0 ? '' : `core ${cpu.id}: op ${index}: address space ${space} does not exist`;
  const vhi = buf[w + 2];
  const vlo = buf[w + 3];
  switch (op) {
    case OP_K_SWITCH:
      shootdowns.switchTo(kernel, cpu, space);
      return '';
    case OP_K_MAP: {
      const pages = buf[w + 4] & 0xffffff;
      const lat = st.lat !== null && st.lat.timeMap() ? st.lat : null;
      const t0 = lat ? performance.now() : 0;
      const before = st.mh !== null ? st.mh.begin(kernel, cpu, space, vhi, vlo) : 0;
      const code = vm.mapAnon(kernel, cpu.id, space, vhi, vlo, pages, buf[w + 4] >>> 24, cpu);
      if (lat && code === OK) lat.map[lat.maps++] = (performance.now() - t0) * 1e6;
      if (st.mh !== null) st.mh.end(kernel, cpu, space, EV_MAP, vhi, vlo, before, code, buf[w + 4] >>> 24);
      st.tally('map', code);
      if (code === OK) st.forgetPage(space, vhi, vlo);
      return '';
    }
    case OP_K_UNMAP: {
      const lat = st.lat !== null && st.lat.timeUnmap() ? st.lat : null;
      const t0 = lat ? performance.now() : 0;
      const before = st.mh !== null ? st.mh.begin(kernel, cpu, space, vhi, vlo) : 0;
      const r = vm.unmap(kernel, cpu, space, vhi, vlo);
      if (lat && r.code === OK) lat.unmap[lat.unmaps++] = (performance.now() - t0) * 1e6;
      if (st.mh !== null) st.mh.end(kernel, cpu, space, EV_UNMAP, vhi, vlo, before, r.code, 0);
      st.tally('unmap', r.code);
      // The shootdown has returned: no core can use the old translation; the frames lose this
      // space's reference (freed unless another space still shares them copy-on-write).
      if (r.code === OK) {
        for (let p = 0; p < r.pages; p++) refs.release(kernel, r.pfn + p, space);
        st.forgetPage(space, vhi, vlo);
      }
      return '';
    }
    case OP_K_ADJUST: {
      const before = st.mh !== null ? st.mh.begin(kernel, cpu, space, vhi, vlo) : 0;
      const code = vm.adjust(kernel, cpu, space, vhi, vlo, buf[w + 4]).code;
      if (st.mh !== null) st.mh.end(kernel, cpu, space, EV_ADJUST, vhi, vlo, before, code, buf[w + 4]);
      st.tally('adjust', code);
      return '';
    }
    case OP_K_RESOLVE:
      st.tally('resolve', vm.resolveCode(kernel, cpu.id, space, vhi, vlo, cpu));
      return '';
  }
  return `core ${cpu.id}: op ${index}: unknown kernel opcode ${op}`;
}


/** A value the isolation oracles can trace: the writing space (bits 31:24), core (23:16) and this core's sequence number. */
export function tagged(space: number, core: number, st: RunState): number {
  return ((space & 0xff) << 24) | ((core & 0xff) << 16) | (st.seq++ & 0xffff);
}

/**
 * The isolation oracle's write: a value naming space, core and a sequence number, written at va
 * through the kernel's fault path as space's, and remembered when it landed. Returns the access's
 * result (0: done).
 */
export function ownWrite(cpu: Cpu, kernel: Kernel, st: RunState, space: number, va: number): number {
  const value = tagged(space, cpu.id, st);
  const mhr = st.mh;
  const before = mhr !== null ? mhr.begin(kernel, cpu, space, vaHi(va), vaLo(va) & ~4095) : 0;
  const wr = kernelAccess(cpu, kernel, va, true, value);
  if (mhr !== null) mhr.end(kernel, cpu, space, EV_STORE, vaHi(va), vaLo(va) & ~4095, before, wr === 0 ? OK : STORE_FAULT, 0);
  if (wr === 0) {
    const sh = st.shadowOf(space);
    const key = pageNumber(va);
    let page = sh.get(key);
    if (!page) sh.set(key, (page = new Map()));
    page.set(va, value);
  }
  return wr;
}

/**
 * The isolation oracle's check: reads back an address this core wrote as space's (chosen by the
 * two pick words, so that every check tests something); a value other than the one written is
 * an isolation violation. Returns the address read, or -1 when there was nothing to check or the
 * read faulted.
 */
export function ownCheck(cpu: Cpu, kernel: Kernel, st: RunState, res: CoreResult, space: number, pick1: number, pick2: number, index: number): number {
  const sh = st.shadowOf(space);
  if (sh.size === 0) return -1;
  let k = (pick2 >>> 0) % sh.size;
  let page: Map<number, number> | undefined;
  for (const p of sh.values()) if (k-- === 0) page = p;
  if (!page || page.size === 0) return -1;
  k = (pick1 >>> 0) % page.size;
  let at = 0;
  let want = 0;
  for (const [a, v] of page) {
    if (k-- === 0) {
      at = a;
      want = v;
    }
  }
  const r = kernelAccess(cpu, kernel, at, false, 0);
  if (r === 0 && cpu.mmu.valLo !== want) {
    res.isolation++;
    if (res.isolationExamples.length < 8) {
      res.isolationExamples.push(`core ${cpu.id} op ${index}: its slot 0x${at.toString(16)} in space ${space} holds 0x${(cpu.mmu.valLo >>> 0).toString(16)}` +
        ` (written by space ${cpu.mmu.valLo >>> 24}, core ${(cpu.mmu.valLo >>> 16) & 0xff}), not 0x${(want >>> 0).toString(16)} as it wrote`);
    }
  }
  return r === 0 ? at : -1;
}
