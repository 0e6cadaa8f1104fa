// Oracles for the address-space stress run (issue: NR address spaces).
//
//   stale-tlb            an access went through a translation to a frame its address space no
//                        longer owned (the unmap had returned): a missing or wrong shootdown
//   replica-divergence   once synced, two replicas differ in mappings or in leaf entries
//   nr-invariant         head <= every ltail <= tail, ctail <= tail, no more live entries than slots
//   frame-conservation   free + data + page-table + reserved frames != total frames
//   frame-leak           frames still allocated after every address space was destroyed
//   isolation            a core read back from its own slot in a process a value it had not
//                        written there: another process's write leaked through copy-on-write
//   core-failure         a core's bounded wait expired or it panicked
//
// Each is shown to fire: the tests inject skip-shootdown and skip-replica-sync, corrupt a replica,
// break the log's indices and leak a frame.

import type { Machine } from '../machine/machine.js';
import type { CoreResult } from '../machine/executor.js';
import { enumerateMappings } from '../hw/pagetable.js';
import { tableFrames } from '../hw/pagetable.js';
import { SR_COUNT } from '../kernel/layout.js';
import { sharedSlots } from '../kernel/slots.js';
import * as refs from '../kernel/refs.js';
import * as spaces from '../kernel/space.js';

export interface KernelViolation {
  kind: 'stale-tlb' | 'isolation' | 'replica-divergence' | 'nr-invariant' | 'frame-conservation' | 'frame-leak' | 'core-failure' |
    'mh-transition' | 'mh-state' | 'dma-frame-owner' | 'device' | 'kernel-half-divergence' | 'teardown-failure' |
    'key-isolation' | 'foreign-write' | 'cross-fault' | 'mshare-lifetime';
  detail: string;
}

/** Accesses through stale translations reported by the cores. */
export function checkStale(res: CoreResult[]): KernelViolation[] {
  const out: KernelViolation[] = [];
  for (const r of res) {
    for (const e of r.staleExamples) {
      out.push({
        kind: 'stale-tlb',
        detail: `core ${r.core} op ${e.op}: access to ${e.va} in space ${e.space} reached frame ${e.pfn}, ` +
          (e.owner === 0 ? 'which is free' : `which space ${e.space} no longer maps (mapped by spaces ${ownerList(e.owner)})`),
      });
    }
    if (r.staleAccesses > r.staleExamples.length) {
      out.push({ kind: 'stale-tlb', detail: `core ${r.core}: ${r.staleAccesses - r.staleExamples.length} more stale accesses` });
    }
  }
  return out;
}

function ownerList(mask: number): string {
  const out: number[] = [];
  for (let s = 0; s < 32; s++) if ((mask >>> s) & 1) out.push(s);
  return out.join(',');
}

/** Reads of a core's own slot that saw another process's write. */
export function checkIsolation(res: CoreResult[]): KernelViolation[] {
  const out: KernelViolation[] = [];
  for (const r of res) {
    for (const e of r.isolationExamples) out.push({ kind: 'isolation', detail: e });
    if (r.isolation > r.isolationExamples.length) out.push({ kind: 'isolation', detail: `core ${r.core}: ${r.isolation - r.isolationExamples.length} more` });
  }
  return out;
}

/** Core failures (bounded waits that expired, panics). */
export function checkCoreFailures(res: CoreResult[]): KernelViolation[] {
  return res.filter((r) => !r.ok).map((r) => ({ kind: 'core-failure' as const, detail: r.error ?? `core ${r.core} failed` }));
}

/** NR's index invariants for every live space. */
export function checkLogs(m: Machine): KernelViolation[] {
  const out: KernelViolation[] = [];
  for (let s = 0; s < m.kernel.maxSpaces; s++) {
    if (!m.kernel.isLive(s)) continue;
    for (const d of m.kernel.nr(s).checkInvariants()) out.push({ kind: 'nr-invariant', detail: d });
  }
  return out;
}

/** The leaves of a root's user half (the kernel half is the kernel-half oracle's, check/khalf.ts), or of its kernel half. */
function leafKey(m: Machine, root: number, kernel = false): string[] {
  return enumerateMappings(m.mem, m.layout.totalFrames, root, false).filter((x) => (x.va >= 1n << 63n) === kernel).map((x) => `${x.va.toString(16)}>${x.pa.toString(16)}/${x.size}/${x.write ? 'w' : 'r'}${x.user ? 'u' : 's'}${x.nx ? 'x' : ''}`);
}

