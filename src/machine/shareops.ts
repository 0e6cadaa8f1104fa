// The stress's address-space sharing (--share rpal | mshare; issue 12): the kernel operations of a
// vm-mix program whose addresses are offsets — in the slot of the running thread's process
// (RPAL), or in a region the process attached (mshare) — and the sharing operations themselves:
// thread switches, share/unshare (attach/detach), pkey_mprotect, RPAL calls, grants, and loads in
// another process's slot or a region. Beside the stress's other oracles, this one knows which
// process's slot an address is in and what each thread was granted, so it sees:
//
//   key-isolation  an access that succeeded in the slot of a process the thread was not granted
//                  (its PKRU should have denied the owner's keys)
//   foreign-write  a value in B's slot that a thread of another process wrote there
//   cross-fault    a write a thread of A was granted into B's mailbox page faulted though the
//                  slot stayed shared: the fault was not handled in B's space
//
// RPAL's processes are the spaces 0..P-1, process s owning slot s + 1 and keys 2s + 1 and 2s + 2
// (the stress's set-up, cli/vmstress.ts, makes them so: rpalKeys).

import type { Cpu } from '../hw/cpu.js';
import { ACC_READ, ACC_WRITE, faultError, faultVector } from '../hw/fault.js';
import { getVa, putVa, vaHi, vaLo } from '../hw/vaddr.js';
import type { Kernel } from '../kernel/context.js';
import { S_RPAL_SHARED, S_RPAL_LINKSEQ, THREAD_RUNNABLE } from '../kernel/layout.js';
import { EINVAL, RESULT_NAMES } from '../kernel/ops.js';
import * as faults from '../kernel/fault.js';
import * as mshare from '../kernel/mshare.js';
import * as procs from '../kernel/proc.js';
import * as rpal from '../kernel/rpal.js';
import * as threads from '../kernel/thread.js';
import type { CoreResult } from './executor.js';
import { ownCheck, ownWrite, kernelOp, tagged } from './kernelops.js';
import {
  OP_K_ADJUST, OP_K_CALL, OP_K_GRANT, OP_K_MAP, OP_K_OWN, OP_K_PKEY, OP_K_RESOLVE, OP_K_SHARE, OP_K_SWITCH, OP_K_UNMAP, OP_K_UNSHARE,
  OP_K_XACCESS, OP_K_THREAD, OP_K_RCALL, REGION_SPACE,
} from './program.js';
import type { RunState } from './runstate.js';

/** Each RPAL process's mailbox, at MAILBOX_VA in its slot: demand-zero pages mapped at the start and never unmapped, which other processes write under a grant. */
export const MAILBOX_VA = 0x8_0000_0000;
export const MAILBOX_PAGES = 64;

/** The two keys of RPAL process (space) s: its slot's key first. */
export function rpalKeys(s: number): [number, number] {
  return [2 * s + 1, 2 * s + 2];
}

/** PKRU of a thread of RPAL space s: every key denied (access and write) but 0 and s's two. */
export function rpalPkru(s: number): number {
  let v = 0;
  const [a, b] = rpalKeys(s);
  for (let key = 1; key < 16; key++) if (key !== a && key !== b) v |= 3 << (2 * key);
  return v;
}

/** What the sharing oracle found on one core. */
export interface ShareFind {
  kind: 'key-isolation' | 'foreign-write' | 'cross-fault';
  detail: string;
}

/** One core's sharing oracle: its finds (the first few of each kind) and how many of each. */
export class ShareRun {
  readonly finds: ShareFind[] = [];
  readonly counts: Record<string, number> = {};
  /** Offsets of pages callees read lately: half of a callee's reads go back to one (temporal locality). */
  private readonly recent = new Float64Array(8);
  private recents = 0;
  /** `regionBase` and `pages`: the program's region, as offsets in a slot (VmMixProgram). */
  constructor(readonly mode: 'rpal' | 'mshare', private readonly regionBase = 0, private readonly pages = 1) {}

  /** The offset of a page for a callee's read, from a pick word: a recent one or a fresh one of the region. */
  calleePage(pick: number): number {
    if (this.recents > 0 && (pick & 1) === 0) return this.recent[(pick >>> 1) % Math.min(this.recents, this.recent.length)];
    const off = this.regionBase + ((pick >>> 1) % this.pages) * 4096 + (pick & 0xff8);
    this.recent[this.recents++ % this.recent.length] = off;
    return off;
  }

