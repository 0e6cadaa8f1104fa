// The process table (shared memory, one line per pid): a process runs one address space and is
// running, sleeping or terminated (a zombie until the controller reaps it, which destroys its
// space and drops its frames' references). Any thread may read it; spawning, state changes and
// reaping are Atomics on the line.

import { unshare } from './rpal.js';
import type { Kernel } from './context.js';
import { K_LINE, P_PARENT, P_SPACE, P_STATE, PROC_FREE, PROC_RUNNING, PROC_SLEEPING, PROC_TERMINATED, S_RPAL_SHARERS, T_STATE, THREAD_FREE, THREADS_PER_PROCESS } from './layout.js';
import { releaseMapping } from './refs.js';
import { destroySpace } from './space.js';
import { activeCores, leave, switchTo } from './shootdown.js';
import { IPI_EXIT } from './ops.js';
import type { Cpu } from '../hw/cpu.js';
import { IPI_OK, IPI_TARGET_OFFLINE, WAIT_OK, describeWait } from '../hw/apic.js';
import { panic } from '../hw/panic.js';

/** Takes a free pid for a process running `space` (sleeping), with its parent; -1 when the table is full. */
export function spawn(kx: Kernel, space: number, parent: number): number {
  const { k, klayout } = kx.v;
  for (let pid = 0; pid < kx.maxSpaces; pid++) {
    const b = klayout.procBase + pid * K_LINE;
    if (Atomics.compareExchange(k, b + P_STATE, PROC_FREE, PROC_SLEEPING) !== PROC_FREE) continue;
    Atomics.store(k, b + P_SPACE, space);
    Atomics.store(k, b + P_PARENT, parent);
    return pid;
  }
  return -1;
}

/** A process's state, space and parent (state PROC_FREE for an unused pid). */
export function processOf(kx: Kernel, pid: number): { state: number; space: number; parent: number } {
  const { k, klayout } = kx.v;
  if (pid < 0 || pid >= kx.maxSpaces) return { state: PROC_FREE, space: -1, parent: -1 };
  const b = klayout.procBase + pid * K_LINE;
  return { state: Atomics.load(k, b + P_STATE), space: Atomics.load(k, b + P_SPACE), parent: Atomics.load(k, b + P_PARENT) };
}

/** Whether a process in this state is alive (running or sleeping: neither free nor terminated). */
export function alive(state: number): boolean {
  return state === PROC_RUNNING || state === PROC_SLEEPING;
}

/** Sets a process's state (running, sleeping, terminated, or free to reap it). */
export function setProcessState(kx: Kernel, pid: number, state: number): void {
  Atomics.store(kx.v.k, kx.v.klayout.procBase + pid * K_LINE + P_STATE, state);
}

/** Spaces of the processes that are alive (running or sleeping). */
export function liveSpaces(kx: Kernel): number[] {
  const out: number[] = [];
  for (let pid = 0; pid < kx.maxSpaces; pid++) {
    const p = processOf(kx, pid);
    if (alive(p.state)) out.push(p.space);
  }
  return out;
}

/** The pid whose process runs space s (alive or zombie), or -1. */
export function pidOf(kx: Kernel, s: number): number {
  for (let pid = 0; pid < kx.maxSpaces; pid++) {
    const p = processOf(kx, pid);
    if (p.state !== PROC_FREE && p.space === s) return pid;
  }
  return -1;
}

/**
 * Process pid exits on cpu, which runs its space s: it becomes a zombie, every other core running
 * s leaves it (IPI_EXIT: the receiver loads a root with no user space, then acks), and cpu
 * switches to space `next`, or leaves too (next < 0). When it returns no core can translate
 * through s, and reapZombies may free its frames. Panics (naming the core) past the wait bound.
 */
export function exitProcess(kx: Kernel, cpu: Cpu, pid: number, next: number): void {
  const s = processOf(kx, pid).space;
  setProcessState(kx, pid, PROC_TERMINATED);
  // RPAL: the process's slot leaves every space it was shared into (their cores shot down), so
  // that a caller's thread touching it faults and returns to its recovery point (behaviour 30).
  const sharers = s < 32 ? Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_RPAL_SHARERS) : 0;
  for (let a = 0; a < 32; a++) if (((sharers >>> a) & 1) !== 0 && kx.isLive(a)) unshare(kx, a, s, cpu);
  let sent = false;
  for (const c of activeCores(kx, s)) {
    if (c === cpu.id) continue;
    const r = cpu.apic.sendIpi(c, IPI_EXIT, s);
    if (r === IPI_TARGET_OFFLINE) continue;
    if (r !== IPI_OK) panic(`exit: core ${cpu.id} could not tell core ${c} that space ${s}'s process exited: ${describeWait(cpu, r)}`);
    sent = true;
  }
  if (sent) {
    const r = cpu.apic.waitAcks();
    if (r !== WAIT_OK) panic(`exit: core ${cpu.id} (space ${s}): ${describeWait(cpu, r)}`);
  }
  if (kx.current[cpu.id] === s) {
    if (next >= 0) switchTo(kx, cpu, next);
    else leave(kx, cpu);
  }
}

/** Whether a core runs one of the spaces space s's RPAL slot is shared into. */
function sharersRunning(kx: Kernel, s: number): boolean {
  const m = Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_RPAL_SHARERS);
  for (let a = 0; a < 32; a++) if (((m >>> a) & 1) !== 0 && activeCores(kx, a).length > 0) return true;
  return false;
}

/**
 * Reaps every terminated process (a zombie) whose space no core runs any more: destroys the
 * space, releasing its frames, and frees its pid. A zombie that a core still runs (its exit has
 * not reached that core yet), or whose RPAL slot a running space shares, waits for a later call. Controller only. Returns how many.
 */
export function reapZombies(kx: Kernel): number {
  let n = 0;
  for (let pid = 0; pid < kx.maxSpaces; pid++) {
    const p = processOf(kx, pid);
    if (p.state !== PROC_TERMINATED) continue;
    if (kx.isLive(p.space) && activeCores(kx, p.space).length > 0) continue;
    // RPAL: nor while a core runs a space its slot is shared into (the controller cannot shoot it down).
    if (kx.isLive(p.space) && sharersRunning(kx, p.space)) continue;
    if (kx.isLive(p.space)) destroySpace(kx, p.space, (pfn, pages, rights) => releaseMapping(kx, p.space, pfn, pages, rights));
    // Its threads go with it (their stacks went with the space).
    for (let t = 0; t < THREADS_PER_PROCESS; t++) Atomics.store(kx.v.k, kx.v.klayout.threadBase + (pid * THREADS_PER_PROCESS + t) * K_LINE + T_STATE, THREAD_FREE);
    setProcessState(kx, pid, PROC_FREE);
    n++;
  }
  return n;
}
