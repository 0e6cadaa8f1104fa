// The Simulator API of the seed (seeds/jiceberg-vmem-processes.txt), in TypeScript, running on
// the emulator: processes are node-replicated address spaces on this machine, a read or write is
// an 8-byte access by core 0 through its TLB and walker, and faults go through the kernel (zero
// page, copy-on-write). Where the seed's own code differs from its documentation, the
// documentation wins: frame references are counted across processes, so the last sharer's write
// copies nothing.
//
//   const sim = await Simulator.begin(true);
//   const x = new Pointer();
//   sim.register(x);
//   sim.read(x, DataType.UnsignedInt)?.getValue();    // 0, from the zero page
//   sim.fork(); sim.switch(1); sim.write(x, ValueType.UnsignedInt(7));   // PGZERO: 0x0
//
// Messages, as the seed prints them: "PGZERO: 0x..", "PGCOPY: 0x..", "ZOMBIE <pid>",
// "Invalid address 0x..". They go to `out` (stdout by default); PGZERO/PGCOPY only when verbose.

import { Machine } from './machine.js';
import type { Cpu } from '../hw/cpu.js';
import { OK } from '../kernel/ops.js';
import { PROC_FREE, PROC_RUNNING, PROC_SLEEPING, PROC_TERMINATED, THREAD_EXITED, THREAD_FREE, THREAD_RUNNABLE } from '../kernel/layout.js';
import { R_USER, R_WRITE } from '../kernel/ops.js';
import { ACC_READ, ACC_WRITE } from '../hw/fault.js';
import * as faults from '../kernel/fault.js';
import * as forks from '../kernel/fork.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';
import * as shootdowns from '../kernel/shootdown.js';
import * as spaces from '../kernel/space.js';
import * as threads from '../kernel/thread.js';
import * as vm from '../kernel/vm.js';
import { vaHi, vaJoin, vaLo } from '../hw/vaddr.js';

/** What a read takes a variable's bytes as: the seed's 32-bit words, and 8-, 16- and 64-bit ones. */
export enum DataType {
  UnsignedInt = 'UnsignedInt',
  SignedInt = 'SignedInt',
  U8 = 'U8',
  I8 = 'I8',
  U16 = 'U16',
  I16 = 'I16',
  U64 = 'U64',
  I64 = 'I64',
}

/** Bytes and signedness of each type (UnsignedInt and SignedInt are the seed's 32-bit words). */
const TYPES: Record<string, { bytes: number; signed: boolean }> = {
  UnsignedInt: { bytes: 4, signed: false }, SignedInt: { bytes: 4, signed: true },
  U8: { bytes: 1, signed: false }, I8: { bytes: 1, signed: true },
  U16: { bytes: 2, signed: false }, I16: { bytes: 2, signed: true },
  U64: { bytes: 8, signed: false }, I64: { bytes: 8, signed: true },
};

/** The width of a DataType's name, or undefined for what is not one. */
function typeOf(name: unknown): { bytes: number; signed: boolean } | undefined {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(TYPES, name) ? TYPES[name] : undefined;
}

/** A value to write: `ValueType.UnsignedInt(5)`, `ValueType.I16(-2)`, `ValueType.U64(2n ** 64n - 1n)`, or `ValueType.Zero` (32 bits). */
export interface ValueTypeValue {
  kind: 'Zero' | `${DataType}`;
  value: number | bigint;
}

export const ValueType = {
  Zero: { kind: 'Zero', value: 0 } as ValueTypeValue,
  UnsignedInt: (v: number): ValueTypeValue => ({ kind: 'UnsignedInt', value: v }),
  SignedInt: (v: number): ValueTypeValue => ({ kind: 'SignedInt', value: v }),
  U8: (v: number): ValueTypeValue => ({ kind: 'U8', value: v }),
  I8: (v: number): ValueTypeValue => ({ kind: 'I8', value: v }),
  U16: (v: number): ValueTypeValue => ({ kind: 'U16', value: v }),
  I16: (v: number): ValueTypeValue => ({ kind: 'I16', value: v }),
  U64: (v: number | bigint): ValueTypeValue => ({ kind: 'U64', value: v }),
  I64: (v: number | bigint): ValueTypeValue => ({ kind: 'I64', value: v }),
};

