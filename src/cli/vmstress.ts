// `nrvm stress` (the main job): rounds of seeded address-space programs on every core against
// several node-replicated address spaces, with the checked-mode oracles (src/check/kernel.ts)
// after every round and at the end. Reports operations, faults, shootdowns, TLB and log figures,
// every violation, and the command that replays the run.

import { Machine } from '../machine/machine.js';
import type { MachineOptions } from '../machine/config.js';
import type { CoreResult } from '../machine/executor.js';
import type { Job } from '../machine/machine.js';
import { writeDump, type DumpRoot } from '../machine/dump.js';
import type { VmMix, VmMixProgram } from '../workloads/sources.js';
import {
  checkConservation, checkConvergence, checkCoreFailures, checkIsolation, checkLogs, checkStale, destroyAllAndCheck, frameAccount,
  type KernelViolation,
} from '../check/kernel.js';
import { SetupError } from '../workloads/hwstress.js';
import { fmt, formatViolations, keep, ticking, violationInstants } from './stress.js';
import { writeChromeTrace } from '../trace/chrome.js';
import * as procs from '../kernel/proc.js';
import * as spaces from '../kernel/space.js';
import { checkDma, checkMhEvents, checkMhState, mhTransitions } from '../check/mh.js';
import { checkKernelHalf } from '../check/khalf.js';
import { REG_ACCESSES, REG_DMA_DONE, REG_DMA_ERRORS } from '../hw/device.js';
import { checkShare, detachAllAndCheck } from '../check/share.js';
import { MAILBOX_PAGES, MAILBOX_VA, rpalKeys, rpalPkru } from '../machine/shareops.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import { EINVAL, OK, OUT_OF_MEMORY, R_USER, R_WRITE, RESULT_NAMES } from '../kernel/ops.js';
import * as mshare from '../kernel/mshare.js';
import * as rpal from '../kernel/rpal.js';
import * as threads from '../kernel/thread.js';
import * as vm from '../kernel/vm.js';

/**
 * An end-of-run check that may meet state an injected (or real) bug corrupted — a DMA into a frame
 * that became a page table, say — and panic: that panic is a finding, reported, not a crash.
 */
function endCheck(check: () => KernelViolation[]): KernelViolation[] {
  try {
    return check();
  } catch (e) {
    return [{ kind: 'teardown-failure', detail: `the checks could not finish: ${(e as Error).message}` }];
  }
}

/** Device register reads that did not reach the device (a wrong ID, or an unclaimed offset that read as something). */
function checkDevice(res: CoreResult[]): KernelViolation[] {
  const n = res.reduce((t, r) => t + (r.outcomes['devreg:WrongDevice'] ?? 0), 0);
  return n === 0 ? [] : [{ kind: 'device', detail: `${n} device register read(s) through an I/O mapping did not reach the device` }];
}

export const DEFAULT_VM_MIX: VmMix = {
  map: 10, unmap: 8, adjust: 4, access: 64, resolve: 5, switch: 2, fork: 0.01, exit: 0.01, check: 5, export: 0, unexport: 0, dma: 0, devreg: 0, move: 0,
  kmap: 0.5, kunmap: 0.5, kaccess: 2, share: 0, unshare: 0, pkey: 0, call: 0, grant: 0,
};
/** The default mix under --kernel mh: MH's operations too, and forks often enough that pages go RO-Shared and back. */
export const DEFAULT_MH_MIX: VmMix = {
  map: 10, unmap: 7, adjust: 5, access: 55, resolve: 3, switch: 2, fork: 0.05, exit: 0.03, check: 5, export: 4, unexport: 3, dma: 1, devreg: 2, move: 2,
  kmap: 0.5, kunmap: 0.5, kaccess: 2, share: 0, unshare: 0, pkey: 0, call: 0, grant: 0,
};
/** The default mix under --share rpal: thread switches, shares, key changes, calls and grants; no forks or exits (README). */
export const DEFAULT_RPAL_MIX: VmMix = {
  map: 8, unmap: 6, adjust: 3, access: 50, resolve: 3, switch: 6, fork: 0, exit: 0, check: 6, export: 0, unexport: 0, dma: 0, devreg: 0, move: 0,
  kmap: 0, kunmap: 0, kaccess: 0, share: 2, unshare: 1.5, pkey: 2, call: 6, grant: 4,
};
/** The default mix under --share mshare: attaches and detaches, half of the mapping changes and accesses in the regions. */
export const DEFAULT_MSHARE_MIX: VmMix = {
  map: 10, unmap: 8, adjust: 4, access: 55, resolve: 3, switch: 4, fork: 0, exit: 0, check: 6, export: 0, unexport: 0, dma: 0, devreg: 0, move: 0,
  kmap: 0, kunmap: 0, kaccess: 0, share: 2, unshare: 2, pkey: 0, call: 0, grant: 0,
};

