// Runs a program on a core: the instruction loop (interrupt check at every boundary, then the
// operation), fault recording, and the end-of-run barrier. Runs on whatever thread attached the
// core: a pool worker normally, the main thread in synchronous tests.

import { Tlbe } from '../hw/tlb.js';
import { Cpu, readCounters } from '../hw/cpu.js';
import { IPI_OK, IPI_PING, IPI_TARGET_OFFLINE, WAIT_ABORTED, WAIT_OK, WAIT_TIMEOUT, describeWait } from '../hw/apic.js';
import { ACC_FETCH, ACC_READ, ACC_WRITE, FAULT_NOMEM, faultError, faultVector } from '../hw/fault.js';
import { CTR, G_ABORT } from '../hw/layout.js';
import { oversubscribed } from '../hw/wait.js';
import { hex64 } from '../hw/vaddr.js';
import { Kernel } from '../kernel/context.js';
import { S_RPAL_SHARED } from '../kernel/layout.js';
import { PH_BEGIN, PH_END, TR_ADJUST, TR_FORK, TR_MAP, TR_RESOLVE, TR_UNMAP } from '../hw/trace.js';
import {
  OP_AWAIT_PINGS, OP_K_ADJUST, OP_K_DEVREG, OP_K_DMA, OP_K_EXPORT, OP_K_KACCESS, OP_K_KMAP, OP_K_KUNMAP, OP_K_MOVE, OP_K_UNEXPORT, OP_K_EXIT,
  OP_K_FORK, OP_K_MAP, OP_K_OWN, OP_K_RESOLVE, OP_K_SWITCH, OP_K_UNMAP, OP_FETCH, OP_HALT, OP_IMPLICIT_LOAD, OP_IMPLICIT_STORE, OP_INVLPG,
  OP_LOAD_SIZED, OP_STORE_SIZED, OP_INVPCID, OP_LOAD, OP_MOV_CR0, OP_MOV_CR3, OP_MOV_CR4, OP_PING, OP_PTE_TOGGLE, OP_PTE_WRITE, OP_SET_MODE,
  OP_STORE, OP_WORDS, OP_WREFER, OP_WRPKRU, OP_XLATE, OP_K_SHARE, OP_K_UNSHARE, OP_K_PKEY, OP_K_CALL, OP_K_XACCESS, OP_K_GRANT, OP_K_THREAD, OP_K_RCALL, OP_K_RRET, type ProgramSource
} from './program.js';
import * as faults from '../kernel/fault.js';
import * as runctl from './runctl.js';
import { kernelHalfOp, kernelOp } from './kernelops.js';
import { MhRun, mhOp } from './mhops.js';
import { FOLLOWED_FAILURE, HeapMeter, Latencies, RunState, type CoreResult } from './runstate.js';
import { updateEntry } from './ptwrite.js';
import * as shootdowns from '../kernel/shootdown.js';
import * as threads from '../kernel/thread.js';
import { ShareRun, afterDeliveredFault, shareOp, threadOp } from './shareops.js';

const CHUNK_OPS = 4096;

export { FOLLOWED_FAILURE, failedResult, type CoreResult } from './runstate.js';

export interface ExecOptions {
  record: boolean;
  stopOnFault: boolean;
  /** Every core of the run: IPI_SYNC targets for break-before-make, and barrier participants. */
  peers: readonly number[];
  /** Take part in the end-of-run barrier (false when the controller runs a core alone). */
  barrier: boolean;
  /** The kernel: page faults go to its handler, and kernel operations run through it. */
  kernel?: Kernel;
  /** Checked mode: every access's frame must belong to the core's current address space. */
  checkOwner?: boolean;
  /** Sample the latency of MapFrame and Unmap (one in LATENCY_EVERY of each). */
  latency?: boolean;
  /** Count the bytes this thread allocates while the program runs (CoreResult.heapBytes). */
  heap?: boolean;
  /** End the program this many ms after the start barrier (see ProgramSpec.durationMs). */
  durationMs?: number;
  /** End the program at this wall-clock time (Date.now() ms; see ProgramSpec.endsAt). */
  endsAt?: number;
  /** Address-space sharing (VmMixProgram.share): the operations' addresses are slot or region offsets (shareops.ts), in the program's region. */
  share?: { mode: 'rpal' | 'mshare'; regionBase: number; pages: number };
  /** Threads per process (VmMixProgram.threads): a switch runs a thread of any live process (kernelops.ts). */
  threads?: number;
}

