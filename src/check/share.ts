// The oracles of address-space sharing (--share rpal | mshare; machine/shareops.ts says what each
// core checks as it runs): the cores' finds, and at the end mshare's lifetime — a region's host
// lives while a process has it attached and is destroyed, its frames back, by the last detach.

import type { Machine } from '../machine/machine.js';
import type { CoreResult } from '../machine/executor.js';
import * as mshare from '../kernel/mshare.js';
import { RPAL_SPACES } from '../kernel/slots.js';
import { S_RPAL_SHARERS } from '../kernel/layout.js';
import type { KernelViolation } from './kernel.js';

/** What the cores' sharing oracles found, with a count of those past the examples. */
export function checkShare(res: CoreResult[]): KernelViolation[] {
  const out: KernelViolation[] = [];
  for (const r of res) {
    for (const f of r.shareFinds ?? []) out.push({ kind: f.kind, detail: f.detail });
    for (const [kind, n] of Object.entries(r.shareCounts ?? {})) {
      const shown = (r.shareFinds ?? []).filter((f) => f.kind === kind).length;
      if (n > shown) out.push({ kind: kind as KernelViolation['kind'], detail: `core ${r.core}: ${n - shown} more` });
    }
  }
  return out;
}

/**
 * At the end of an mshare run (no core running): every process detaches every region it has; a
 * host must stay live until its last detach and be gone after it.
 */
export function detachAllAndCheck(m: Machine, hosts: readonly number[]): KernelViolation[] {
  const kx = m.kernel;
  const out: KernelViolation[] = [];
  for (const h of hosts) {
    if (!mshare.isHost(kx, h)) {
      out.push({ kind: 'mshare-lifetime', detail: `region host ${h} is gone before its processes detached (sharers ${Atomics.load(kx.v.k, kx.v.klayout.spaceBase(h) + S_RPAL_SHARERS).toString(2)})` });
      continue;
    }
    for (let a = 0; a < RPAL_SPACES && a < kx.maxSpaces; a++) {
      if (((Atomics.load(kx.v.k, kx.v.klayout.spaceBase(h) + S_RPAL_SHARERS) >>> a) & 1) === 0) continue;
      const last = Atomics.load(kx.v.k, kx.v.klayout.spaceBase(h) + S_RPAL_SHARERS) === 1 << a;
      mshare.mshareDetach(kx, a, h);
      if (last === mshare.isHost(kx, h)) {
        out.push({ kind: 'mshare-lifetime', detail: last ? `region host ${h} outlived its last detach (by space ${a})` : `region host ${h} went at a detach by space ${a} that was not the last` });
      }
    }
  }
  return out;
}