export interface VmStressOptions {
  machine: MachineOptions;
  seconds: number;
  seed: number;
  processes: number;
  opsPerRound: number;
  slots: number;
  mix: VmMix;
  dump?: string;
  /** Write a Chrome trace of the run here (the machine records trace events). */
  trace?: string;
  progress?: (line: string) => void;
  /** Address-space sharing: RPAL slots or mshare regions (issue 12). */
  share?: 'rpal' | 'mshare';
  /** Threads per process (default 2 under --share; none otherwise: cores switch processes). */
  threads?: number;
}

/** mshare regions of a --share mshare run, in slots MSHARE_SLOT, MSHARE_SLOT + 1... */
export const MSHARE_REGIONS = 2;
const MSHARE_SLOT = 100;
/** RPAL processes have two keys each of the fifteen. */
export const MAX_RPAL_PROCESSES = 7;

export interface VmStressReport {
  seed: number;
  config: { cores: number; nodes: number; memoryBytes: number; processes: number; inject: string[] };
  seconds: number;
  rounds: number;
  ops: Record<string, number>;
  /** Copy-on-write: zero-page fills, copies, last-sharer reuses; zombies reaped. */
  cow: { zeroFills: number; copies: number; reuses: number; reaped: number };
  /** The kernel half: its method, kmaps and kunmaps, top-level entries copied into spaces, kernel faults repaired, kernel shootdowns, supervisor accesses (done / faulted). */
  khalf: { method: string; kmaps: number; kunmaps: number; entryCopies: number; kernelFaults: number; shootdowns: number; accesses: number; faultsDelivered: number };
  outcomes: Record<string, number>;
  accesses: number;
  accessesPerSec: number;
  faults: number;
  spuriousFaults: number;
  invalidAccesses: number;
  shootdowns: number;
  shootdownIpis: number;
  ipis: { sent: number; received: number };
  tlb: { hits: number; misses: number; hitRate: number };
  log: { appends: number; batches: number; meanBatch: number; combines: number; readSyncs: number; laggardAdvances: number };
  frames: { total: number; free: number; data: number; tables: number; pools: number; zero: number };
  violations: (KernelViolation & { round: number | 'end' })[];
  replay: string;
  dump?: string;
  trace?: string;
  /** Outputs (--dump, --trace) that could not be written; the report itself is whole. */
  outputErrors: string[];
  /** Under --share: the mode, threads per process, and what the sharing operations did. */
  share?: {
    mode: 'rpal' | 'mshare'; threads: number; regions: number; switches: number; shares: number; unshares: number; calls: number; lazySwitches: number;
    grants: number; pkeys: number; ownLoads: number; otherLoads: number; deniedLoads: number; strayWrites: number; strayWritesDone: number;
  };
  /** Under --kernel mh: MH's figures and the state transitions the run took ("from|to|operation|outcome" -> count, outcome empty for Ok). */
  mh?: {
    userFaults: number; userCopies: number; exports: number; unexports: number; moves: number;
    dma: { done: number; errors: number }; deviceAccesses: number; transitions: Record<string, number>;
  };
}

const REGION_BASE = 0x10_0000_0000;