/**
 * With a duration, the clock is read at the first step (a deadline may have passed while the
 * program was dispatched), then at most every CLOCK_EVERY steps of the loop, a step being one cold
 * operation or a run of at most HOT_SPAN hot ones, and more often when steps are slow (many more
 * simulated cores than CPUs): about every CLOCK_MS.
 */
const CLOCK_EVERY = 64;
const CLOCK_MS = 1;
const HOT_SPAN = 1024;
/** Cores yield at clock reads when they outnumber the host's CPUs YIELD_RATIO times over; for YIELD_MS. */
const YIELD_RATIO = 8;
const YIELD_MS = 0.2;

/**
 * The instruction loop for loads, stores, fetches and INVLPG, from operation `from` of the chunk:
 * interrupt check, then the access. Returns the index of the first operation it does not handle
 * (n at the end of the chunk). Numbers and typed arrays only.
 */
function hotLoop(cpu: Cpu, buf: Int32Array, from: number, n: number, base: number, st: RunState, kernel: Kernel | undefined): number {
  const mem = cpu.mem;
  const ctl = cpu.ctl;
  const mmu = cpu.mmu;
  const apic = cpu.apic;
  const owner = st.owner;
  const ob = st.ownerBase;
  const space = kernel ? kernel.current[cpu.id] : -1;
  const bit = space >= 0 && space < 32 ? st.reachOf(space) : -1;
  let checksum = st.checksum;
  let loads = 0;
  let stores = 0;
  let fetches = 0;
  let i = from;
  for (let w = from * OP_WORDS; i < n; i++, w += OP_WORDS) {
    if (ctl[apic.headSeq] === apic.headExpect) apic.service();
    const op = buf[w];
    let r: number;
    if (op === OP_LOAD) {
      loads++;
      r = mmu.translate(buf[w + 1], buf[w + 2], ACC_READ);
      if (r >= 0) {
        checksum = (checksum + mem[r] + mem[r + 1]) | 0;
        if (owner !== null && (owner[ob + (r >>> 10)] & bit) === 0) st.noteStale(base + i, buf[w + 1], buf[w + 2], r >>> 10, space);
        continue;
      }
    } else if (op === OP_STORE) {
      stores++;
      r = mmu.translate(buf[w + 1], buf[w + 2], ACC_WRITE);
      if (r >= 0) {
        mem[r] = buf[w + 4];
        mem[r + 1] = buf[w + 3];
        if (owner !== null && (owner[ob + (r >>> 10)] & bit) === 0) st.noteStale(base + i, buf[w + 1], buf[w + 2], r >>> 10, space);
        continue;
      }
    } else if (op === OP_FETCH) {
      fetches++;
      r = mmu.translate(buf[w + 1], buf[w + 2], ACC_FETCH);
      if (r >= 0) {
        checksum = (checksum + mem[r] + mem[r + 1]) | 0;
        continue;
      }
    } else if (op === OP_INVLPG) {
      mmu.invlpg(buf[w + 1], buf[w + 2]);
      continue;
    } else {
      break;
    }
    if (r === FAULT_NOMEM) {
      if (mmu.bus !== null) {
        // Past RAM with a device: the cold path's load64/store64 reaches it (and counts the access).
        if (op === OP_LOAD) loads--;
        else if (op === OP_STORE) stores--;
        else fetches--;
        break;
      }
      if (op !== OP_STORE) checksum = (checksum - 2) | 0; // all ones, twice
      continue;
    }
    // A page fault with a kernel: the cold path runs the access again through the kernel's
    // fault-and-retry loop (faults.access), the only one.
    if (kernel !== undefined) break;
    st.noteFault(cpu, base + i, r);
    if (st.stop) {
      i++;
      break;
    }
  }
  mmu.countAccesses(loads, stores, fetches);
  st.checksum = checksum;
  return i;
}