/** A value read back: getValue() as a number, getBigInt() exactly (64-bit types). */
export class Value {
  constructor(private readonly v: bigint) {}
  /** The value as a number; a RangeError for a 64-bit value a number cannot hold exactly (use getBigInt()). */
  getValue(): number {
    const n = Number(this.v);
    if (!Number.isSafeInteger(n)) throw new RangeError(`Value.getValue: ${this.v} is not exactly a number; use getBigInt()`);
    return n;
  }
  getBigInt(): bigint {
    return this.v;
  }
}

/** A registered variable: its virtual address in every process (assigned by register). */
export class Pointer {
  va = -1;
}

export type ProcessState = 'running' | 'sleeping' | 'terminated';
const STATE_NAMES: (ProcessState | undefined)[] = [undefined, 'running', 'sleeping', 'terminated'];

/** The seed's simulator over one core of a small machine. Main thread. */
export class Simulator {
  private current = 0;
  private nextVa = 0;

  private constructor(readonly machine: Machine, private readonly cpu: Cpu, readonly verbose: boolean, private readonly out: (line: string) => void) {}

  /**
   * Boots a one-core machine and starts process 0 (running). `out` receives every message line.
   * Options: memory (default 16MiB), the copy-on-write policy ('default' or MH's 'mh'), how many
   * processes can ever exist (default 64: a killed process stays a zombie, as in the seed), and
   * the device's register pages (default none).
   */
  static async begin(
    verbose: boolean,
    opts: { out?: (line: string) => void; memory?: string; cow?: 'default' | 'mh'; processes?: number; devicePages?: number } = {},
  ): Promise<Simulator> {
    const m = await Machine.boot(
      { cores: 1, nodes: 1, memory: opts.memory ?? '16MiB', kernel: { maxSpaces: opts.processes ?? 64, maxMappings: 1024, cow: opts.cow ?? 'default' }, devicePages: opts.devicePages ?? 0 },
      { pool: false },
    );
    m.setRegisters(0, { cpl: 3 });
    const cpu = m.attachHere(0);
    const sim = new Simulator(m, cpu, verbose, opts.out ?? ((l) => process.stdout.write(l + '\n')));
    m.kernel.onEvent = (kind, va) => {
      if (!sim.verbose || kind === 'reuse') return;
      sim.out(`${kind === 'zero' ? 'PGZERO' : 'PGCOPY'}: 0x${va.toString(16)}`);
    };
    const s = spaces.createSpace(m.kernel);
    const pid = s < 0 ? -1 : procs.spawn(m.kernel, s, -1);
    if (pid < 0) throw new Error('Simulator.begin: the machine has no room for a process');
    procs.setProcessState(m.kernel, pid, PROC_RUNNING);
    sim.current = pid;
    // Process 0's main thread (threads: spawnThread, switchThread).
    const main = threads.spawnThread(m.kernel, pid, cpu);
    if (main < 0 || threads.switchThread(m.kernel, cpu, main) !== OK) throw new Error('Simulator.begin: the machine has no room for the first thread');
    return sim;
  }

  /** The running process's id. */
  get pid(): number {
    return this.current;
  }

  /** A process's state, from the kernel's process table. */
  state(pid: number): ProcessState | undefined {
    return STATE_NAMES[procs.processOf(this.machine.kernel, pid).state];
  }

  private space(pid: number): number {
    return procs.processOf(this.machine.kernel, pid).space;
  }

  /** Registers a variable: a demand-zero page at the next free address of the running process. */
  register(ptr: Pointer): void {
    if (!this.usable() || !this.isPointer(ptr)) return;
    if (!this.running()) return;
    ptr.va = this.nextVa;
    this.nextVa += 4096;
    const r = vm.mapZero(this.machine.kernel, 0, this.space(this.current), vaHi(ptr.va), vaLo(ptr.va), R_USER | R_WRITE, this.cpu);
    if (r.code !== OK) this.out(`Out of memory registering 0x${ptr.va.toString(16)}`);
  }