/** Runs the address-space stress. Rejects only for configuration/setup errors. */
export async function runVmStress(o: VmStressOptions, replay: string): Promise<VmStressReport> {
  const m = await Machine.boot({ ...o.machine, trace: o.trace !== undefined, kernel: { maxSpaces: 32, ...(o.machine.kernel ?? {}) } });
  try {
    const cores = m.config.cores;
    if (o.processes > m.config.kernel.maxSpaces) throw new SetupError(`--processes ${o.processes} exceeds the kernel's ${m.config.kernel.maxSpaces} address spaces`);
    for (let i = 0; i < o.processes; i++) {
      const s = spaces.createSpace(m.kernel);
      if (s < 0 || procs.spawn(m.kernel, s, -1) < 0) throw new SetupError('out of memory creating the address spaces; give the machine more --memory');
    }
    const hosts = o.share ? setUpSharing(m, o.share, o.threads ?? 2) : [];
    if (!o.share && o.threads !== undefined) {
      for (const s of procs.liveSpaces(m.kernel)) {
        for (let t = 0; t < o.threads; t++) {
          if (threads.spawnThread(m.kernel, procs.pidOf(m.kernel, s)) < 0) throw new SetupError(`out of memory for thread ${t} of space ${s}; give the machine more --memory`);
        }
      }
    }
    await m.warmUp();
    const violations: VmStressReport['violations'] = [];
    const sum: Record<string, number> = {};
    const outcomes: Record<string, number> = {};
    const add = (into: Record<string, number>, from: Record<string, number>): void => {
      for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
    };
    const mhRun = m.kernel.mh;
    const transitions = new Map<string, number>();
    const t0 = performance.now();
    const deadline = t0 + o.seconds * 1000;
    let round = 0;
    let faults = 0;
    let reaped = 0;
    let stopped = false;
    let dmaReported = false;
    /** The progress line: totals of the rounds done so far (a core publishes its counters when its round ends). */
    const line = (r: number, running: boolean): string => {
      const el = (performance.now() - t0) / 1000;
      const k = m.sumCounters();
      const acc = k.loads + k.stores;
      return `[${el.toFixed(1)}s/${o.seconds}s] round ${running ? r + 1 : r}${running ? ' running' : ''}  accesses ${fmt(acc)} (${fmt(acc / Math.max(el, 1e-3))}/s)  ` +
        `maps ${fmt(sum.maps ?? 0)}  unmaps ${fmt(sum.unmaps ?? 0)}  shootdowns ${fmt(sum.shootdowns ?? 0)}  spurious ${fmt(sum.spuriousFaults ?? 0)}  violations ${violations.length}`;
    };
    do {
      // A round ends after its operations or at the run's deadline, whichever comes first (the
      // cores check the clock as they go), so --seconds holds at any core count.
      const endsAt = Date.now() + Math.max(1, deadline - performance.now());
      const jobs: Job[] = [...Array(cores).keys()].map((c) => {
        const program: VmMixProgram = {
          kind: 'vm-mix', seed: (o.seed + round * 0x9e3779b1) | 0, count: o.opsPerRound, cores, slots: o.slots,
          regionBase: REGION_BASE, mix: o.mix, checkOwner: true, endsAt, allRights: mhRun, share: o.share, threads: o.share ? undefined : o.threads,
        };
        return { core: c, program };
      });
      const res: CoreResult[] = await ticking(m.run(jobs), 1000, () => o.progress?.(line(round, true)));
      const found = [...checkCoreFailures(res), ...checkStale(res), ...checkIsolation(res), ...checkShare(res), ...checkLogs(m)];
      let failed = found.some((v) => v.kind === 'core-failure');
      if (!failed) {
        // Reaping frees the zombies' tables: a table a bug corrupted can make that panic (a finding).
        const reap = endCheck(() => {
          reaped += procs.reapZombies(m.kernel);
          return checkKernelHalf(m);
        });
        found.push(...reap);
        failed = reap.some((v) => v.kind === 'teardown-failure');
      }
      if (mhRun) {
        // What the cores recorded holds even when one of them failed; the machine's state is
        // checked only when the round ended cleanly.
        found.push(...checkMhEvents(res), ...checkDevice(res));
        mhTransitions(res, transitions);
        if (!failed) {
          await m.drainDma();
          found.push(...checkMhState(m));
        }
      }
      if (mhRun) found.push(...checkDma(m).filter(() => !dmaReported));
      if (found.some((v) => v.kind === 'dma-frame-owner')) dmaReported = true;
      for (const v of found) violations.push({ ...v, round });
      for (const r of res) {
        add(sum, r.kernel);
        add(outcomes, r.outcomes);
        faults += r.faults;
      }
      round++;
      o.progress?.(line(round, false));
      if (found.some((v) => v.kind === 'core-failure' || v.kind === 'teardown-failure')) stopped = true;
    } while (!stopped && performance.now() < deadline);
    const seconds = (performance.now() - t0) / 1000;
    if (!stopped) for (const v of endCheck(() => [...checkConvergence(m), ...checkConservation(m)])) violations.push({ ...v, round: 'end' });
    const frames = frameAccount(m);
    const outputErrors: string[] = [];
    let dump: string | undefined;
    if (o.dump) {
      const roots: DumpRoot[] = [];
      for (let s = 0; s < m.kernel.maxSpaces; s++) {
        if (!m.kernel.isLive(s)) continue;
        for (let r = 0; r < m.config.nodes; r++) roots.push({ label: `space ${s} replica ${r} (node ${r})`, cr3: BigInt(m.kernel.vspace(s).root(r)) * 4096n, la57: false, space: s });
      }
      dump = await keep(outputErrors, '--dump', o.dump, () => writeDump(m, o.dump as string, roots));
    }
    const trace = o.trace ? await keep(outputErrors, '--trace', o.trace, () => writeChromeTrace(m, o.trace as string, violationInstants(violations))) : undefined;
    if (!stopped && hosts.length > 0) for (const v of endCheck(() => detachAllAndCheck(m, hosts))) violations.push({ ...v, round: 'end' });
    if (!stopped) for (const v of endCheck(() => destroyAllAndCheck(m))) violations.push({ ...v, round: 'end' });
    const k = m.sumCounters();
    const accesses = k.loads + k.stores;
    return {
      seed: o.seed,
      config: { cores, nodes: m.config.nodes, memoryBytes: m.config.memoryBytes, processes: o.processes, inject: m.config.inject },
      seconds,
      rounds: round,
      ops: {
        map: sum.maps ?? 0, unmap: sum.unmaps ?? 0, adjust: sum.adjusts ?? 0, resolve: sum.resolves ?? 0, switch: sum.switches ?? 0,
        fork: outcomes['fork:Ok'] ?? 0, exit: outcomes['exit:Ok'] ?? 0, load: k.loads, store: k.stores,
      },
      cow: { zeroFills: sum.zeroFills ?? 0, copies: sum.cowCopies ?? 0, reuses: sum.cowReuses ?? 0, reaped },
      khalf: {
        method: m.kernel.khalf, kmaps: sum.kmaps ?? 0, kunmaps: sum.kunmaps ?? 0, entryCopies: sum.kernelEntryCopies ?? 0, kernelFaults: sum.kernelFaults ?? 0,
        shootdowns: sum.kernelShootdowns ?? 0, accesses: outcomes['kaccess:Ok'] ?? 0, faultsDelivered: outcomes['kaccess:Fault'] ?? 0,
      },
      outcomes,
      accesses,
      accessesPerSec: accesses / seconds,
      faults: k.pageFaults,
      spuriousFaults: sum.spuriousFaults ?? 0,
      invalidAccesses: faults,
      shootdowns: sum.shootdowns ?? 0,
      shootdownIpis: sum.shootdownIpis ?? 0,
      ipis: { sent: k.ipisSent, received: k.ipisReceived },
      tlb: { hits: k.tlbHits, misses: k.tlbMisses, hitRate: k.tlbHits / Math.max(1, k.tlbHits + k.tlbMisses) },
      log: {
        appends: sum.nrAppends ?? 0, batches: sum.nrBatches ?? 0, meanBatch: (sum.nrAppends ?? 0) / Math.max(1, sum.nrBatches ?? 0),
        combines: sum.nrCombines ?? 0, readSyncs: sum.nrReadSyncs ?? 0, laggardAdvances: sum.nrLaggardAdvances ?? 0,
      },
      frames,
      violations,
      replay,
      dump,
      trace,
      outputErrors,
      share: o.share ? {
        mode: o.share, threads: o.threads ?? 2, regions: hosts.length, switches: outcomes['switch:Ok'] ?? 0, shares: outcomes['share:Ok'] ?? 0,
        unshares: outcomes['unshare:Ok'] ?? 0, calls: outcomes['call:Ok'] ?? 0, lazySwitches: outcomes['call:LazySwitch'] ?? 0, grants: outcomes['grant:Ok'] ?? 0,
        pkeys: outcomes['pkey:Ok'] ?? 0, ownLoads: outcomes['xaccess:Own'] ?? 0, otherLoads: outcomes['xaccess:Ok'] ?? 0, deniedLoads: outcomes['xaccess:Fault'] ?? 0,
        strayWrites: (outcomes['xwrite:Ok'] ?? 0) + (outcomes['xwrite:Fault'] ?? 0), strayWritesDone: outcomes['xwrite:Ok'] ?? 0,
      } : undefined,
      mh: mhRun ? {
        userFaults: sum.userFaults ?? 0, userCopies: sum.userCopies ?? 0, exports: sum.exports ?? 0, unexports: sum.unexports ?? 0, moves: sum.moves ?? 0,
        dma: { done: m.device?.peek(REG_DMA_DONE) ?? 0, errors: m.device?.peek(REG_DMA_ERRORS) ?? 0 }, deviceAccesses: m.device?.peek(REG_ACCESSES) ?? 0,
        transitions: Object.fromEntries([...transitions].sort((a, b) => b[1] - a[1])),
      } : undefined,
    };
  } finally {
    await m.shutdown();
  }
}

