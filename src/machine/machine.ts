// Boot and the controller: the main thread's handle on a machine. `Machine.boot` validates the
// configuration, lays out shared memory through hw/layout, initialises every core block and
// starts the core pool (piscina: one worker per simulated core, kept alive and reused across
// runs). The controller sets registers, runs programs on cores, reads counters and TLBs,
// translates without side effects, dumps, and shuts down leaving no worker behind.

import { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { randomUUID } from 'node:crypto';
import { validateConfig, type MachineConfig, type MachineOptions, type MachineShared } from './config.js';
import {
  C_QHEAD, C_QTAIL, C_STATE, CORE_OFF, G_ABORT, G_BARRIER, G_PARTICIPANTS, G_STARTED, Layout, R_AC, R_CPL, R_CR0, R_CR2_HI, R_CR2_LO,
  R_CR3_HI, R_CR3_LO, R_CR4, R_EFER, R_NODE, R_PKRU, Q_SEQ, Q_SLOT_WORDS,
} from '../hw/layout.js';
import { Frames, NO_FRAME } from '../hw/frames.js';
import * as refs from '../kernel/refs.js';
import * as khalf from '../kernel/khalf.js';
import * as spaces from '../kernel/space.js';
import { traceBytes } from '../hw/trace.js';
import { Device } from '../hw/device.js';
import { DEV_DMA_DONE, DEV_DMA_TAIL, DEV_ENGINE } from '../hw/layout.js';
import { ENGINE_STOP, ownerCheck } from './dma.js';
import { Kernel, kernelLayouts } from '../kernel/context.js';
import { Cpu, readCounters } from '../hw/cpu.js';
import { DEFAULT_REGS, PAGING_NAMES, Paging, Regs, readPdptes, type RegisterValues } from '../hw/regs.js';
import { TlbArray, type TlbEntryView } from '../hw/tlb.js';
import { split64, join64 } from '../hw/vaddr.js';
import { WalkOut, walk } from '../hw/walk.js';
import { ACC_FETCH, ACC_READ, ACC_WRITE, faultError, faultVector } from '../hw/fault.js';
import { PROGRAM_KINDS, ProgramError, encodeOps, type ProgramSpec, type OpsProgram } from './program.js';
import { failedResult, type CoreResult } from './executor.js';
import { abortAll } from './runctl.js';
import { parkedWord, resumeCore, setBreakpoint } from '../hw/debug.js';

/**
 * Worker flags. Piscina loads a worker file with require() first; on Node 20.19+ that takes the
 * require(esm) path, which at times aborts the whole process inside Node
 * (ModuleWrap::CreateRequiredModuleFacade assertion). Refusing require(esm) in the workers makes
 * piscina fall back to import(), which is sound.
 */
const WORKER_EXEC_ARGV = workerExecArgv();

/**
 * The node flags the workers inherit: this process's, unless a worker refuses them (V8 flags
 * such as --max-old-space-size or --single-threaded-gc are per process; they already apply to
 * the workers and a Worker given one throws), then none.
 */
function workerExecArgv(): string[] {
  const own = process.allowedNodeEnvironmentFlags.has('--no-experimental-require-module') ? ['--no-experimental-require-module'] : [];
  if (process.execArgv.length === 0) return own;
  try {
    void new Worker('', { eval: true, execArgv: process.execArgv }).terminate();
    return [...process.execArgv, ...own];
  } catch {
    return own;
  }
}

/** A configuration the machine cannot be built from. The message names the problem. */
export class ConfigError extends Error {}
/** A controller call that does not fit the machine's state (bad core, core busy...). */
export class MachineError extends Error {}

/** What a pool worker receives to run one program on one core. */
export interface CoreTask {
  shared: MachineShared;
  core: number;
  program: ProgramSpec;
  peers: number[];
  barrier: boolean;
}

export interface Job {
  core: number;
  program: ProgramSpec;
}

/** Result of a side-effect-free translation. */
export type Translation =
  | { ok: true; pa: bigint; size: number; flags: number; global: boolean }
  | { ok: false; vector: number; error: number };

export class Machine {
  readonly config: MachineConfig;
  readonly layout: Layout;
  readonly shared: MachineShared;
  readonly ctl: Int32Array;
  readonly mem: Int32Array;
  readonly frames: Frames;
  /** The controller's handle on the kernel (address spaces, checks). */
  readonly kernel: Kernel;
  private pool: Piscina | null;
  private busy = false;
  /** The device above RAM (null: none), and its DMA engine's thread (a machine without a pool has none: serviceDma runs requests). */
  readonly device: Device | null;
  private dmaThread: Worker | null = null;

  private constructor(config: MachineConfig, pool: boolean) {
    this.config = config;
    this.layout = new Layout(config);
    const phys = new SharedArrayBuffer(config.memoryBytes);
    const control = new SharedArrayBuffer(this.layout.controlWords * 4);
    const { klayout, nrLayout } = kernelLayouts(config.cores, config.nodes, config.memoryBytes, config.kernel);
    const kernel = new SharedArrayBuffer(klayout.totalWords * 4);
    const nr = new SharedArrayBuffer(nrLayout.totalWords * 4);
    this.shared = { id: randomUUID(), config, phys, control, kernel, nr, trace: config.trace ? new SharedArrayBuffer(traceBytes(config.cores)) : undefined };
    this.ctl = new Int32Array(control);
    this.mem = new Int32Array(phys);
    this.frames = new Frames(this.layout, this.ctl, this.mem);
    this.frames.reset();
    this.kernel = new Kernel({
      klayout, k: new Int32Array(kernel), nrLayout, nrw: new Int32Array(nr), mem: this.mem, frames: this.frames,
      replicaOf: Array.from({ length: config.cores }, (_, c) => this.layout.nodeOfCore(c)), waitLimitMs: config.waitLimitMs,
      inject: config.inject, cow: config.kernel.cow, mode: config.kernel.mode, personality: config.kernel.personality, khalf: config.kernel.khalf, mshareFlush: config.kernel.mshareFlush,
      device: this.layout.devicePages > 0 ? new Device(this.layout, this.ctl, this.mem) : undefined,
    });
    for (let c = 0; c < config.cores; c++) this.initCore(c);
    // The zero page is made now, not on first use: made lazily (say, by a core leaving its space
    // at the end of a run) it could take a data frame just freed while another core still held a
    // stale translation of it — and as the zero page every space may read it, so the stale-tlb
    // oracle would no longer see that access.
    if (refs.zeroPage(this.kernel) === NO_FRAME) throw new RangeError('no frame for the zero page');
    // The kernel half: the kernel's own space (the masters) and its boot-time mappings.
    if (spaces.createKernelSpace(this.kernel) < 0 || !khalf.bootMappings(this.kernel)) throw new RangeError('no frames for the kernel half');
    this.device = this.kernel.v.device ?? null;
    if (pool && this.device) {
      this.dmaThread = new Worker(new URL('../../workers/dma.js', import.meta.url), { workerData: this.shared, execArgv: WORKER_EXEC_ARGV });
      this.dmaThread.unref();
    }
    this.pool = pool
      ? new Piscina({
          filename: new URL('../../workers/core.js', import.meta.url).href,
          minThreads: config.cores,
          maxThreads: config.cores,
          idleTimeout: 2 ** 31 - 1,
          concurrentTasksPerWorker: 1,
          execArgv: WORKER_EXEC_ARGV,
        })
      : null;
  }

  /**
   * Validates `opts`, lays out shared memory and starts one worker per core. Rejects with a
   * ConfigError naming the problem. With { pool: false } no worker starts: the machine is only
   * driven from the main thread (dumps, synchronous tests).
   */
  static async boot(opts: MachineOptions = {}, mode: { pool?: boolean } = {}): Promise<Machine> {
    const v = validateConfig(opts);
    if ('error' in v) throw new ConfigError(v.error);
    let buffers: Machine;
    try {
      buffers = new Machine(v.config, mode.pool ?? true);
    } catch (e) {
      if (e instanceof RangeError) {
        throw new ConfigError(`cannot allocate ${v.config.memoryBytes} bytes of simulated memory: ${e.message}`);
      }
      throw e;
    }
    return buffers;
  }

  private initCore(c: number): void {
    const b = this.layout.coreBase(c);
    const ctl = this.ctl;
    ctl[b + R_NODE] = this.layout.nodeOfCore(c);
    ctl[b + R_CR0] = DEFAULT_REGS.cr0;
    ctl[b + R_CR4] = DEFAULT_REGS.cr4;
    ctl[b + R_EFER] = DEFAULT_REGS.efer;
    ctl[b + R_PKRU] = DEFAULT_REGS.pkru;
    ctl[b + R_CPL] = DEFAULT_REGS.cpl;
    ctl[b + R_AC] = DEFAULT_REGS.ac;
    ctl[b + C_STATE] = CORE_OFF;
    ctl[b + C_QHEAD] = 0;
    ctl[b + C_QTAIL] = 0;
    for (let s = 0; s < this.layout.queueSlots; s++) ctl[b + this.layout.queueBase + s * Q_SLOT_WORDS + Q_SEQ] = s;
    for (const a of [this.layout.tlb4k, this.layout.tlb2m, this.layout.tlb1g]) new TlbArray(ctl, b, a).clear();
  }

  private checkCore(c: number): void {
    if (!Number.isInteger(c) || c < 0 || c >= this.config.cores) {
      throw new MachineError(`no core ${c}: this machine has cores 0..${this.config.cores - 1}`);
    }
  }

  /** NUMA node of core c. */
  nodeOf(c: number): number {
    this.checkCore(c);
    return this.layout.nodeOfCore(c);
  }

  /**
   * The paging state core c would have with v: refused if it is PAE paging whose CR3 names a
   * present PDPTE with reserved bits (the core loads the PDPTEs when it starts, where a MOV to CR3
   * would raise #GP(0)), or a legacy mode with CR3 above 32 bits.
   */
  private checkPaging(c: number, v: RegisterValues): void {
    const cur = this.registers(c);
    const r = new Regs(this.config.maxPhysAddr);
    const cr3 = split64(v.cr3 ?? cur.cr3);
    r.cr0 = v.cr0 ?? cur.cr0;
    r.cr3hi = cr3.hi;
    r.cr3lo = cr3.lo;
    r.cr4 = v.cr4 ?? cur.cr4;
    r.efer = v.efer ?? cur.efer;
    r.decode();
    if ((r.mode === Paging.B32 || r.mode === Paging.PAE) && cr3.hi !== 0) throw new MachineError(`core ${c}: CR3 has 32 bits in ${PAGING_NAMES[r.mode]} paging, got 0x${(v.cr3 ?? cur.cr3).toString(16)}`);
    if (r.mode === Paging.PAE && !readPdptes(this.mem, r.cr3lo, r.maxPhysAddr, r.pdpte)) {
      throw new MachineError(`core ${c}: CR3 0x${cr3.lo.toString(16)} names PAE PDPTEs with reserved bits set (bits 2:1, 8:5 or above MAXPHYADDR): a MOV to CR3 would raise #GP(0)`);
    }
  }

  /** Sets registers of an offline core. Unspecified registers keep their values. */
  setRegisters(c: number, v: RegisterValues): void {
    this.checkCore(c);
    const b = this.layout.coreBase(c);
    if (Atomics.load(this.ctl, b + C_STATE) !== CORE_OFF) throw new MachineError(`core ${c} is running: registers can only be set while it is offline`);
    checkRegisterValues(v);
    const ctl = this.ctl;
    this.checkPaging(c, v);
    if (v.cr0 !== undefined) ctl[b + R_CR0] = v.cr0 | 0;
    if (v.cr3 !== undefined) {
      const s = split64(v.cr3);
      ctl[b + R_CR3_HI] = s.hi;
      ctl[b + R_CR3_LO] = s.lo;
    }
    if (v.cr4 !== undefined) ctl[b + R_CR4] = v.cr4 | 0;
    if (v.efer !== undefined) ctl[b + R_EFER] = v.efer | 0;
    if (v.pkru !== undefined) ctl[b + R_PKRU] = v.pkru | 0;
    if (v.cpl !== undefined) ctl[b + R_CPL] = v.cpl;
    if (v.ac !== undefined) ctl[b + R_AC] = v.ac ? 1 : 0;
    if (v.cr2 !== undefined) {
      const s = split64(v.cr2);
      ctl[b + R_CR2_HI] = s.hi;
      ctl[b + R_CR2_LO] = s.lo;
    }
  }

  /** Registers of core c as stored in its control block. */
  registers(c: number): Required<RegisterValues> {
    this.checkCore(c);
    const b = this.layout.coreBase(c);
    const ctl = this.ctl;
    return {
      cr0: ctl[b + R_CR0], cr3: join64(ctl[b + R_CR3_HI], ctl[b + R_CR3_LO]), cr4: ctl[b + R_CR4],
      efer: ctl[b + R_EFER], pkru: ctl[b + R_PKRU], cpl: ctl[b + R_CPL] as 0 | 3, ac: ctl[b + R_AC] !== 0,
      cr2: join64(ctl[b + R_CR2_HI], ctl[b + R_CR2_LO]),
    };
  }

  /**
   * Drives core c from the main thread (tests, tools): attaches it and returns its Cpu. Release
   * it with cpu.detach(). Throws MachineError if another thread runs the core.
   */
  attachHere(c: number): Cpu {
    this.checkCore(c);
    const cpu = new Cpu({ layout: this.layout, ctl: this.ctl, mem: this.mem, trace: this.shared.trace }, c);
    if (!cpu.attach()) throw new MachineError(`core ${c} is already running on another thread`);
    return cpu;
  }

  /**
   * Starts every core's worker and waits until each has run once (an empty program): a worker's
   * first task pays for loading its modules, tens of milliseconds each and seconds for a hundred
   * cores on two CPUs, which a timed run should not count. Resolves at once without a pool.
   */
  async warmUp(): Promise<void> {
    if (!this.pool) return;
    const res = await this.run([...Array(this.config.cores).keys()].map((c) => ({ core: c, program: { kind: 'ops', ops: [] } as ProgramSpec })));
    const bad = res.find((r) => !r.ok);
    if (bad) throw new MachineError(`warm-up: ${bad.error}`);
  }

  /**
   * Runs one program per listed core, all at once, on the pool; resolves when every core has
   * finished and passed the end-of-run barrier. Results come in job order; a core that failed
   * has ok = false and an error naming what it waited for.
   */
  async run(jobs: Job[]): Promise<CoreResult[]> {
    if (!this.pool) throw new MachineError('this machine was booted without a core pool');
    if (this.busy) throw new MachineError('a run is already in progress on this machine');
    if (!Array.isArray(jobs)) throw new MachineError('run takes an array of jobs ({ core, program })');
    const seen = new Set<number>();
    for (const j of jobs) {
      if (typeof j !== 'object' || j === null || typeof j.program !== 'object' || j.program === null) throw new MachineError('a job is { core, program }, with program a ProgramSpec');
      if (j.program.kind !== 'encoded' && !(PROGRAM_KINDS as readonly string[]).includes(j.program.kind)) {
        throw new ProgramError(`core ${j.core}: unknown program kind '${String(j.program.kind)}' (known: ${PROGRAM_KINDS.join(', ')})`);
      }
      this.checkCore(j.core);
      if (seen.has(j.core)) throw new MachineError(`core ${j.core} appears twice in one run`);
      seen.add(j.core);
      if (Atomics.load(this.ctl, this.layout.coreBase(j.core) + C_STATE) !== CORE_OFF) {
        throw new MachineError(`core ${j.core} is already running`);
      }
    }
    const programs = jobs.map((j) => (j.program.kind === 'ops' ? encodeProgram(j.program as OpsProgram) : j.program));
    const peers = jobs.map((j) => j.core);
    Atomics.store(this.ctl, G_BARRIER, 0);
    Atomics.store(this.ctl, G_STARTED, 0);
    Atomics.store(this.ctl, G_PARTICIPANTS, jobs.length);
    Atomics.store(this.ctl, G_ABORT, 0);
    this.busy = true;
    try {
      const pool = this.pool;
      return await Promise.all(
        jobs.map((j, i) =>
          pool.run({ shared: this.shared, core: j.core, program: programs[i], peers, barrier: true } satisfies CoreTask).catch((e: unknown) => this.workerDied(j.core, e)),
        ),
      );
    } finally {
      this.busy = false;
    }
  }

  /**
   * A core's worker died during a run (it threw past the task's own handling, exited, or ran out
   * of memory): the run is aborted so that the other cores stop waiting for it, the core is
   * released, and its result is a failure naming the cause. Piscina starts a new worker.
   */
  private workerDied(c: number, e: unknown): CoreResult {
    abortAll(this.layout, this.ctl);
    Atomics.store(this.ctl, this.layout.coreBase(c) + C_STATE, CORE_OFF);
    return failedResult(c, `core ${c}: its worker died (${e instanceof Error ? e.message : String(e)})`);
  }

  /** Arms breakpoint `id` on core c (the core parks at the next site of that breakpoint). */
  arm(c: number, id: number): void {
    this.checkCore(c);
    setBreakpoint(this.layout, this.ctl, c, id, true);
  }

  /** Disarms breakpoint `id` on core c. */
  disarm(c: number, id: number): void {
    this.checkCore(c);
    setBreakpoint(this.layout, this.ctl, c, id, false);
  }

  /**
   * Resolves when core c is parked at breakpoint `id` (Atomics.waitAsync on the parked word: no
   * polling timer); rejects naming the core and breakpoint after timeoutMs.
   */
  async waitParked(c: number, id: number, timeoutMs = 10_000): Promise<void> {
    this.checkCore(c);
    const w = parkedWord(this.layout, c);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = Atomics.load(this.ctl, w);
      if (v === id + 1) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new MachineError(`core ${c} did not reach breakpoint ${id} within ${timeoutMs} ms`);
      const r = Atomics.waitAsync(this.ctl, w, v, left);
      if (r.async) {
        // A pending waitAsync does not keep Node's event loop alive: a timer for the deadline does.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([r.value, new Promise((done) => (timer = setTimeout(done, left)))]);
        clearTimeout(timer);
      }
    }
  }

  /** Lets a parked core go on (it stays armed unless disarmed). */
  resume(c: number): void {
    this.checkCore(c);
    resumeCore(this.layout, this.ctl, c);
  }

  /** Counters core c has published (after each run). */
  counters(c: number): Record<string, number> {
    this.checkCore(c);
    return readCounters(this.layout, this.ctl, c);
  }

  /** Every core's published counters, summed. Controller. */
  sumCounters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (let c = 0; c < this.config.cores; c++) for (const [k, v] of Object.entries(this.counters(c))) out[k] = (out[k] ?? 0) + v;
    return out;
  }

  /** The valid entries of core c's TLB, all page sizes. Side-effect free; any time. */
  tlb(c: number): TlbEntryView[] {
    this.checkCore(c);
    const b = this.layout.coreBase(c);
    return [this.layout.tlb4k, this.layout.tlb2m, this.layout.tlb1g].flatMap((a) => new TlbArray(this.ctl, b, a).snapshot());
  }

  /**
   * Translates va under the given registers (defaults: core 0's) without touching A/D or any
   * TLB, checking the rights of `access` at the given CPL. Main thread; side-effect free.
   */
  translate(va: bigint, regs: RegisterValues & { access?: 'read' | 'write' | 'fetch' } = {}): Translation {
    if (typeof va !== 'bigint' || va < 0n || va >= 1n << 64n) throw new MachineError(`translate: ${String(va)} is not a 64-bit address`);
    const r = new Regs(this.config.maxPhysAddr);
    const cur = this.registers(0);
    const v = { ...cur, ...regs };
    const cr3 = split64(v.cr3);
    r.cr0 = v.cr0;
    r.cr3hi = cr3.hi;
    r.cr3lo = cr3.lo;
    r.cr4 = v.cr4;
    r.efer = v.efer;
    r.pkru = v.pkru;
    r.cpl = v.cpl;
    r.ac = v.ac;
    r.decode();
    if (r.mode === Paging.PAE) readPdptes(this.mem, r.cr3lo, r.maxPhysAddr, r.pdpte);
    const a = split64(va);
    const out = new WalkOut();
    const acc = regs.access === 'write' ? ACC_WRITE : regs.access === 'fetch' ? ACC_FETCH : ACC_READ;
    const res = walk(this.mem, this.layout.totalFrames, r, a.hi, a.lo, acc, out, false, true);
    if (res !== 0) return { ok: false, vector: faultVector(res), error: faultError(res) };
    const off = va & BigInt(2 ** out.shift - 1);
    // 32-bit paging's 4 MiB pages come out of the walk as their 2 MiB half (walk.ts, walk32).
    const size = r.mode === Paging.B32 && out.shift === 21 ? 2 ** 22 : 2 ** out.shift;
    return { ok: true, pa: (BigInt(out.pfn) << 12n) + off, size, flags: out.flags, global: out.global };
  }

  /** Stops every worker. Idempotent. */
  async shutdown(): Promise<void> {
    const p = this.pool;
    this.pool = null;
    const d = this.dmaThread;
    this.dmaThread = null;
    if (d && this.device) {
      Atomics.store(this.ctl, this.layout.devBase + DEV_ENGINE, ENGINE_STOP);
      Atomics.notify(this.ctl, this.layout.devBase + DEV_DMA_TAIL);
      const exited = new Promise<void>((res) => d.once('exit', () => res()));
      const timer = setTimeout(() => void d.terminate(), 2000);
      await exited;
      clearTimeout(timer);
    }
    if (p) await p.destroy();
  }

  /**
   * Waits until every DMA request posted so far has finished (the engine thread does them; a
   * machine without one does them here, on the caller's thread). Rejects naming the requests
   * left when the bound (waitLimitMs) passes.
   */
  async drainDma(): Promise<void> {
    const dev = this.device;
    if (!dev) return;
    if (!this.dmaThread) {
      this.serviceDma();
      return;
    }
    const limit = Date.now() + this.config.waitLimitMs;
    const doneWord = this.layout.devBase + DEV_DMA_DONE;
    while (dev.inFlight() > 0) {
      if (Date.now() > limit) throw new Error(`DMA engine: ${dev.inFlight()} request(s) not finished within ${this.config.waitLimitMs} ms`);
      const seen = Atomics.load(this.ctl, doneWord);
      if (dev.inFlight() === 0) break;
      // A pending Atomics.waitAsync does not keep Node's event loop alive (the engine's thread is
      // unref'd): a timer does, for as long as the wait lasts.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Atomics.waitAsync(this.ctl, doneWord, seen, 50).value, new Promise((done) => (timer = setTimeout(done, 50)))]);
      clearTimeout(timer);
    }
  }

  /** Runs the posted DMA requests on this thread (a machine without an engine thread: tests, scripts). Returns how many. */
  serviceDma(): number {
    const dev = this.device;
    if (!dev || this.dmaThread) return 0;
    const owns = ownerCheck(this.shared);
    let n = 0;
    while (dev.serviceOne(owns) !== null) n++;
    return n;
  }

  /** Number of live pool threads (0 after shutdown). */
  get threads(): number {
    return this.pool ? this.pool.threads.length : 0;
  }
}