/** Runs `src` to its end on `cpu` (already attached). Never throws for program behaviour. */
export function execute(cpu: Cpu, src: ProgramSource, opts: ExecOptions): CoreResult {
  const cores = cpu.layout.config.cores;
  const res: CoreResult = {
    core: cpu.id, ok: true, ops: 0, faults: 0, faultLog: [], checksum: 0,
    pingsSentTo: new Array(cores).fill(0), pingSumTo: new Array(cores).fill(0),
    pingsRecvFrom: new Array(cores).fill(0), pingSumFrom: new Array(cores).fill(0),
    xlates: {}, toggles: {}, staleAccesses: 0, staleExamples: [], isolation: 0, isolationExamples: [], kernel: {}, outcomes: {},
    counters: {}, elapsedMs: 0,
  };
  if (opts.record) res.values = [];
  const kernel = opts.kernel;
  const kstart = kernel ? { ...kernel.stats, ...kernel.nrStats() } : null;
  const recvFrom = res.pingsRecvFrom;
  const sumFrom = res.pingSumFrom;
  cpu.apic.handlers[IPI_PING] = (c, sender, payload) => {
    recvFrom[sender]++;
    sumFrom[sender] = (sumFrom[sender] + payload) | 0;
    c.apic.ack(sender);
  };
  const st = new RunState(opts.stopOnFault);
  if (opts.latency) st.lat = new Latencies();
  if (kernel?.mh) st.mh = new MhRun(cpu);
  if (kernel && opts.threads) st.threads = opts.threads;
  if (kernel && opts.share) st.share = new ShareRun(opts.share.mode, opts.share.regionBase, opts.share.pages);
  if (kernel && opts.checkOwner) {
    st.owner = kernel.v.k;
    st.ownerBase = kernel.v.klayout.ownerBase;
    const { k, klayout } = kernel.v;
    st.reachOf = (space) => (1 << space) | Atomics.load(k, klayout.spaceBase(space) + S_RPAL_SHARED);
  }
  const xl = new Map<string, number>();
  const buf = new Int32Array(CHUNK_OPS * OP_WORDS);
  const heap = opts.heap ? new HeapMeter() : null;
  const t0 = performance.now();
  let base = 0;
  let failed = '';
  const waitFailure = (what: string, r: number): string =>
    r === WAIT_ABORTED ? `core ${cpu.id}: ${FOLLOWED_FAILURE}`
      : r === WAIT_TIMEOUT ? `core ${cpu.id}: no answer within ${cpu.waitLimitMs} ms while waiting for ${cpu.lastWaitWhat} (${what})`
      : `core ${cpu.id}: ${what}: ${describeWait(cpu, r)}`;
  try {
    if (opts.barrier) {
      const b = runctl.startBarrier(cpu);
      if (b !== WAIT_OK) failed = waitFailure('start of run', b);
    }
    const deadline = Math.min(
      opts.durationMs === undefined ? Infinity : performance.now() + opts.durationMs,
      opts.endsAt === undefined ? Infinity : performance.now() + (opts.endsAt - Date.now()),
    );
    const yieldCpu = oversubscribed(cores / YIELD_RATIO);
    let clock = 1;
    let every = 1;
    let lastRead = deadline === Infinity ? 0 : performance.now();
    let timeUp = false;
    // A run another core aborted (or whose worker died) ends here too, not only in a wait.
    const ctl = cpu.ctl;
    while (!failed && !st.stop && !cpu.stopRequested && !timeUp && ctl[G_ABORT] === 0) {
      const n = src.next(buf);
      if (n === 0) break;
      let i = 0;
      while (i < n && !failed && !st.stop && !cpu.stopRequested) {
        if (!opts.record) i = hotLoop(cpu, buf, i, deadline === Infinity ? n : Math.min(n, i + HOT_SPAN), base, st, opts.kernel);
        if (deadline !== Infinity && --clock <= 0) {
          const now = performance.now();
          if ((timeUp = now >= deadline)) break;
          const perStep = (now - lastRead) / every;
          every = perStep > 0 ? Math.max(1, Math.min(CLOCK_EVERY, Math.floor(CLOCK_MS / perStep))) : CLOCK_EVERY;
          clock = every;
          lastRead = now;
          // Far more simulated cores than CPUs: a core gives its CPU up for a moment at every
          // clock read (about every CLOCK_MS of its work), sleeping on its doorbell, so that the
          // cores an IPI or a lock waits for get to run; an IPI wakes it at once.
          if (yieldCpu) cpu.apic.sleepSlice(-1, 0, YIELD_MS);
        }
        if (i >= n || st.stop) break;
        cpu.apic.poll();
        failed = coldOp(cpu, buf, i * OP_WORDS, base + i, st, res, xl, opts.peers, waitFailure, kernel);
        i++;
      }
      base += Math.min(i, n);
    }
    res.ops = base;
    if (heap) res.heapBytes = heap.stop();
    if (st.lat) res.latencies = st.lat.result();
    if (kernel) {
      threads.parkThread(kernel, cpu);
      shootdowns.leave(kernel, cpu);
    }
    if (opts.barrier) {
      const b = runctl.endBarrier(cpu);
      if (b !== WAIT_OK && !failed) failed = waitFailure('end of run', b);
    }
  } catch (e) {
    failed = `core ${cpu.id}: ${(e as Error).message}`;
  }
  if (failed) {
    res.ok = false;
    res.error = failed;
    runctl.abortRun(cpu);
  }
  res.checksum = st.checksum >>> 0;
  res.faults = st.faults;
  res.staleAccesses = st.stale;
  res.outcomes = st.outcomeNames();
  res.staleExamples = st.staleExamples;
  if (kernel && kstart) {
    const now: Record<string, number> = { ...(kernel.stats as unknown as Record<string, number>), ...kernel.nrStats() };
    for (const [k, v] of Object.entries(kstart)) res.kernel[k] = now[k] - (v as number);
  }
  res.faultLog = st.faultLog;
  if (st.mh) res.mhEvents = st.mh.events;
  if (st.share) {
    res.shareFinds = st.share.finds;
    res.shareCounts = st.share.counts;
  }
  res.xlates = Object.fromEntries(xl);
  res.elapsedMs = performance.now() - t0;
  cpu.publishCounters();
  res.counters = readCounters(cpu.layout, cpu.ctl, cpu.id);
  return res;
}