  note(kind: ShareFind['kind'], detail: string): void {
    const n = (this.counts[kind] = (this.counts[kind] ?? 0) + 1);
    if (n <= 4) this.finds.push({ kind, detail });
  }
}

/** The space of the process whose thread cpu runs (during an RPAL call: the callee's), or -1. */
function meOf(kx: Kernel, cpu: Cpu): number {
  const tid = kx.runs[cpu.id];
  if (tid < 0) return -1;
  return procs.processOf(kx, threads.threadOf(kx, tid).pid).space;
}

/** The live mshare regions' hosts, in order. */
function hostsOf(kx: Kernel): number[] {
  const out: number[] = [];
  for (let h = 0; h < rpal.RPAL_SPACES && h < kx.maxSpaces; h++) if (mshare.isHost(kx, h)) out.push(h);
  return out;
}

function sharedInto(kx: Kernel, a: number): number[] {
  const m = Atomics.load(kx.v.k, kx.v.klayout.spaceBase(a) + S_RPAL_SHARED);
  const out: number[] = [];
  for (let b = 0; b < rpal.RPAL_SPACES; b++) if (((m >>> b) & 1) !== 0) out.push(b);
  return out;
}

function name(code: number): string {
  return RESULT_NAMES[code] ?? String(code);
}

/** Where space s's slot (an RPAL process's, or a region's) begins. */
function slotBase(kx: Kernel, s: number): number {
  return rpal.slotOf(kx, s) * rpal.SLOT_BYTES;
}

/**
 * One kernel operation of a --share program. Returns an error or ''. Operations of other kinds
 * (the kernel half's) go to the callers' own paths: this returns undefined for them.
 */