function encodeProgram(p: OpsProgram): ProgramSpec {
  const { ops, ...rest } = p;
  return { ...rest, kind: 'encoded', encoded: encodeOps(ops) };
}

const REGISTER_KEYS = ['cr0', 'cr2', 'cr3', 'cr4', 'efer', 'pkru', 'cpl', 'ac'];

/** Register values a caller gives: known names, 32-bit control registers, CR3 in [0, 2^64), CPL 0 or 3, AC a boolean. */
function checkRegisterValues(v: RegisterValues): void {
  if (typeof v !== 'object' || v === null) throw new MachineError('setRegisters takes an object of register values ({ cr0, cr3, cr4, efer, pkru, cpl, ac })');
  for (const k of Object.keys(v)) if (!REGISTER_KEYS.includes(k)) throw new MachineError(`unknown register '${k}' (known: ${REGISTER_KEYS.join(', ')})`);
  for (const k of ['cr0', 'cr4', 'efer', 'pkru'] as const) {
    const x = v[k];
    if (x !== undefined && (!Number.isInteger(x) || x < -(2 ** 31) || x >= 2 ** 32)) throw new MachineError(`${k} must be a 32-bit integer, got ${String(x)}`);
  }
  for (const k of ['cr2', 'cr3'] as const) {
    const x = v[k];
    if (x !== undefined && (typeof x !== 'bigint' || x < 0n || x >= 1n << 64n)) throw new MachineError(`${k} must be a bigint in [0, 2^64), got ${String(x)}`);
  }
  if (v.cpl !== undefined && v.cpl !== 0 && v.cpl !== 3) throw new MachineError(`cpl must be 0 or 3, got ${String(v.cpl)}`);
  if (v.ac !== undefined && typeof v.ac !== 'boolean') throw new MachineError(`ac must be true or false, got ${String(v.ac)}`);
}
