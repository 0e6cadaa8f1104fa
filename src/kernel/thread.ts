// Threads (issue 12; RPAL runs threads of several processes in one address space): a process has
// up to THREADS_PER_PROCESS threads, each its saved registers (PKRU — XSAVE's PKRU component —,
// CPL and EFLAGS.AC), its own stack page and a state, in the shared thread table. A core runs one
// thread at a time: switching to a thread of the process it runs loads no CR3; to another
// process's thread it switches the address space (CR3 loaded, PCID kept: no flush). The saved
// PKRU comes back with the thread, so a thread's keys follow it from core to core.

import type { Cpu } from '../hw/cpu.js';
import { NO_FRAME } from '../hw/frames.js';
import { vaHi, vaLo, vaJoin } from '../hw/vaddr.js';
import { BP_RPAL_CALL_SAVED, BP_RPAL_RETURN_SAVED, type Kernel } from './context.js';
import {
  K_LINE, P_SPACE, P_STATE, S_RPAL_SHARED, T_AC, T_CALLER, T_CORE, T_CPL, T_PID, T_PKRU, T_STACK, T_STATE, THREAD_BLOCKED, THREAD_EXITED, THREAD_FREE,
  THREAD_RUNNABLE, THREAD_RUNNING, THREADS_PER_PROCESS,
} from './layout.js';
import { ALREADY_MAPPED, EINVAL, OK, OUT_OF_MEMORY, R_USER, R_WRITE, USER_TOP } from './ops.js';
import { alive, processOf } from './proc.js';
import { release, zeroPage } from './refs.js';
import { switchTo } from './shootdown.js';
import { RPAL_SPACES, SLOT_BYTES, slotOf } from './slots.js';
import { mapZero, unmap } from './vm.js';

/** Room between two threads' stack pages. */
export const STACK_SPAN = 0x10_0000;

/** A thread's saved state. */
export interface ThreadInfo {
  state: number;
  pid: number;
  core: number;
  pkru: number;
  cpl: number;
  ac: boolean;
  stack: number;
}

function line(kx: Kernel, tid: number): number {
  return kx.v.klayout.threadBase + tid * K_LINE;
}

/** Writes a new thread's line (its state already taken from THREAD_FREE): process, registers, stack; on no core, called by no one. */
function fill(kx: Kernel, tid: number, pid: number, pkru: number, cpl: number, ac: boolean, stack: number): void {
  const k = kx.v.k;
  const b = line(kx, tid);
  Atomics.store(k, b + T_PID, pid);
  Atomics.store(k, b + T_CORE, -1);
  Atomics.store(k, b + T_PKRU, pkru);
  Atomics.store(k, b + T_CPL, cpl);
  Atomics.store(k, b + T_AC, ac ? 1 : 0);
  Atomics.store(k, b + T_CALLER, 0);
  Atomics.store(k, b + T_STACK, vaHi(stack));
  Atomics.store(k, b + T_STACK + 1, vaLo(stack));
}

/** Thread tid's state, process, core and saved registers (state THREAD_FREE for an unused tid). */
export function threadOf(kx: Kernel, tid: number): ThreadInfo {
  const k = kx.v.k;
  if (!Number.isInteger(tid) || tid < 0 || tid >= kx.v.klayout.maxThreads) return { state: THREAD_FREE, pid: -1, core: -1, pkru: 0, cpl: 0, ac: false, stack: -1 };
  const b = line(kx, tid);
  return {
    state: Atomics.load(k, b + T_STATE), pid: Atomics.load(k, b + T_PID), core: Atomics.load(k, b + T_CORE), pkru: Atomics.load(k, b + T_PKRU),
    cpl: Atomics.load(k, b + T_CPL), ac: Atomics.load(k, b + T_AC) !== 0, stack: vaJoin(Atomics.load(k, b + T_STACK), Atomics.load(k, b + T_STACK + 1)),
  };
}

/** The threads of process pid that are not free (runnable, running or exited), in tid order. */
export function threadsOf(kx: Kernel, pid: number): number[] {
  const out: number[] = [];
  for (let tid = pid * THREADS_PER_PROCESS; tid < (pid + 1) * THREADS_PER_PROCESS && tid < kx.v.klayout.maxThreads; tid++) {
    if (Atomics.load(kx.v.k, line(kx, tid) + T_STATE) !== THREAD_FREE) out.push(tid);
  }
  return out;
}

/**
 * A new thread of live process pid (runnable, user mode, PKRU `pkru`, 0 unless given): its stack is one demand-zero
 * page of the process's space, at the top of the user half or of the process's RPAL slot, one
 * STACK_SPAN below the next thread's (a page already mapped there is taken as it is). Returns its tid, or -1 - EINVAL (no such process, or
 * THREADS_PER_PROCESS threads already) or -1 - OUT_OF_MEMORY (no room to map the stack).
 */