/**
 * The set-up of a --share run, before any core runs. RPAL: process s (space s) enters slot s + 1
 * with keys 2s + 1 (its slot's) and 2s + 2, maps its mailbox (MAILBOX_PAGES demand-zero pages),
 * gets its threads (PKRU: its keys and 0 only), and every process shares every other's slot.
 * mshare: MSHARE_REGIONS regions, each attached by every process, and the threads. Returns the
 * regions' hosts.
 */
function setUpSharing(m: Machine, mode: 'rpal' | 'mshare', nthreads: number): number[] {
  const kx = m.kernel;
  const live = procs.liveSpaces(kx);
  const fail = (what: string, code: number): never => {
    throw new SetupError(`--share ${mode}: ${what} failed (${RESULT_NAMES[code] ?? code}); give the machine more --memory`);
  };
  const hosts: number[] = [];
  if (mode === 'rpal') {
    for (const s of live) {
      let c = rpal.enterSlot(kx, s, s + 1);
      if (c !== OK) fail(`slot ${s + 1} for space ${s}`, c);
      for (const key of rpalKeys(s)) if (rpal.pkeyAlloc(kx, s, key) !== key) fail(`key ${key} for space ${s}`, EINVAL);
      if ((c = rpal.setSlotKey(kx, s, rpalKeys(s)[0])) !== OK) fail(`the slot key of space ${s}`, c);
      for (let j = 0; j < MAILBOX_PAGES; j++) {
        const va = (s + 1) * rpal.SLOT_BYTES + MAILBOX_VA + j * 4096;
        if ((c = vm.mapZero(kx, 0, s, vaHi(va), vaLo(va), R_USER | R_WRITE).code) !== OK) fail(`the mailbox of space ${s}`, c);
      }
    }
    for (const a of live) for (const b of live) if (a !== b && rpal.share(kx, a, b) !== OK) fail(`sharing space ${b}'s slot into ${a}`, EINVAL);
  } else {
    for (let j = 0; j < MSHARE_REGIONS; j++) {
      const h = mshare.mshareCreate(kx, MSHARE_SLOT + j);
      if (h < 0) fail(`region ${j}`, -1 - h);
      hosts.push(h);
      for (const a of live) {
        const c = mshare.mshareAttach(kx, a, h, (MSHARE_SLOT + j) * rpal.SLOT_BYTES);
        if (c !== OK) fail(`attaching region ${j} to space ${a}`, c);
      }
    }
  }
  for (const s of live) {
    for (let t = 0; t < nthreads; t++) if (threads.spawnThread(kx, procs.pidOf(kx, s), undefined, mode === 'rpal' ? rpalPkru(s) : 0) < 0) fail(`thread ${t} of space ${s}`, OUT_OF_MEMORY);
  }
  return hosts;
}