export function shareOp(cpu: Cpu, kx: Kernel, buf: Int32Array, w: number, index: number, res: CoreResult, st: RunState, sr: ShareRun): string | undefined {
  const op = buf[w];
  const rpalMode = sr.mode === 'rpal';
  switch (op) {
    case OP_K_SWITCH: {
      // A thread of any live process: no CR3 load within a process, the PCID kept across.
      st.tally('switch', name(threads.switchAny(kx, cpu, buf[w + 2])));
      return '';
    }
    case OP_K_MAP:
    case OP_K_UNMAP:
    case OP_K_ADJUST:
    case OP_K_RESOLVE: {
      const me = meOf(kx, cpu);
      if (me < 0) return '';
      const region = buf[w + 1] === REGION_SPACE;
      if (!region && !rpalMode) return kernelOp(cpu, kx, buf, w, index, res, st);
      const target = region ? regionFor(kx, me, getVa(buf, w + 2)) : me;
      if (target < 0) {
        st.tally('region', 'NotAttached');
        return '';
      }
      buf[w + 1] = target;
      putVa(buf, w + 2, slotBase(kx, target) + getVa(buf, w + 2));
      return kernelOp(cpu, kx, buf, w, index, res, st);
    }
    case OP_K_OWN: {
      const me = meOf(kx, cpu);
      if (me < 0 || me !== kx.current[cpu.id]) return '';
      const write = buf[w + 3] === 1;
      const region = buf[w + 4] === 1;
      if (!write) {
        // A check of a page written as the process's own (its slot) or as a region's.
        const attached = region ? sharedInto(kx, me) : [me];
        const space = attached.length > 0 ? attached[(buf[w + 1] >>> 0) % attached.length] : -1;
        if (space >= 0) ownChecked(cpu, kx, st, res, sr, space, buf[w + 1], buf[w + 2], index, me);
        return '';
      }
      const space = region ? regionFor(kx, me, getVa(buf, w + 1)) : me;
      if (space < 0) return '';
      const va = (region || rpalMode ? slotBase(kx, space) : 0) + getVa(buf, w + 1);
      if (ownWrite(cpu, kx, st, space, va) === 0) afterAccess(cpu, kx, st, sr, index, va, me, -1);
      return '';
    }
    case OP_K_XACCESS: {
      const me = meOf(kx, cpu);
      if (me < 0) return '';
      const list = rpalMode ? procs.liveSpaces(kx) : hostsOf(kx);
      if (list.length === 0) return '';
      const t = list[(buf[w + 1] >>> 0) % list.length];
      const va = slotBase(kx, t) + getVa(buf, w + 2);
      if (rpalMode && t !== me && (buf[w + 4] & 3) === 0) {
        // A stray write into another process's slot: its keys are denied, so it must fault. One
        // that lands is a key-isolation find now, and a foreign-write find when the page is read.
        const r = faults.access(kx, cpu, ACC_WRITE, vaHi(va), vaLo(va), 0, tagged(me, cpu.id, st));
        st.tally('xwrite', r === 0 ? 'Ok' : 'Fault');
        if (r === 0) afterAccess(cpu, kx, st, sr, index, va, me, -1);
        return '';
      }
      const r = faults.access(kx, cpu, ACC_READ, vaHi(va), vaLo(va), 0, 0);
      st.tally('xaccess', r === 0 ? (t === me ? 'Own' : 'Ok') : 'Fault');
      if (r !== 0) return '';
      st.checksum = (st.checksum + cpu.mmu.valLo) | 0;
      afterAccess(cpu, kx, st, sr, index, va, me, -1);
      // Only the slot's (or region's) own writes put values there: a value naming another space
      // was written by a thread that should have been denied.
      const v = cpu.mmu.valLo;
      if (v !== 0 && ((v >>> 24) & 0xff) !== t) {
        sr.note('foreign-write', `core ${cpu.id} op ${index}: 0x${va.toString(16)} in space ${t}'s ${rpalMode ? 'slot' : 'region'} holds 0x${(v >>> 0).toString(16)}, written by space ${(v >>> 24) & 0xff}`);
      }
      return '';
    }
    case OP_K_SHARE:
    case OP_K_UNSHARE: {
      const me = meOf(kx, cpu);
      if (me < 0 || me !== kx.current[cpu.id]) return '';
      const kind = op === OP_K_SHARE ? 'share' : 'unshare';
      let list: number[];
      if (op === OP_K_UNSHARE) list = sharedInto(kx, me);
      else if (rpalMode) list = procs.liveSpaces(kx).filter((s) => s !== me);
      else list = hostsOf(kx);
      if (list.length === 0) {
        st.tally(kind, 'None');
        return '';
      }
      const b = list[(buf[w + 2] >>> 0) % list.length];
      const code = rpalMode
        ? op === OP_K_SHARE ? rpal.share(kx, me, b, cpu) : rpal.unshare(kx, me, b, cpu)
        : op === OP_K_SHARE ? mshare.mshareAttach(kx, me, b, slotBase(kx, b), cpu) : mshare.mshareDetach(kx, me, b, cpu, true);
      st.tally(kind, name(code));
      return '';
    }
    case OP_K_PKEY: {
      const me = meOf(kx, cpu);
      if (!rpalMode || me < 0) return '';
      const va = slotBase(kx, me) + getVa(buf, w + 2);
      st.tally('pkey', name(rpal.pkeyMprotect(kx, cpu, me, vaHi(va), vaLo(va), rpalKeys(me)[buf[w + 4] & 1])));
      return '';
    }
    case OP_K_CALL:
      return rpalMode ? call(cpu, kx, buf, w, index, res, st, sr) : '';
    case OP_K_GRANT:
      return rpalMode ? grant(cpu, kx, buf, w, index, st, sr) : '';
  }
  return undefined;
}

/** The host of the region page `page` (an offset) falls to when space a has it attached; -1 when not. */
function regionFor(kx: Kernel, a: number, off: number): number {
  const hosts = hostsOf(kx);
  if (hosts.length === 0) return -1;
  const h = hosts[Math.floor(off / 4096) % hosts.length];
  return (Atomics.load(kx.v.k, kx.v.klayout.spaceBase(a) + S_RPAL_SHARED) & (1 << h)) !== 0 ? h : -1;
}

/**
 * After an access at va that succeeded: the stale-tlb oracle (the frame must be reachable from
 * the space the core runs), and, under RPAL, the key oracle — the slot's owner must be the
 * thread's process, or the one it was granted.
 */