  /**
   * Reads the variable in the running process as `type` (UnsignedInt 0..2^32-1, SignedInt
   * -2^31..2^31-1, the seed's; U8/I8, U16/I16, U64/I64 likewise), `offset` bytes into it (0-4095,
   * any alignment: a read that runs past the variable's page reads the next page too, as the
   * hardware does); undefined (with a message) when refused.
   */
  read(ptr: Pointer, type: DataType, offset = 0): Value | undefined {
    if (!this.usable() || !this.isPointer(ptr) || !this.running()) return undefined;
    const t = typeOf(type);
    if (t === undefined) {
      this.out(`Invalid type ${String(type)} (DataType.${Object.keys(TYPES).join(', DataType.')})`);
      return undefined;
    }
    if (!this.registered(ptr) || !this.offsetOk(offset)) return undefined;
    const va = ptr.va + offset;
    if (faults.access(this.machine.kernel, this.cpu, ACC_READ, vaHi(va), vaLo(va), 0, 0, t.bytes) !== 0) return this.invalid(this.faultAddress());
    const raw = BigInt.asUintN(t.bytes * 8, (BigInt(this.cpu.mmu.valHi >>> 0) << 32n) | BigInt(this.cpu.mmu.valLo >>> 0));
    return new Value(t.signed ? BigInt.asIntN(t.bytes * 8, raw) : raw);
  }

  /** Whether a byte offset into a variable is a whole number 0-4095 (prints why not). */
  private offsetOk(offset: number): boolean {
    if (Number.isInteger(offset) && offset >= 0 && offset < 4096) return true;
    this.out(`Invalid offset ${String(offset)} (a whole number of bytes from 0 to 4095)`);
    return false;
  }

  /**
   * Writes the variable in the running process, `offset` bytes into it (a zero-page or
   * copy-on-write fault on the way; a write that runs past the variable's page writes the next
   * page too, and writes neither when either refuses it). The value must fit its type (Zero is a
   * 32-bit 0); one that does not (or is not a whole number) is refused with a message, not cut.
   * A write refused for want of a frame says "Out of memory".
   */
  write(ptr: Pointer, v: ValueTypeValue, offset = 0): void {
    if (!this.usable() || !this.isPointer(ptr) || !this.running()) return;
    const t = typeof v !== 'object' || v === null ? undefined : v.kind === 'Zero' ? TYPES.UnsignedInt : typeOf(v.kind);
    if (t === undefined) {
      this.out(`Invalid value ${typeof v === 'object' ? JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x)) : String(v)}: write takes ValueType.Zero or ValueType.${Object.keys(TYPES).join('(n), ValueType.')}(n)`);
      return;
    }
    if (!this.registered(ptr) || !this.offsetOk(offset)) return;
    const va = ptr.va + offset;
    const value = v.kind === 'Zero' ? 0n : typeof v.value === 'bigint' ? v.value : Number.isSafeInteger(v.value) ? BigInt(v.value) : null;
    const bits = BigInt(t.bytes * 8);
    const [lo, hi] = t.signed ? [-(1n << (bits - 1n)), (1n << (bits - 1n)) - 1n] : [0n, (1n << bits) - 1n];
    if (value === null && typeof v.value === 'number' && Number.isInteger(v.value)) {
      this.out(`Invalid value ${String(v.value)} for ${v.kind}: a number past 2^53 is not exact; give a bigint`);
      return;
    }
    if (value === null || value < lo || value > hi) {
      this.out(`Invalid value ${String(v.value)} for ${v.kind} (a whole number from ${lo} to ${hi})`);
      return;
    }
    const word = BigInt.asUintN(64, value);
    const free = this.machine.frames.freeCount();
    if (faults.access(this.machine.kernel, this.cpu, ACC_WRITE, vaHi(va), vaLo(va), Number(word >> 32n) | 0, Number(word & 0xffffffffn) | 0, t.bytes) === 0) return;
    // Mapped, and the write still refused with no frame left: the zero fill or the copy found none.
    const mapped = vm.resolve(this.machine.kernel, 0, this.space(this.current), vaHi(va), vaLo(va), this.cpu).code === OK;
    if (mapped && free === 0) this.out(`Out of memory writing 0x${va.toString(16)}`);
    else this.invalid(this.faultAddress());
  }