/** Syncs every replica of every live space and compares mappings and leaf entries (A/D masked). Controller only. */
export function checkConvergence(m: Machine): KernelViolation[] {
  const out: KernelViolation[] = [];
  if (m.kernel.lockMode) return out; // the lock baseline keeps a single copy: nothing to converge
  // Every space synced before any is compared: a slot linked in (RPAL, mshare) is walked in its
  // owner's replicas.
  for (let s = 0; s < m.kernel.maxSpaces; s++) if (m.kernel.isLive(s)) spaces.syncAll(m.kernel, s);
  for (let s = 0; s < m.kernel.maxSpaces; s++) {
    if (!m.kernel.isLive(s)) continue;
    const vs = m.kernel.vspace(s);
    const db0 = JSON.stringify(vs.db(0).entries());
    const leaves0 = leafKey(m, vs.root(0));
    for (let r = 1; r < m.config.nodes; r++) {
      if (JSON.stringify(vs.db(r).entries()) !== db0) out.push({ kind: 'replica-divergence', detail: `space ${s}: replica ${r}'s mapping database differs from replica 0's` });
      const lr = leafKey(m, vs.root(r));
      if (lr.join() !== leaves0.join()) {
        const a = new Set(leaves0);
        const b = new Set(lr);
        const diff = [...leaves0.filter((x) => !b.has(x)).map((x) => `only in 0: ${x}`), ...lr.filter((x) => !a.has(x)).map((x) => `only in ${r}: ${x}`)];
        out.push({ kind: 'replica-divergence', detail: `space ${s}: leaf entries of replicas 0 and ${r} differ (${diff.slice(0, 3).join('; ')})` });
      }
    }
  }
  // The kernel's own space: its replicas (the masters of the kernel half) converge too.
  const ks = m.kernel.kernelSpace;
  spaces.syncAll(m.kernel, ks);
  const kv = m.kernel.vspace(ks);
  const k0 = leafKey(m, kv.root(0), true).join();
  for (let r = 1; r < m.config.nodes; r++) {
    if (JSON.stringify(kv.db(r).entries()) !== JSON.stringify(kv.db(0).entries()) || leafKey(m, kv.root(r), true).join() !== k0) {
      out.push({ kind: 'replica-divergence', detail: `the kernel's space: replica ${r} differs from replica 0` });
    }
  }
  return out;
}

/** Frames the kernel holds for itself: its space's roots, tables and pools, and its data frames (owner -1, not the zero page). */
export function kernelFrames(m: Machine): { tables: number; pools: number; data: number } {
  const k = m.kernel.v.k;
  const ks = m.kernel.kernelSpace;
  let tables = 0;
  let pools = 0;
  for (let r = 0; r < m.config.nodes; r++) {
    const root = m.kernel.vspace(ks).root(r);
    if (root !== 0) tables += tableFrames(m.mem, m.layout.totalFrames, root, 256, 512).length;
    pools += k[m.kernel.v.klayout.replicaBase(ks, r) + SR_COUNT];
  }
  const ob = m.kernel.v.klayout.ownerBase;
  const zero = Atomics.load(k, m.kernel.v.klayout.zeroPageWord) - 1;
  let data = 0;
  for (let f = 0; f < m.layout.totalFrames; f++) if (k[ob + f] === -1 && f !== zero) data++;
  return { tables, pools, data };
}

/** Frames by use; conservation holds when they add up to the machine's total. Controller only. */
export function frameAccount(m: Machine): { total: number; free: number; data: number; tables: number; pools: number; zero: number } {
  const k = m.kernel.v.k;
  const ob = m.kernel.v.klayout.ownerBase;
  const zeroWord = Atomics.load(k, m.kernel.v.klayout.zeroPageWord);
  let data = 0;
  for (let f = 0; f < m.layout.totalFrames; f++) if (k[ob + f] !== 0 && f !== zeroWord - 1) data++;
  let tables = 0;
  let pools = 0;
  for (let s = 0; s < m.kernel.maxSpaces; s++) {
    if (!m.kernel.isLive(s)) continue;
    // A slot linked in (RPAL share, mshare attach) holds another space's tables: counted there.
    const linked = sharedSlots(m.kernel, s);
    for (let r = 0; r < m.config.nodes; r++) {
      const root = m.kernel.vspace(s).root(r);
      if (linked.length === 0) tables += tableFrames(m.mem, m.layout.totalFrames, root).length;
      else {
        tables++;
        for (let i = 0; i < 256; i++) if (!linked.includes(i)) tables += tableFrames(m.mem, m.layout.totalFrames, root, i, i + 1).length - 1;
      }
      pools += k[m.kernel.v.klayout.replicaBase(s, r) + SR_COUNT];
    }
  }
  const kf = kernelFrames(m);
  return { total: m.layout.totalFrames, free: m.frames.freeCount(), data, tables: tables + kf.tables, pools: pools + kf.pools, zero: zeroWord === 0 ? 0 : 1 };
}

/** free + data + page tables + reserved pool frames + the zero page = total. */
export function checkConservation(m: Machine): KernelViolation[] {
  const a = frameAccount(m);
  const sum = a.free + a.data + a.tables + a.pools + a.zero;
  return sum === a.total ? [] : [{ kind: 'frame-conservation', detail: `free ${a.free} + data ${a.data} + tables ${a.tables} + pools ${a.pools} + zero page ${a.zero} = ${sum}, not ${a.total}` }];
}

/** Destroys every live space (freeing data frames) and checks that every frame is free again but the kernel's own and the zero page. */
export function destroyAllAndCheck(m: Machine): KernelViolation[] {
  for (let s = 0; s < m.kernel.maxSpaces; s++) {
    if (!m.kernel.isLive(s)) continue;
    spaces.destroySpace(m.kernel, s, (pfn, pages, rights) => refs.releaseMapping(m.kernel, s, pfn, pages, rights));
  }
  const zero = Atomics.load(m.kernel.v.k, m.kernel.v.klayout.zeroPageWord) === 0 ? 0 : 1;
  const kf = kernelFrames(m);
  const kernel = kf.tables + kf.pools + kf.data;
  const free = m.frames.freeCount();
  return free + zero + kernel === m.layout.totalFrames ? [] : [{
    kind: 'frame-leak', detail: `${m.layout.totalFrames - free - zero - kernel} frames still allocated after every address space was destroyed (the kernel's own ${kernel} aside)`,
  }];
}