/** The human summary. */
export function formatVmReport(r: VmStressReport): string {
  const o = (k: string): number => r.outcomes[k] ?? 0;
  const lines = [
    `nrvm stress: ${r.config.cores} cores on ${r.config.nodes} nodes, ${r.config.memoryBytes / 2 ** 20} MiB, ${r.config.processes} address spaces, seed ${r.seed}` +
      (r.config.inject.length ? `, injected: ${r.config.inject.join(', ')}` : ''),
    `  ran ${r.seconds.toFixed(1)} s, ${r.rounds} rounds`,
    `  operations  ${Object.entries(r.ops).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`,
    `  outcomes    map ok ${fmt(o('map:Ok'))} / already mapped ${fmt(o('map:AlreadyMapped'))}, unmap ok ${fmt(o('unmap:Ok'))} / not mapped ${fmt(o('unmap:NotMapped'))}, ` +
      `adjust ok ${fmt(o('adjust:Ok'))}, resolve ok ${fmt(o('resolve:Ok'))} / not mapped ${fmt(o('resolve:NotMapped'))}`,
    `  processes   ${fmt(r.ops.fork)} forks, ${fmt(r.ops.exit)} exits (${fmt(r.cow.reaped)} reaped); copy-on-write: ${fmt(r.cow.copies)} copies, ` +
      `${fmt(r.cow.reuses)} last-sharer reuses, ${fmt(r.cow.zeroFills)} zero fills`,
    `  accesses    ${fmt(r.accesses)} (${fmt(r.accessesPerSec)}/s over all cores)`,
    `  kernel half ${r.khalf.method}: ${fmt(r.khalf.kmaps)} kmaps, ${fmt(r.khalf.kunmaps)} kunmaps, ${fmt(r.khalf.entryCopies)} top-level entries copied into spaces, ` +
      `${fmt(r.khalf.kernelFaults)} kernel faults repaired, ${fmt(r.khalf.shootdowns)} kernel shootdowns; supervisor accesses ${fmt(r.khalf.accesses)} done, ${fmt(r.khalf.faultsDelivered)} faulted (not mapped)`,
    `  faults      ${fmt(r.faults)} page faults: ${fmt(r.spuriousFaults)} spurious (replica behind or stale read-only entry, retried), ${fmt(r.invalidAccesses)} invalid (no mapping or no right, delivered)`,
    `  shootdowns  ${fmt(r.shootdowns)} (${fmt(r.shootdownIpis)} IPIs); IPIs ${fmt(r.ipis.sent)} sent, ${fmt(r.ipis.received)} received`,
    `  TLB         hit rate ${(100 * r.tlb.hitRate).toFixed(2)}%, ${fmt(r.tlb.misses)} misses`,
    `  NR log      ${fmt(r.log.appends)} appends in ${fmt(r.log.batches)} batches (mean ${r.log.meanBatch.toFixed(2)}), ${fmt(r.log.readSyncs)} read syncs, ${fmt(r.log.laggardAdvances)} laggard advances`,
    `  frames      ${r.frames.total} total at the end of the run: ${r.frames.free} free, ${r.frames.data} data, ${r.frames.tables} page tables, ${r.frames.pools} reserved`,
  ];
  if (r.mh) {
    const top = Object.entries(r.mh.transitions).slice(0, 6).map(([k, n]) => {
      const [from, to, op, outcome] = k.split('|');
      return `${from} -> ${to} by ${op}${outcome ? ` (${outcome})` : ''} ${fmt(n)}`;
    });
    lines.push(
      `  MH          ${fmt(r.mh.userFaults)} faults to the user-level handler (${fmt(r.mh.userCopies)} copies and moves), ${fmt(r.mh.exports)} exports, ` +
        `${fmt(r.mh.unexports)} unexports, ${fmt(r.mh.moves)} moves, DMA ${fmt(r.mh.dma.done)} done / ${fmt(r.mh.dma.errors)} refused, ${fmt(r.mh.deviceAccesses)} device register accesses`,
      `  states      ${Object.keys(r.mh.transitions).length} kinds of transition; the most taken: ${top.join('; ')}`,
    );
  }
  if (r.share) {
    const sh = r.share;
    lines.push(sh.mode === 'rpal'
      ? `  RPAL        ${r.config.processes} processes in slots, ${sh.threads} threads each: ${fmt(sh.switches)} thread switches, ${fmt(sh.shares)} shares, ${fmt(sh.unshares)} unshares, ` +
        `${fmt(sh.pkeys)} key changes, ${fmt(sh.calls)} calls (${fmt(sh.lazySwitches)} lazy kernel switches), ${fmt(sh.grants)} granted writes, ` +
        `loads in the process's own slot ${fmt(sh.ownLoads)}, in other slots ${fmt(sh.otherLoads)} done (each a key-isolation violation) / ${fmt(sh.deniedLoads)} faulted (keys denied, or not shared); ` +
        `stray writes into other slots ${fmt(sh.strayWritesDone)} done (each a violation) / ${fmt(sh.strayWrites - sh.strayWritesDone)} faulted`
      : `  mshare      ${sh.regions} regions, ${sh.threads} threads per process: ${fmt(sh.switches)} thread switches, ${fmt(sh.shares)} attaches, ${fmt(sh.unshares)} detaches, ` +
        `region loads ${fmt(sh.otherLoads)} done / ${fmt(sh.deniedLoads)} faulted (not attached or not mapped)`);
  }
  if (r.dump) lines.push(`  dump        ${r.dump}/phys.bin, ${r.dump}/machine.json`);
  if (r.trace) lines.push(`  trace       ${r.trace} (Chrome trace events: open in Perfetto or chrome://tracing)`);
  lines.push(...formatViolations(r.violations), `  replay      ${r.replay}`);
  return lines.join('\n');
}
