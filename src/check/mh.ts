// MH's state oracle (kernel personality 'mh'): a shadow of the seed's state machine, written
// apart from the kernel's rules (kernel/mhstate.ts) so that it can disagree with them.
//
//   mh-transition   a change of a core's own page (map, unmap, change-protection, export,
//                   unexport, move, a write that copy-on-write or MRG handles) returned another
//                   outcome than the table says for the state it met, or left the page in
//                   another state. A change that a fork of the space may have overlapped is only
//                   held to the outcomes of the state before or after the fork.
//   mh-state        after a round, a mapping of a live space breaks the machine's invariants:
//                   R_WIRED without a wiring count or the reverse; a device export the mapping's
//                   wiring count does not cover (an export that did not wire); an I/O mapping
//                   outside the device or without PCD/PWT in its leaf; a private frame that
//                   another mapping also holds (copy-on-write is MH's only sharing).
//   dma-frame-owner the DMA engine wrote or read a frame the exporting space no longer owned.
//
// It also counts the transitions a run took: `nrvm mh states` draws them.

import type { CoreResult } from '../machine/executor.js';
import type { Machine } from '../machine/machine.js';
import {
  E_AFTER, E_ARG, E_BEFORE, E_CODE, E_KIND, E_PAGE, E_SPACE, E_STABLE, EV_ADJUST, EV_EXPORT, EV_MAP, EV_MAP_IO, EV_MOVE_DST, EV_MOVE_SRC, EV_STORE,
  EV_UNEXPORT, EV_UNMAP, EVENT_NAMES, EVENT_WORDS, STORE_FAULT,
} from '../machine/mhops.js';
import {
  ALREADY_MAPPED, EBUSY, EINVAL, EPERM, NOT_MAPPED, OK, OUT_OF_MEMORY, R_COW, R_IO, R_NX, R_USER, R_WIRED, R_WRITE, R_ZERO, RESULT_NAMES,
} from '../kernel/ops.js';
import { PTE_PCD, PTE_PWT } from '../hw/pte.js';
import { walkTo } from '../hw/pagetable.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';
import * as vm from '../kernel/vm.js';
import { SR_ROOT } from '../kernel/layout.js';
import type { KernelViolation } from './kernel.js';

/** The seed's states, as this oracle names them. */
export const STATES = ['Unmapped', 'I/O', 'Private RO', 'Private RW', 'Wired RO', 'Wired RW', 'RO-Shared'] as const;
export type State = (typeof STATES)[number];

/** The state of a mapping with rights word r (-1: none), decoded here, not by the kernel. */
export function shadowState(r: number): State {
  if (r < 0) return 'Unmapped';
  if (r & R_IO) return 'I/O';
  if (r & (R_COW | R_ZERO)) return 'RO-Shared';
  const w = (r & R_WRITE) !== 0;
  if (r & R_WIRED) return w ? 'Wired RW' : 'Wired RO';
  return w ? 'Private RW' : 'Private RO';
}

function wires(r: number): number {
  return r < 0 ? 0 : (r >>> 16) & 0xff;
}

const isWired = (s: State): boolean => s === 'Wired RO' || s === 'Wired RW';
const isPrivate = (s: State): boolean => s === 'Private RO' || s === 'Private RW';

/** What the table says: the outcomes allowed and, for each, the state (and wiring count) that follows. */
interface Expect {
  code: number;
  state: State;
  wires: number;
  /** Extra condition on the rights after (NX as asked), or null. */
  nx?: boolean;
}

const ACCESS = R_WRITE | R_USER | R_NX;