export function spawnThread(kx: Kernel, pid: number, cpu?: Cpu, pkru = 0): number {
  const p = processOf(kx, pid);
  if (!alive(p.state)) return -1 - kx.err({ code: EINVAL }).code;
  const k = kx.v.k;
  for (let i = 0; i < THREADS_PER_PROCESS; i++) {
    const tid = pid * THREADS_PER_PROCESS + i;
    const b = line(kx, tid);
    if (Atomics.compareExchange(k, b + T_STATE, THREAD_FREE, THREAD_RUNNABLE) !== THREAD_FREE) continue;
    const slot = slotOf(kx, p.space);
    const top = slot >= 0 ? (slot + 1) * SLOT_BYTES : USER_TOP;
    const stack = top - (i + 1) * STACK_SPAN;
    const c = cpu?.id ?? kx.v.replicaOf.indexOf(0);
    // A page the space already maps there is taken as the stack: a fork's copy of the parent's
    // thread stacks (Linux's child has that memory too, and no thread on it).
    const mapped = mapZero(kx, c, p.space, vaHi(stack), vaLo(stack), R_USER | R_WRITE, cpu).code;
    if (mapped !== OK && mapped !== ALREADY_MAPPED) {
      Atomics.store(k, b + T_STATE, THREAD_FREE);
      return -1 - OUT_OF_MEMORY;
    }
    fill(kx, tid, pid, pkru | 0, 3, false, stack);
    return tid;
  }
  return -1 - kx.err({ code: EINVAL }).code;
}

/**
 * Runs thread tid on cpu: the thread it ran is saved (PKRU, CPL, AC) and becomes runnable; tid's
 * registers are loaded; CR3 is loaded only when tid's process runs another address space (its
 * PCID kept). EINVAL when tid is not runnable (running on another core, exited, free) or its
 * process is not alive.
 */
export function switchThread(kx: Kernel, cpu: Cpu, tid: number): number {
  const k = kx.v.k;
  const cur = kx.runs[cpu.id];
  if (cur === tid) return OK;
  const t = threadOf(kx, tid);
  const p = processOf(kx, t.pid);
  if (t.state !== THREAD_RUNNABLE || !alive(p.state)) return kx.err({ code: EINVAL }).code;
  if (Atomics.compareExchange(k, line(kx, tid) + T_STATE, THREAD_RUNNABLE, THREAD_RUNNING) !== THREAD_RUNNABLE) return kx.err({ code: EINVAL }).code;
  if (cur >= 0) save(kx, cpu, cur);
  if (kx.current[cpu.id] !== p.space) switchTo(kx, cpu, p.space);
  // (Injected pkru-not-switched: the previous thread's PKRU stays, and its keys with it.)
  if (!kx.pkruNotSwitched) cpu.wrpkru(t.pkru);
  cpu.setMode(t.cpl, t.ac);
  Atomics.store(k, line(kx, tid) + T_CORE, cpu.id);
  kx.runs[cpu.id] = tid;
  return OK;
}

/** The thread cpu runs stops running it (saved, runnable again); the core keeps its address space. Nothing when it runs none. */
export function parkThread(kx: Kernel, cpu: Cpu): void {
  const tid = kx.runs[cpu.id];
  if (tid < 0) return;
  save(kx, cpu, tid);
  kx.runs[cpu.id] = -1;
}

/**
 * A scheduler's pick: runs on cpu a runnable thread of a live process — the pick-th of them
 * (modulo their number), or the next runnable one after it. OK, or EINVAL when none is runnable
 * (every thread runs on some core or is blocked in a call).
 */
export function switchAny(kx: Kernel, cpu: Cpu, pick: number): number {
  const all: number[] = [];
  for (let pid = 0; pid < kx.maxSpaces; pid++) {
    if (alive(processOf(kx, pid).state)) for (const tid of threadsOf(kx, pid)) all.push(tid);
  }
  const cur = kx.runs[cpu.id];
  for (let i = 0; i < all.length; i++) {
    const tid = all[((pick >>> 0) + i) % all.length];
    if (tid === cur) return OK;
    if (Atomics.load(kx.v.k, line(kx, tid) + T_STATE) === THREAD_RUNNABLE && switchThread(kx, cpu, tid) === OK) return OK;
  }
  return kx.err({ code: EINVAL }).code;
}