function sum(xs: readonly number[]): number {
  let t = 0;
  for (const x of xs) t += x;
  return t;
}

/**
 * One operation on the cold path (and every operation of a recording program). Returns an error
 * or ''. It and kernelOp create no closure over their locals: V8 would then allocate a context
 * on every call (bench scale's B/op).
 */
function coldOp(
  cpu: Cpu, buf: Int32Array, w: number, index: number, st: RunState, res: CoreResult,
  xl: Map<string, number>, peers: readonly number[], waitFailure: (what: string, r: number) => string, kernel: Kernel | undefined,
): string {
  const op = buf[w];
  let r = 0;
  switch (op) {
    case OP_LOAD:
    case OP_FETCH:
    case OP_STORE: {
      // Through the kernel's fault path when there is a kernel (retries after repaired faults).
      const acc = op === OP_LOAD ? ACC_READ : op === OP_STORE ? ACC_WRITE : ACC_FETCH;
      r = kernel
        ? faults.access(kernel, cpu, acc, buf[w + 1], buf[w + 2], buf[w + 3], buf[w + 4])
        : op === OP_LOAD ? cpu.mmu.load64(buf[w + 1], buf[w + 2]) : op === OP_STORE ? cpu.mmu.store64(buf[w + 1], buf[w + 2], buf[w + 3], buf[w + 4]) : cpu.mmu.fetch64(buf[w + 1], buf[w + 2]);
      if (r !== 0 && kernel) afterDeliveredFault(cpu, kernel, st);
      // The stale-tlb oracle, as in the hot loop: the frame the access reached must be its space's.
      if (r === 0 && op !== OP_FETCH) st.checkOwner(index, buf[w + 1], buf[w + 2], cpu.mmu.lastWord, kernel ? kernel.current[cpu.id] : -1);
      if (op === OP_STORE) break;
      if (r === 0) st.checksum = (st.checksum + cpu.mmu.valLo + cpu.mmu.valHi) | 0;
      res.values?.push(r === 0 ? hex64(cpu.mmu.valHi, cpu.mmu.valLo) : 'fault');
      break;
    }
    case OP_LOAD_SIZED:
    case OP_STORE_SIZED + 1:
    case OP_STORE_SIZED + 2:
    case OP_STORE_SIZED + 4:
    case OP_STORE_SIZED + 8: {
      // 1, 2, 4 or 8 bytes at any address: through the kernel's fault path as the others.
      const store = op !== OP_LOAD_SIZED;
      const size = store ? op - OP_STORE_SIZED : buf[w + 3];
      const hi = store ? buf[w + 3] : 0;
      const lo = store ? buf[w + 4] : 0;
      r = kernel
        ? faults.access(kernel, cpu, store ? ACC_WRITE : ACC_READ, buf[w + 1], buf[w + 2], hi, lo, size)
        : cpu.mmu.access(buf[w + 1], buf[w + 2], size, store, hi, lo);
      const space = kernel ? kernel.current[cpu.id] : -1;
      if (r === 0) {
        st.checkOwner(index, buf[w + 1], buf[w + 2], cpu.mmu.lastWord, space);
        if (cpu.mmu.lastWord2 >= 0) st.checkOwner(index, buf[w + 1], buf[w + 2], cpu.mmu.lastWord2, space);
      }
      if (store) break;
      if (r === 0) st.checksum = (st.checksum + cpu.mmu.valLo + cpu.mmu.valHi) | 0;
      res.values?.push(r === 0 ? hex64(cpu.mmu.valHi, cpu.mmu.valLo) : 'fault');
      break;
    }
    case OP_IMPLICIT_LOAD:
    case OP_IMPLICIT_STORE:
      // Straight to the MMU: the kernel's fault path repairs user accesses, not these.
      r = cpu.mmu.implicit64(buf[w + 1], buf[w + 2], op === OP_IMPLICIT_STORE, buf[w + 3], buf[w + 4]);
      if (op === OP_IMPLICIT_LOAD) res.values?.push(r === 0 ? hex64(cpu.mmu.valHi, cpu.mmu.valLo) : 'fault');
      break;
    case OP_INVLPG:
      cpu.mmu.invlpg(buf[w + 1], buf[w + 2]);
      break;
    // Faults of these instructions (#GP(0)) are faults of the program, as an access's are.
    case OP_INVPCID:
      r = cpu.mmu.invpcid(buf[w + 1], buf[w + 2], buf[w + 3], buf[w + 4]);
      break;
    case OP_MOV_CR3:
      r = cpu.movCr3(buf[w + 1], buf[w + 2]);
      break;
    case OP_MOV_CR4:
      r = cpu.movCr4(buf[w + 1]);
      break;
    case OP_MOV_CR0:
      r = cpu.movCr0(buf[w + 1]);
      break;
    case OP_WREFER:
      cpu.wrEfer(buf[w + 1]);
      break;
    case OP_WRPKRU:
      cpu.wrpkru(buf[w + 1]);
      break;
    case OP_SET_MODE:
      cpu.setMode(buf[w + 1], buf[w + 2] !== 0);
      break;
    case OP_PING: {
      const target = buf[w + 1];
      if (target < 0 || target >= cpu.layout.config.cores) return `core ${cpu.id}: op ${index}: no core ${target} to send an IPI to`;
      const s = cpu.apic.sendIpi(target, IPI_PING, buf[w + 2]);
      if (s === IPI_TARGET_OFFLINE) return `core ${cpu.id}: op ${index}: IPI to core ${target}, which is not running`;
      if (s !== IPI_OK) return waitFailure(`op ${index}: IPI to core ${target}`, s);
      res.pingsSentTo[target]++;
      res.pingSumTo[target] = (res.pingSumTo[target] + buf[w + 2]) | 0;
      const a = cpu.apic.waitAcks();
      if (a !== WAIT_OK) return waitFailure(`op ${index}: ack from core ${target}`, a);
      break;
    }
    case OP_HALT: {
      const h = cpu.apic.halt();
      if (h !== WAIT_OK) return waitFailure(`op ${index}: HLT`, h);
      break;
    }
    case OP_AWAIT_PINGS: {
      cpu.apic.poll();
      while (sum(res.pingsRecvFrom) < buf[w + 1]) {
        const h = cpu.apic.halt();
        if (h !== WAIT_OK) return waitFailure(`op ${index}: waiting for ${buf[w + 1]} IPIs`, h);
      }
      break;
    }
    case OP_PTE_WRITE: {
      const u = updateEntry(cpu, buf[w + 1], buf[w + 2], buf[w + 3], peers);
      if (u === -WAIT_TIMEOUT || u === -WAIT_ABORTED) {
        return waitFailure(`op ${index}: break-before-make of the entry at word ${buf[w + 1]}`, -u);
      }
      break;
    }
    case OP_PTE_TOGGLE: {
      const mem = cpu.mem;
      const word = buf[w + 1];
      res.toggles[word] = (res.toggles[word] ?? 0) + 1;
      for (;;) {
        const v = Atomics.load(mem, word);
        if (Atomics.compareExchange(mem, word, v, v ^ buf[w + 2]) === v) break;
      }
      break;
    }
    case OP_XLATE: {
      cpu.ctr[CTR.translations]++;
      if (buf[w + 4] === 1) cpu.mmu.invlpg(buf[w + 1], buf[w + 2]);
      const x = cpu.mmu.translate(buf[w + 1], buf[w + 2], buf[w + 3]);
      const key = x >= 0 || x === FAULT_NOMEM
        ? lastTranslation(cpu, buf[w + 1], buf[w + 2])
        : `fault:${faultVector(x)}:${faultError(x)}`;
      xl.set(key, (xl.get(key) ?? 0) + 1);
      break;
    }
    case OP_K_SWITCH:
    case OP_K_MAP:
    case OP_K_UNMAP:
    case OP_K_ADJUST:
    case OP_K_RESOLVE:
    case OP_K_FORK:
    case OP_K_EXIT:
    case OP_K_OWN:
    case OP_K_EXPORT:
    case OP_K_UNEXPORT:
    case OP_K_DMA:
    case OP_K_DEVREG:
    case OP_K_MOVE:
    case OP_K_KMAP:
    case OP_K_KUNMAP:
    case OP_K_KACCESS:
    case OP_K_SHARE:
    case OP_K_UNSHARE:
    case OP_K_PKEY:
    case OP_K_CALL:
    case OP_K_XACCESS:
    case OP_K_GRANT:
    case OP_K_THREAD:
    case OP_K_RCALL:
    case OP_K_RRET: {
      if (!kernel) return `core ${cpu.id}: op ${index}: a kernel operation, but this run has no kernel`;
      if (st.share !== null) {
        const r = shareOp(cpu, kernel, buf, w, index, res, st, st.share);
        if (r !== undefined) return r;
      }
      if (op >= OP_K_THREAD) return threadOp(cpu, kernel, buf, w, st);
      if (op >= OP_K_SHARE) return `core ${cpu.id}: op ${index}: a sharing operation (opcode ${op}), but this program is not a --share one`;
      if (op >= OP_K_KMAP) return kernelHalfOp(cpu, kernel, buf, w, index, st, res);
      if (op >= OP_K_EXPORT) return mhOp(cpu, kernel, buf, w, index, st);
      const kind = op === OP_K_MAP ? TR_MAP : op === OP_K_UNMAP ? TR_UNMAP : op === OP_K_ADJUST ? TR_ADJUST : op === OP_K_RESOLVE ? TR_RESOLVE : op === OP_K_FORK ? TR_FORK : -1;
      if (kind < 0) return kernelOp(cpu, kernel, buf, w, index, res, st);
      cpu.trace(PH_BEGIN, kind);
      try {
        return kernelOp(cpu, kernel, buf, w, index, res, st);
      } finally {
        cpu.trace(PH_END, kind);
      }
    }
    default:
      return `core ${cpu.id}: op ${index}: unknown opcode ${op}`;
  }
  if (r !== 0) st.noteFault(cpu, index, r);
  return '';
}

/** "pfn:flags" of the TLB entry that now translates vhi:vlo (filled by the translate just done). */
function lastTranslation(cpu: Cpu, vhi: number, vlo: number): string {
  for (const arr of [cpu.mmu.tlb4k, cpu.mmu.tlb2m, cpu.mmu.tlb1g]) {
    const e = arr.find(vhi, vlo, cpu.regs.pcid);
    if (e >= 0) return `${cpu.ctl[e + Tlbe.PFN]}:${cpu.ctl[e + Tlbe.FLAGS]}`;
  }
  return 'none';
}
