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
import { PROC_FREE, PROC_RUNNING, PROC_SLEEPING, PROC_TERMINATED } from '../kernel/layout.js';
import { R_USER, R_WRITE } from '../kernel/ops.js';
import { ACC_READ, ACC_WRITE } from '../hw/fault.js';
import * as faults from '../kernel/fault.js';
import * as forks from '../kernel/fork.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';
import * as shootdowns from '../kernel/shootdown.js';
import * as spaces from '../kernel/space.js';
import * as vm from '../kernel/vm.js';
import { vaHi, vaLo } from '../hw/vaddr.js';

export enum DataType {
  UnsignedInt = 'UnsignedInt',
  SignedInt = 'SignedInt',
}

/** A value to write: `ValueType.UnsignedInt(5)`, or `ValueType.Zero`. */
export interface ValueTypeValue {
  kind: 'Zero' | 'UnsignedInt' | 'SignedInt';
  value: number;
}

export const ValueType = {
  Zero: { kind: 'Zero', value: 0 } as ValueTypeValue,
  UnsignedInt: (v: number): ValueTypeValue => ({ kind: 'UnsignedInt', value: v }),
  SignedInt: (v: number): ValueTypeValue => ({ kind: 'SignedInt', value: v }),
};

/** A value read back. */
export class Value {
  constructor(private readonly v: number) {}
  getValue(): number {
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
    shootdowns.switchTo(m.kernel, cpu, s);
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
   * Reads the variable in the running process as `type` (a 32-bit word: UnsignedInt 0..2^32-1,
   * SignedInt -2^31..2^31-1); undefined (with a message) when refused.
   */
  read(ptr: Pointer, type: DataType): Value | undefined {
    if (!this.usable() || !this.isPointer(ptr) || !this.running()) return undefined;
    if (type !== DataType.UnsignedInt && type !== DataType.SignedInt) {
      this.out(`Invalid type ${String(type)} (DataType.UnsignedInt or DataType.SignedInt)`);
      return undefined;
    }
    const va = ptr.va;
    if (!this.registered(ptr)) return undefined;
    if (faults.access(this.machine.kernel, this.cpu, ACC_READ, 0, va) !== 0) return this.invalid(va);
    const w = this.cpu.mmu.valLo;
    return new Value(type === DataType.SignedInt ? w | 0 : w >>> 0);
  }

  /**
   * Writes the variable in the running process (a zero-page or copy-on-write fault on the way).
   * The value must fit its type's 32 bits; one that does not (or is not a whole number) is refused
   * with a message, not cut. A write refused for want of a frame says "Out of memory".
   */
  write(ptr: Pointer, v: ValueTypeValue): void {
    if (!this.usable() || !this.isPointer(ptr) || !this.running()) return;
    if (typeof v !== 'object' || v === null || !['Zero', 'UnsignedInt', 'SignedInt'].includes(v.kind)) {
      this.out(`Invalid value ${typeof v === 'object' ? JSON.stringify(v) : String(v)}: write takes ValueType.UnsignedInt(n), ValueType.SignedInt(n) or ValueType.Zero`);
      return;
    }
    const va = ptr.va;
    if (!this.registered(ptr)) return;
    const value = v.kind === 'Zero' ? 0 : v.value;
    const [lo, hi] = v.kind === 'SignedInt' ? [-(2 ** 31), 2 ** 31 - 1] : [0, 2 ** 32 - 1];
    if (!Number.isInteger(value) || value < lo || value > hi) {
      this.out(`Invalid value ${String(value)} for ${v.kind} (a whole number from ${lo} to ${hi})`);
      return;
    }
    const free = this.machine.frames.freeCount();
    if (faults.access(this.machine.kernel, this.cpu, ACC_WRITE, 0, va, 0, value | 0) === 0) return;
    // Mapped, and the write still refused with no frame left: the zero fill or the copy found none.
    const mapped = vm.resolve(this.machine.kernel, 0, this.space(this.current), vaHi(va), vaLo(va), this.cpu).code === OK;
    if (mapped && free === 0) this.out(`Out of memory writing 0x${va.toString(16)}`);
    else this.invalid(va);
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
    shootdowns.switchTo(k, this.cpu, p.space);
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