/** Saves cpu's registers into thread tid, which stops running (runnable again, or `next`); nothing if tid is no longer this core's (its process was reaped). */
function save(kx: Kernel, cpu: Cpu, tid: number, next = THREAD_RUNNABLE): void {
  const k = kx.v.k;
  const b = line(kx, tid);
  if (Atomics.load(k, b + T_CORE) !== cpu.id || Atomics.load(k, b + T_STATE) !== THREAD_RUNNING) return;
  Atomics.store(k, b + T_PKRU, cpu.regs.pkru);
  Atomics.store(k, b + T_CPL, cpu.regs.cpl);
  Atomics.store(k, b + T_AC, cpu.regs.ac ? 1 : 0);
  Atomics.store(k, b + T_CORE, -1);
  // Straight to `next`: a caller of an RPAL call goes from running to blocked with no runnable
  // moment in between, in which another core could take it.
  Atomics.compareExchange(k, b + T_STATE, THREAD_RUNNING, next);
}

/**
 * The thread cpu runs exits: its stack page is unmapped (shot down) and its frame released, its
 * tid freed; the core runs no thread until the next switchThread (it keeps its address space).
 * EINVAL when the core runs none.
 */
export function exitThread(kx: Kernel, cpu: Cpu): number {
  const tid = kx.runs[cpu.id];
  if (tid < 0) return kx.err({ code: EINVAL }).code;
  const t = threadOf(kx, tid);
  const s = processOf(kx, t.pid).space;
  Atomics.store(kx.v.k, line(kx, tid) + T_STATE, THREAD_EXITED);
  kx.runs[cpu.id] = -1;
  const r = unmap(kx, cpu, s, vaHi(t.stack), vaLo(t.stack));
  if (r.code === OK && r.pfn !== zeroPage(kx) && r.pfn !== NO_FRAME) for (let p = 0; p < r.pages; p++) release(kx, r.pfn + p, s);
  Atomics.store(kx.v.k, line(kx, tid) + T_STATE, THREAD_FREE);
  return OK;
}

// ---- RPAL calls (behaviour 30) -----------------------------------------------------------------

/**
 * An RPAL call from the thread cpu runs (of process A) into thread `callee` of process B, whose
 * slot is shared into A: a user-context switch only — the caller's registers saved (it waits,
 * blocked), the callee's loaded (its PKRU: B's keys) — with no CR3 load: the callee runs in A's
 * page tables, where B's slot is. The first kernel entry in the callee (a page fault: fault.ts)
 * makes B current, the one lazy kernel switch. EINVAL: the core runs no thread, the callee is not
 * runnable or its process has exited (the caller gets the error back), or B's slot is not shared
 * into A.
 */
export function rpalCall(kx: Kernel, cpu: Cpu, callee: number): number {
  const k = kx.v.k;
  const caller = kx.runs[cpu.id];
  const a = kx.current[cpu.id];
  if (caller < 0 || a < 0 || a >= RPAL_SPACES || !Number.isInteger(callee) || callee < 0 || callee >= kx.v.klayout.maxThreads) return kx.err({ code: EINVAL }).code;
  // Words, not threadOf/processOf objects: this is the path whose cost `bench share` measures.
  const tb = line(kx, callee);
  const pb = kx.v.klayout.procBase + Atomics.load(k, tb + T_PID) * K_LINE;
  const pstate = Atomics.load(k, pb + P_STATE);
  const b = Atomics.load(k, pb + P_SPACE);
  if (Atomics.load(k, tb + T_STATE) !== THREAD_RUNNABLE || !alive(pstate)) return kx.err({ code: EINVAL }).code;
  if (b < 0 || b >= RPAL_SPACES || ((Atomics.load(k, kx.v.klayout.spaceBase(a) + S_RPAL_SHARED) >>> b) & 1) === 0) return kx.err({ code: EINVAL }).code;
  if (Atomics.compareExchange(k, tb + T_STATE, THREAD_RUNNABLE, THREAD_RUNNING) !== THREAD_RUNNABLE) return kx.err({ code: EINVAL }).code;
  save(kx, cpu, caller, THREAD_BLOCKED);
  cpu.debug.breakpoint(BP_RPAL_CALL_SAVED);
  Atomics.store(k, tb + T_CALLER, caller + 1);
  cpu.wrpkru(Atomics.load(k, tb + T_PKRU));
  cpu.setMode(Atomics.load(k, tb + T_CPL), Atomics.load(k, tb + T_AC) !== 0);
  Atomics.store(k, tb + T_CORE, cpu.id);
  kx.runs[cpu.id] = callee;
  kx.lazy[cpu.id] = b;
  return OK;
}

/** The caller of thread tid and its state, when tid runs an RPAL call (for messages). */
export function callerOf(kx: Kernel, tid: number): { tid: number; info: ThreadInfo | null } {
  const caller = tid >= 0 && tid < kx.v.klayout.maxThreads ? Atomics.load(kx.v.k, line(kx, tid) + T_CALLER) - 1 : -1;
  return { tid: caller, info: caller >= 0 ? threadOf(kx, caller) : null };
}