  /**
   * The parent's wait: reaps terminated child `pid` of the running process (its pid becomes free).
   * Returns whether there was such a child. A killed process is a zombie until then.
   */
  wait(pid: number): boolean {
    if (!this.usable()) return false;
    const k = this.machine.kernel;
    const p = procs.processOf(k, pid);
    if (p.state !== PROC_TERMINATED || p.parent !== this.current) return false;
    procs.setProcessState(k, pid, PROC_FREE);
    return true;
  }

  /** Forks the running process; the child sleeps until switched to. Returns its pid, or -1. */
  fork(): number {
    if (!this.usable()) return -1;
    if (!this.running()) return -1;
    const k = this.machine.kernel;
    const child = forks.fork(k, this.cpu, this.space(this.current));
    const pid = child < 0 ? -1 : procs.spawn(k, child, this.current);
    if (pid < 0) {
      if (child >= 0) spaces.destroySpace(k, child, (pfn, pages, rights) => refs.releaseMapping(k, child, pfn, pages, rights), this.cpu);
      this.out(child < 0 ? 'Out of memory in fork' : 'No free process slot in fork');
      return -1;
    }
    // The child's thread is a copy of the one that forked (its stack came with the space).
    const me = k.runs[this.cpu.id];
    if (me >= 0) threads.forkThread(k, me, pid);
    return pid;
  }

  /** Context switch to pid n (a terminated process stays terminated: its accesses print ZOMBIE). */
  switch(n: number): void {
    if (!this.usable()) return;
    const k = this.machine.kernel;
    const p = procs.processOf(k, n);
    if (p.state === PROC_FREE) {
      this.out(`No process ${n}`);
      return;
    }
    if (procs.processOf(k, this.current).state === PROC_RUNNING) procs.setProcessState(k, this.current, PROC_SLEEPING);
    this.current = n;
    if (p.state === PROC_TERMINATED) return;
    procs.setProcessState(k, n, PROC_RUNNING);
    // The process's first runnable thread runs (its registers with it); one with none runs no thread.
    const t = threads.threadsOf(k, n).find((tid) => threads.threadOf(k, tid).state === THREAD_RUNNABLE || tid === k.runs[this.cpu.id]);
    if (t === undefined || threads.switchThread(k, this.cpu, t) !== OK) {
      threads.parkThread(k, this.cpu);
      shootdowns.switchTo(k, this.cpu, p.space);
    }
  }

  /** The thread the core runs (-1: none). */
  get tid(): number {
    return this.machine.kernel.runs[this.cpu.id];
  }

  /** The threads of process pid (the running one by default) that have not exited, in tid order. */
  threads(pid = this.current): number[] {
    const k = this.machine.kernel;
    return threads.threadsOf(k, pid).filter((t) => threads.threadOf(k, t).state !== THREAD_EXITED);
  }

  /**
   * A new thread of the running process, with its own stack page (demand-zero), runnable: its
   * tid, or -1 ("No room for a thread": eight per process, or no memory for the stack).
   */
  spawnThread(): number {
    if (!this.usable() || !this.running()) return -1;
    const tid = threads.spawnThread(this.machine.kernel, this.current, this.cpu);
    if (tid < 0) this.out(`No room for a thread in process ${this.current}`);
    return tid;
  }

  /**
   * Runs thread tid: of the running process, with no CR3 load; of another, a switch to that
   * process (CR3 loaded, PCID kept). "No thread <tid>" for one that does not exist.
   */
  switchThread(tid: number): void {
    if (!this.usable()) return;
    const k = this.machine.kernel;
    const t = threads.threadOf(k, tid);
    if (t.state === THREAD_FREE || t.state === THREAD_EXITED) {
      this.out(`No thread ${tid}`);
      return;
    }
    if (tid === k.runs[this.cpu.id]) return;
    const p = procs.processOf(k, t.pid);
    if (p.state === PROC_TERMINATED) {
      this.out(`ZOMBIE ${t.pid}`);
      return;
    }
    if (threads.switchThread(k, this.cpu, tid) !== OK) {
      this.out(`Thread ${tid} is not runnable`);
      return;
    }
    if (t.pid !== this.current) {
      if (procs.processOf(k, this.current).state === PROC_RUNNING) procs.setProcessState(k, this.current, PROC_SLEEPING);
      procs.setProcessState(k, t.pid, PROC_RUNNING);
      this.current = t.pid;
    }
  }