function afterAccess(cpu: Cpu, kx: Kernel, st: RunState, sr: ShareRun, index: number, va: number, me: number, granted: number): void {
  st.checkOwner(index, vaHi(va), vaLo(va), cpu.mmu.lastWord, kx.current[cpu.id]);
  if (sr.mode !== 'rpal') return;
  const slot = Math.floor(va / rpal.SLOT_BYTES);
  const owner = slotOwner(kx, slot);
  if (owner >= 0 && owner !== me && owner !== granted) {
    sr.note('key-isolation', `core ${cpu.id} op ${index}: a thread of space ${me} (PKRU 0x${(cpu.regs.pkru >>> 0).toString(16)}) reached 0x${va.toString(16)} in space ${owner}'s slot, ` +
      `whose keys ${rpalKeys(owner).join(' and ')} it was not granted`);
  }
}

function slotOwner(kx: Kernel, slot: number): number {
  for (let s = 0; s < rpal.RPAL_SPACES && s < kx.maxSpaces; s++) if (kx.isLive(s) && rpal.slotOf(kx, s) === slot) return s;
  return -1;
}

function ownChecked(cpu: Cpu, kx: Kernel, st: RunState, res: CoreResult, sr: ShareRun, space: number, p1: number, p2: number, index: number, me: number): void {
  const at = ownCheck(cpu, kx, st, res, space, p1, p2, index);
  if (at >= 0) afterAccess(cpu, kx, st, sr, index, at, me, -1);
}

/**
 * An RPAL call (behaviour 30): the running thread (of A) calls a runnable thread of a process B
 * whose slot A shares; the callee writes its own slot (through A's page tables until its first
 * kernel entry switches lazily), checks what it wrote there, tries the caller's slot (its PKRU
 * must deny it), and returns.
 */
function call(cpu: Cpu, kx: Kernel, buf: Int32Array, w: number, index: number, res: CoreResult, st: RunState, sr: ShareRun): string {
  const a = meOf(kx, cpu);
  if (a < 0 || a !== kx.current[cpu.id]) return '';
  const callees: number[] = [];
  for (const b of sharedInto(kx, a)) {
    for (const tid of threads.threadsOf(kx, procs.pidOf(kx, b))) if (threads.threadOf(kx, tid).state === THREAD_RUNNABLE) callees.push(tid);
  }
  if (callees.length === 0) {
    st.tally('call', 'NoCallee');
    return '';
  }
  const code = threads.rpalCall(kx, cpu, callees[(buf[w + 1] >>> 0) % callees.length]);
  st.tally('call', name(code));
  if (code !== 0) return code === EINVAL ? '' : `core ${cpu.id}: op ${index}: RPAL call failed with ${name(code)}`;
  const b = meOf(kx, cpu);
  const off = getVa(buf, w + 2);
  const va = slotBase(kx, b) + off;
  if (ownWrite(cpu, kx, st, b, va) === 0) afterAccess(cpu, kx, st, sr, index, va, b, -1);
  if ((buf[w + 4] & 1) !== 0) ownChecked(cpu, kx, st, res, sr, b, buf[w + 4] >>> 1, buf[w + 1], index, b);
  // Reads anywhere in its slot (other cores' pages too, which they unmap): translations of B's
  // pages that A's cores hold, which B's shootdowns must reach.
  for (let j = 0; j < 2; j++) {
    const at = slotBase(kx, b) + sr.calleePage(Math.imul(buf[w + 4] ^ buf[w + 1], j === 0 ? 0x9e3779b1 : 0x85ebca6b) >>> 0);
    if (faults.access(kx, cpu, ACC_READ, vaHi(at), vaLo(at), 0, 0) === 0) {
      st.checksum = (st.checksum + cpu.mmu.valLo) | 0;
      afterAccess(cpu, kx, st, sr, index, at, b, -1);
    }
  }
  // The one lazy kernel switch happened if the callee entered the kernel (a fault) so far.
  if (kx.current[cpu.id] === b) st.tally('call', 'LazySwitch');
  const back = slotBase(kx, a) + off;
  if (faults.access(kx, cpu, ACC_READ, vaHi(back), vaLo(back), 0, 0) === 0) afterAccess(cpu, kx, st, sr, index, back, b, -1);
  const callee = kx.runs[cpu.id];
  const r = threads.rpalReturn(kx, cpu);
  if (r === 0) return '';
  const ct = threads.threadOf(kx, callee);
  return `core ${cpu.id}: op ${index}: the RPAL return failed with ${name(r)} (the core runs thread ${callee}: ${JSON.stringify(ct)}; ` +
    `its caller ${JSON.stringify(threads.callerOf(kx, callee))})`;
}