/**
 * The callee cpu runs returns to its caller: its registers saved (runnable again), the caller's
 * loaded, and the caller's address space current again if the callee's kernel entry switched
 * away. EINVAL when the thread cpu runs was not called.
 */
export function rpalReturn(kx: Kernel, cpu: Cpu): number {
  const k = kx.v.k;
  const callee = kx.runs[cpu.id];
  const caller = callee >= 0 ? Atomics.load(k, line(kx, callee) + T_CALLER) - 1 : -1;
  if (caller < 0 || Atomics.load(k, line(kx, caller) + T_STATE) !== THREAD_BLOCKED) return kx.err({ code: EINVAL }).code;
  // The callee's caller word is cleared before the callee becomes runnable: another core may call
  // it at once, and its caller word is then that call's.
  Atomics.store(k, line(kx, callee) + T_CALLER, 0);
  save(kx, cpu, callee);
  cpu.debug.breakpoint(BP_RPAL_RETURN_SAVED);
  resumeCaller(kx, cpu, caller);
  return OK;
}

/** The end of a call (return or recovery): the caller runs again on cpu, in its own space, with its own registers. */
function resumeCaller(kx: Kernel, cpu: Cpu, caller: number): void {
  const k = kx.v.k;
  kx.lazy[cpu.id] = -1;
  const t = line(kx, caller);
  const s = Atomics.load(k, kx.v.klayout.procBase + Atomics.load(k, t + T_PID) * K_LINE + P_SPACE);
  if (kx.current[cpu.id] !== s) switchTo(kx, cpu, s);
  Atomics.store(k, t + T_STATE, THREAD_RUNNING);
  Atomics.store(k, t + T_CORE, cpu.id);
  cpu.wrpkru(Atomics.load(k, t + T_PKRU));
  cpu.setMode(Atomics.load(k, t + T_CPL), Atomics.load(k, t + T_AC) !== 0);
  kx.runs[cpu.id] = caller;
}

/**
 * Behaviour 30's recovery point: when the thread cpu runs is an RPAL callee whose process has
 * exited (a fault was delivered to it: its slot left the caller's space at the exit), the call
 * ends — the callee thread is exited, the caller runs again with its own registers (PKRU: its
 * keys) in its own space — and the caller gets the error (EINVAL) instead of faulting forever.
 * Returns OK when there was nothing to recover (no call, or the callee's process lives).
 */
export function recoverCall(kx: Kernel, cpu: Cpu): number {
  const k = kx.v.k;
  const callee = kx.runs[cpu.id];
  const caller = callee >= 0 ? Atomics.load(k, line(kx, callee) + T_CALLER) - 1 : -1;
  if (caller < 0) return OK;
  const p = processOf(kx, threadOf(kx, callee).pid);
  if (alive(p.state)) return OK;
  Atomics.store(k, line(kx, callee) + T_CALLER, 0);
  Atomics.store(k, line(kx, callee) + T_CORE, -1);
  Atomics.store(k, line(kx, callee) + T_STATE, THREAD_EXITED);
  resumeCaller(kx, cpu, caller);
  kx.stats.rpalRecoveries++;
  return EINVAL;
}

/**
 * fork's thread: the child process childPid gets a copy of thread parentTid (the one that
 * forked) — its registers and its stack, which the fork copied with the rest of the space — at
 * the same index, as Linux's fork copies only the calling thread. Returns the child's tid, or
 * -1 - EINVAL (no such thread, or that index taken in the child).
 */
export function forkThread(kx: Kernel, parentTid: number, childPid: number): number {
  const t = threadOf(kx, parentTid);
  if (t.state === THREAD_FREE || t.state === THREAD_EXITED || !Number.isInteger(childPid) || childPid < 0) return -1 - kx.err({ code: EINVAL }).code;
  const tid = childPid * THREADS_PER_PROCESS + (parentTid % THREADS_PER_PROCESS);
  if (tid >= kx.v.klayout.maxThreads) return -1 - kx.err({ code: EINVAL }).code;
  const k = kx.v.k;
  const b = line(kx, tid);
  if (Atomics.compareExchange(k, b + T_STATE, THREAD_FREE, THREAD_RUNNABLE) !== THREAD_FREE) return -1 - kx.err({ code: EINVAL }).code;
  fill(kx, tid, childPid, t.pkru, t.cpl, t.ac, t.stack);
  return tid;
}

/** The threads of process pid go (it was killed: its stacks went with its space); a core running one runs none. */
export function dropThreads(kx: Kernel, pid: number): void {
  for (const tid of threadsOf(kx, pid)) Atomics.store(kx.v.k, line(kx, tid) + T_STATE, THREAD_FREE);
  for (let c = 0; c < kx.runs.length; c++) if (kx.runs[c] >= 0 && Math.floor(kx.runs[c] / THREADS_PER_PROCESS) === pid) kx.runs[c] = -1;
}