/** The table for one event from the rights `b` before it (arg: the event's argument; src: for a move, the other page's rights). */
function expected(kind: number, b: number, arg: number, samePage: boolean): Expect[] {
  const s = shadowState(b);
  const same: Expect = { code: -99, state: s, wires: wires(b) };
  const refuse = (code: number): Expect[] => [{ ...same, code }];
  switch (kind) {
    case EV_MAP:
      if (s !== 'Unmapped') return refuse(ALREADY_MAPPED);
      return [{ code: OK, state: arg & R_WRITE ? 'Private RW' : 'Private RO', wires: 0 }, { ...same, code: OUT_OF_MEMORY }];
    case EV_MAP_IO:
      // Another core of the process may have mapped the same registers just before: MapFrame
      // accepts an identical mapping (NRK), so that is Ok too.
      if (s === 'I/O') return [{ ...same, code: ALREADY_MAPPED }, { ...same, code: OK }];
      if (s !== 'Unmapped') return refuse(ALREADY_MAPPED);
      // Another core of the process may map it at the same moment: then this one finds it mapped.
      return [{ code: OK, state: 'I/O', wires: 0 }, { code: ALREADY_MAPPED, state: 'I/O', wires: 0 }, { ...same, code: OUT_OF_MEMORY }];
    case EV_UNMAP:
      if (s === 'Unmapped') return refuse(NOT_MAPPED);
      if (s === 'I/O' || isWired(s)) return refuse(EBUSY);
      return [{ code: OK, state: 'Unmapped', wires: 0 }];
    case EV_ADJUST:
      if (s === 'Unmapped') return refuse(EPERM);
      if (s === 'I/O' || isWired(s)) return refuse(EBUSY);
      if (s === 'RO-Shared') return (arg & R_WRITE) !== 0 || (arg & ACCESS) !== (b & ACCESS) ? refuse(EINVAL) : [{ ...same, code: OK }];
      return [{ code: OK, state: arg & R_WRITE ? 'Private RW' : 'Private RO', wires: 0, nx: (arg & R_NX) !== 0 }];
    case EV_EXPORT:
      if (s === 'Unmapped') return refuse(EPERM);
      if (s === 'I/O') return refuse(EBUSY);
      if (s === 'RO-Shared' || wires(b) >= 255) return refuse(EINVAL);
      return [{ code: OK, state: b & R_WRITE ? 'Wired RW' : 'Wired RO', wires: wires(b) + 1 }, { ...same, code: OUT_OF_MEMORY }];
    case EV_UNEXPORT:
      // The core ends an export it made: the page must still be wired by it.
      if (!isWired(s)) return [];
      return [{ code: OK, state: wires(b) > 1 ? s : b & R_WRITE ? 'Private RW' : 'Private RO', wires: wires(b) - 1 }];
    case EV_STORE:
      if (s === 'Unmapped' || s === 'Wired RO' || s === 'I/O') return refuse(STORE_FAULT);
      if (s === 'Wired RW') return [{ ...same, code: OK }];
      // Private or RO-Shared: written in place, or by MRG after a copy and a move, or made writable.
      return [{ code: OK, state: 'Private RW', wires: 0 }, ...(s === 'RO-Shared' ? [{ ...same, code: STORE_FAULT }] : [])];
    case EV_MOVE_DST:
    case EV_MOVE_SRC: {
      const other = shadowState(arg);
      if (s === 'Unmapped' || other === 'Unmapped') return refuse(EPERM);
      if (samePage) return refuse(EINVAL);
      if (s === 'I/O' || isWired(s) || other === 'I/O' || isWired(other)) return refuse(EBUSY);
      const src = kind === EV_MOVE_SRC ? s : other;
      if (src === 'RO-Shared') return refuse(EINVAL);
      return [{ code: OK, state: kind === EV_MOVE_SRC ? 'Unmapped' : shadowState(arg), wires: 0 }];
    }
  }
  return [];
}

/** What a fork does to a page (MH's Refinement 2): present, unwired, non-I/O pages become RO-Shared. */
function forked(b: number): number {
  const s = shadowState(b);
  return isPrivate(s) ? (b & ~R_WRITE) | R_COW : b;
}

const codeName = (c: number): string => (c === STORE_FAULT ? 'a fault' : RESULT_NAMES[c] ?? String(c));

/** Checks every recorded change against the table. */
export function checkMhEvents(res: CoreResult[]): KernelViolation[] {
  const out: KernelViolation[] = [];
  let more = 0;
  for (const r of res) {
    const ev = r.mhEvents;
    if (!ev) continue;
    for (let i = 0; i < ev.length; i += EVENT_WORDS) {
      const kind = ev[i + E_KIND];
      const b = ev[i + E_BEFORE];
      const a = ev[i + E_AFTER];
      const code = ev[i + E_CODE];
      const samePage = (kind === EV_MOVE_DST && ev[i + EVENT_WORDS + E_PAGE] === ev[i + E_PAGE]) ||
        (kind === EV_MOVE_SRC && ev[i - EVENT_WORDS + E_PAGE] === ev[i + E_PAGE]);
      const arg = ev[i + E_ARG];
      let problem = '';
      if (ev[i + E_STABLE] === 1) {
        const ex = expected(kind, b, arg, samePage);
        const hit = ex.find((x) => x.code === code);
        if (!hit) problem = `returned ${codeName(code)}; the table says ${ex.length ? ex.map((x) => codeName(x.code)).join(' or ') : 'it cannot happen'}`;
        else if (hit.state !== shadowState(a) || hit.wires !== wires(a) || (hit.nx !== undefined && hit.nx !== ((a & R_NX) !== 0))) {
          problem = `returned ${codeName(code)} and left it ${shadowState(a)} (wired ${wires(a)})${hit.nx !== undefined ? `, NX ${(a & R_NX) !== 0}` : ''}; ` +
            `the table says ${hit.state} (wired ${hit.wires})${hit.nx !== undefined ? `, NX ${hit.nx}` : ''}`;
        }
      } else {
        // A fork may have come between: the outcome must fit the state before it or after it.
        const ok = [b, forked(b)].some((x) => expected(kind, x, kind === EV_MOVE_DST || kind === EV_MOVE_SRC ? forked(arg) : arg, samePage).some((e) => e.code === code)) ||
          expected(kind, b, arg, samePage).some((e) => e.code === code);
        if (!ok) problem = `returned ${codeName(code)} (a fork overlapped it; neither the state before nor after the fork allows that)`;
      }
      if (!problem) continue;
      if (out.length >= 16) {
        more++;
        continue;
      }
      out.push({
        kind: 'mh-transition',
        detail: `core ${r.core}: ${EVENT_NAMES[kind]} of page 0x${(ev[i + E_PAGE] * 4096).toString(16)} in space ${ev[i + E_SPACE]} ` +
          `(${shadowState(b)}${wires(b) ? `, wired ${wires(b)}` : ''}) ${problem}`,
      });
    }
  }
  if (more > 0) out.push({ kind: 'mh-transition', detail: `${more} more` });
  return out;
}