/**
 * A grant: the running thread of A takes B's keys into its PKRU (as a call gate would), writes a
 * page of B's mailbox — demand-zero pages B mapped at the start and never unmaps, so a first
 * write faults, and that fault must be handled in B's space (behaviour 28) — and gives the keys
 * back. A write that faulted while B's slot stayed shared in A throughout is a cross-fault find.
 */
function grant(cpu: Cpu, kx: Kernel, buf: Int32Array, w: number, index: number, st: RunState, sr: ShareRun): string {
  const a = meOf(kx, cpu);
  if (a < 0 || a !== kx.current[cpu.id]) return '';
  const list = sharedInto(kx, a);
  if (list.length === 0) {
    st.tally('grant', 'NotShared');
    return '';
  }
  const b = list[(buf[w + 1] >>> 0) % list.length];
  const k = kx.v.k;
  // The links' sequence count (rpal.ts link, slots.ts unlink), read before the link itself: even and unchanged
  // after a failed write, with the link there both times, means the link stayed throughout.
  const seq = Atomics.load(k, kx.v.klayout.spaceBase(a) + S_RPAL_LINKSEQ);
  const linked = (seq & 1) === 0 && (Atomics.load(k, kx.v.klayout.spaceBase(a) + S_RPAL_SHARED) & (1 << b)) !== 0;
  const old = cpu.regs.pkru;
  const [k1, k2] = rpalKeys(b);
  cpu.wrpkru(old & ~(3 << (2 * k1)) & ~(3 << (2 * k2)));
  const va = slotBase(kx, b) + MAILBOX_VA + (buf[w + 2] % MAILBOX_PAGES) * 4096 + (buf[w + 3] & 0xff8);
  const r = faults.access(kx, cpu, ACC_WRITE, vaHi(va), vaLo(va), 0, tagged(a, cpu.id, st));
  cpu.wrpkru(old);
  st.tally('grant', r === 0 ? 'Ok' : 'Fault');
  if (r === 0) {
    afterAccess(cpu, kx, st, sr, index, va, a, b);
    return '';
  }
  const still = (Atomics.load(k, kx.v.klayout.spaceBase(a) + S_RPAL_SHARED) & (1 << b)) !== 0;
  if (linked && still && Atomics.load(k, kx.v.klayout.spaceBase(a) + S_RPAL_LINKSEQ) === seq) {
    sr.note('cross-fault', `core ${cpu.id} op ${index}: a thread of space ${a}, granted space ${b}'s keys, could not write 0x${va.toString(16)} in ${b}'s mailbox ` +
      `(mapped, never unmapped; the slot stayed shared): #PF error 0x${faultError(r).toString(16)} (vector ${faultVector(r)}) was not handled in space ${b}'s address space`);
  }
  return '';
}

/** The explicit thread operations (any kernel run): thread switches, RPAL calls and returns, tallied by outcome. */
export function threadOp(cpu: Cpu, kx: Kernel, buf: Int32Array, w: number, st: RunState): string {
  const op = buf[w];
  if (op === OP_K_THREAD) st.tally('thread', name(threads.switchThread(kx, cpu, buf[w + 1])));
  else if (op === OP_K_RCALL) st.tally('rpalCall', name(threads.rpalCall(kx, cpu, buf[w + 1])));
  else st.tally('rpalReturn', name(threads.rpalReturn(kx, cpu)));
  return '';
}

/** After a fault delivered to the program: an RPAL call whose callee's process exited ends at its recovery point (tallied rpal:Recovered). */
export function afterDeliveredFault(cpu: Cpu, kx: Kernel, st: RunState): void {
  if (kx.runs[cpu.id] >= 0 && threads.recoverCall(kx, cpu) !== 0) st.tally('rpal', 'Recovered');
}