  /**
   * The running thread exits: its stack page goes. The last thread of a process cannot (kill the
   * process instead): "Last thread of process <pid>".
   */
  exitThread(): void {
    if (!this.usable() || !this.running()) return;
    const k = this.machine.kernel;
    if (this.threads().length <= 1) {
      this.out(`Last thread of process ${this.current}: kill the process instead`);
      return;
    }
    threads.exitThread(k, this.cpu);
    const next = this.threads().find((t) => threads.threadOf(k, t).state === THREAD_RUNNABLE);
    if (next !== undefined) threads.switchThread(k, this.cpu, next);
  }

  /** Kills pid n: its frames lose a reference (freed at zero), its page tables are freed. */
  kill(n: number): void {
    if (!this.usable()) return;
    const k = this.machine.kernel;
    const p = procs.processOf(k, n);
    if (p.state === PROC_FREE) this.out(`No process ${n}`);
    if (p.state === PROC_FREE || p.state === PROC_TERMINATED) return;
    spaces.destroySpace(k, p.space, (pfn, pages, rights) => refs.releaseMapping(k, p.space, pfn, pages, rights), this.cpu);
    procs.setProcessState(k, n, PROC_TERMINATED);
    threads.dropThreads(k, n);
  }

  /** Stops the machine. Later calls print that the simulation has ended. */
  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.cpu.detach();
    await this.machine.shutdown();
  }

  private ended = false;

  private usable(): boolean {
    if (this.ended) this.out('The simulation has ended');
    return !this.ended;
  }

  /** Whether ptr was registered (a whole, non-negative address); prints the reason if not. */
  private registered(ptr: Pointer): boolean {
    if (ptr.va === -1) {
      this.out('Unregistered pointer: register it first');
      return false;
    }
    if (!Number.isSafeInteger(ptr.va) || ptr.va < 0) {
      this.out(`Invalid address ${String(ptr.va)}`);
      return false;
    }
    return true;
  }

  /** Whether ptr is a Pointer (prints what it is instead if not). */
  private isPointer(ptr: Pointer): boolean {
    if (ptr instanceof Pointer) return true;
    this.out(`Invalid pointer ${String(ptr)}: a Pointer is needed (new Pointer())`);
    return false;
  }

  private running(): boolean {
    if (procs.processOf(this.machine.kernel, this.current).state === PROC_TERMINATED) {
      this.out(`ZOMBIE ${this.current}`);
      return false;
    }
    return true;
  }

  /** The address the last refused access faulted at (for one that ran into the next page, that page's). */
  private faultAddress(): number {
    return vaJoin(this.cpu.mmu.faultHi, this.cpu.mmu.faultLo);
  }

  private invalid(va: number): undefined {
    this.out(`Invalid address 0x${Math.max(va, 0).toString(16)}`);
    return undefined;
  }
}

/** The seed's example program: three forks, 1024 round-robin writes over four processes. */
export async function seedExample(out: (line: string) => void): Promise<Simulator> {
  const sim = await Simulator.begin(true, { out });
  const x = new Pointer();
  sim.register(x);
  const v = sim.read(x, DataType.UnsignedInt);
  if (v) out(`Value of x: ${v.getValue()}`);
  sim.fork();
  sim.fork();
  sim.fork();
  sim.switch(0);
  for (let i = 0; i < 1024; i++) {
    const b = sim.read(x, DataType.UnsignedInt);
    if (b) out(`Value of x before write for pid ${i % 4}: ${b.getValue()}`);
    sim.write(x, ValueType.UnsignedInt(i));
    const a = sim.read(x, DataType.UnsignedInt);
    if (a) out(`Value of x after write for pid ${i % 4}: ${a.getValue()}`);
    sim.switch((i + 1) % 4);
  }
  return sim;
}