/** Transitions taken (stable events), "from|to|operation|outcome" -> count; the outcome is empty for Ok. */
export function mhTransitions(res: CoreResult[], into: Map<string, number> = new Map()): Map<string, number> {
  for (const r of res) {
    const ev = r.mhEvents;
    if (!ev) continue;
    for (let i = 0; i < ev.length; i += EVENT_WORDS) {
      if (ev[i + E_STABLE] !== 1) continue;
      const code = ev[i + E_CODE];
      const key = `${shadowState(ev[i + E_BEFORE])}|${shadowState(ev[i + E_AFTER])}|${EVENT_NAMES[ev[i + E_KIND]]}|${code === OK ? '' : codeName(code)}`;
      into.set(key, (into.get(key) ?? 0) + 1);
    }
  }
  return into;
}

/** The device's frame-owner findings (the DMA engine puts every frame it touches to the oracle). */
export function checkDma(m: Machine): KernelViolation[] {
  const dev = m.device;
  if (!dev) return [];
  const v = dev.violations();
  if (v.count === 0) return [];
  return [{ kind: 'dma-frame-owner', detail: `the DMA engine touched ${v.count} frame(s) their exporter no longer owned; the first: frame ${v.pfn}, exported by space ${v.space} (owners now: ${ownerList(refs.ownerMask(m.kernel, v.pfn))})` }];
}

function ownerList(mask: number): string {
  const out: number[] = [];
  for (let s = 0; s < 32; s++) if ((mask >>> s) & 1) out.push(s);
  return out.length ? out.join(',') : 'none';
}

/** The invariants of every mapping of every live space (replica 0, brought up to date), after a round. */
export function checkMhState(m: Machine): KernelViolation[] {
  const out: KernelViolation[] = [];
  const k = m.kernel;
  const dev = m.device;
  const ram = m.layout.totalFrames;
  const holders = new Map<number, number>();
  for (const s of procs.liveSpaces(k)) {
    const wiredBy = new Map<number, number>();
    if (dev) for (const slot of dev.slotsOf(s)) {
      const x = dev.exportAt(slot);
      if (x) wiredBy.set(x.vhi * 2 ** 32 + (x.vlo >>> 0), (wiredBy.get(x.vhi * 2 ** 32 + (x.vlo >>> 0)) ?? 0) + 1);
    }
    const root = Atomics.load(k.v.k, k.v.klayout.replicaBase(s, 0) + SR_ROOT);
    for (const e of vm.entries(k, 0, s)) {
      const at = `space ${s} 0x${e.va.toString(16)}`;
      const n = wires(e.rights);
      if ((n > 0) !== ((e.rights & R_WIRED) !== 0)) out.push({ kind: 'mh-state', detail: `${at}: R_WIRED ${(e.rights & R_WIRED) !== 0} with wiring count ${n}` });
      const exported = wiredBy.get(e.va) ?? 0;
      if (exported > n) out.push({ kind: 'mh-state', detail: `${at}: exported to the device ${exported} time(s) but wired ${n} time(s): a DMA could land in a freed frame` });
      wiredBy.delete(e.va);
      if (e.rights & R_IO) {
        if (e.pfn < ram || !dev || e.pfn + e.pages > ram + dev.pages) out.push({ kind: 'mh-state', detail: `${at}: an I/O mapping of frames ${e.pfn}.. outside the device` });
        const w = walkTo(m.mem, root, false, vaHi(e.va), vaLo(e.va), 12, null, 0);
        if (w >= 0 && (m.mem[w] & (PTE_PCD | PTE_PWT)) !== (PTE_PCD | PTE_PWT)) out.push({ kind: 'mh-state', detail: `${at}: the I/O leaf lacks PCD/PWT` });
        continue;
      }
      if (e.rights & R_ZERO) {
        out.push({ kind: 'mh-state', detail: `${at}: a demand-zero mapping (MH has none)` });
        continue;
      }
      if ((e.rights & R_COW) === 0) for (let p = 0; p < e.pages; p++) holders.set(e.pfn + p, (holders.get(e.pfn + p) ?? 0) + 1);
    }
    for (const [va] of wiredBy) out.push({ kind: 'mh-state', detail: `space ${s} 0x${va.toString(16)}: exported to the device, but not mapped (its frame may be anyone's)` });
  }
  for (const [pfn, n] of holders) {
    const rc = refs.refcount(k, pfn);
    if (n > 1 || rc !== 1) out.push({ kind: 'mh-state', detail: `frame ${pfn}: a private frame with ${n} private mapping(s) and refcount ${rc} (copy-on-write is MH's only sharing)` });
    if (out.length > 32) break;
  }
  return out;
}
