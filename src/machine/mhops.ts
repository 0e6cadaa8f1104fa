// A program's MH operations (the kernel personality 'mh'): export and unexport of its pages to
// the device, DMA through the device's register (waiting for the transfer to finish, as a driver
// waits for its completion), device register accesses through the process's I/O mapping, and
// move; and the record the state oracle (check/mh.ts) checks: for every change of one of the
// core's own pages, the mapping's rights word just before and just after it, the outcome, and
// whether a fork of the space could have changed the page in between (then the record is only
// checked loosely). The executor calls in here from its cold path.

import type { Cpu } from '../hw/cpu.js';
import { ACC_READ, ACC_WRITE } from '../hw/fault.js';
import { DMA_READ, DMA_WRITE, REG_DMA, REG_DMA_DONE, REG_DMA_POSTED, DEVICE_ID, REG_SCRATCH } from '../hw/device.js';
import { DEV_DMA_DONE, DEV_REG_COUNT } from '../hw/layout.js';
import { vaHi, vaJoin, vaLo } from '../hw/vaddr.js';
import { BoundedWait, STEP_EXPIRED, STEP_SLEEP, sleepOn } from '../hw/wait.js';
import type { Kernel } from '../kernel/context.js';
import { S_FORKS, S_GEN } from '../kernel/layout.js';
import type { MapEntry } from '../kernel/mapdb.js';
import * as mh from '../kernel/mh.js';
import { ALREADY_MAPPED, OK, PAGE, R_IO, R_USER, R_WRITE } from '../kernel/ops.js';
import * as faults from '../kernel/fault.js';
import * as vm from '../kernel/vm.js';
import { CURRENT_SPACE, OP_K_DEVREG, OP_K_DMA, OP_K_EXPORT, OP_K_MOVE, OP_K_UNEXPORT } from './program.js';
import type { RunState } from './runstate.js';

/** Event kinds of the state oracle's record. */
export const EV_MAP = 1;
export const EV_UNMAP = 2;
export const EV_ADJUST = 3;
export const EV_EXPORT = 4;
export const EV_UNEXPORT = 5;
export const EV_STORE = 6;
export const EV_MOVE_DST = 7;
export const EV_MOVE_SRC = 8;
/** The device's register pages mapped at IO_VA (by this core, or by another core of the process meanwhile: AlreadyMapped). */
export const EV_MAP_IO = 9;
export const EVENT_NAMES = ['', 'map', 'unmap', 'adjust', 'export', 'unexport', 'write', 'move', 'move-from', 'map I/O'];
/** One event: [kind, space, page number, rights before (-1: unmapped), rights after, outcome, stable (1: no fork in between), argument]. */
export const EVENT_WORDS = 8;
export const E_KIND = 0;
export const E_SPACE = 1;
export const E_PAGE = 2;
export const E_BEFORE = 3;
export const E_AFTER = 4;
export const E_CODE = 5;
export const E_STABLE = 6;
export const E_ARG = 7;
/** The outcome of an EV_STORE whose fault reached the program. */
export const STORE_FAULT = -1;

/** Where every process of an MH run maps the device's register pages. */
export const IO_VA = 0x7000_0000_0000;
const IO_HI = vaHi(IO_VA);
const IO_LO = vaLo(IO_VA);

/** One core's MH record for a run. */
export class MhRun {
  /** Events, EVENT_WORDS numbers each. */
  readonly events: number[] = [];
  /** This core's exports per (space, generation): the device slot and the page. */
  private readonly exports = new Map<number, { slot: number; page: number }[]>();
  private readonly e: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };
  private epoch = 0;
  private epochGen = 0;
  private readonly bw: BoundedWait;

  constructor(cpu: Cpu) {
    this.bw = new BoundedWait(cpu.waitLimitMs, 1, cpu.layout.config.cores);
  }

  /** The rights of the mapping based at vhi:vlo in s, -1 when there is none (a mapping based elsewhere counts as none). */
  observe(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number): number {
    return vm.lookup(kx, cpu.id, s, vhi, vlo, this.e, cpu) && this.e.va === vaJoin(vhi, vlo) ? this.e.rights : -1;
  }

  private forks(kx: Kernel, s: number): number {
    return Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_FORKS);
  }

  private gen(kx: Kernel, s: number): number {
    return Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_GEN);
  }

  /** Before a change of the page at vhi:vlo: its rights now (and the space's fork count, for end()). */
  begin(kx: Kernel, cpu: Cpu, s: number, vhi: number, vlo: number): number {
    this.epoch = this.forks(kx, s);
    this.epochGen = this.gen(kx, s);
    return this.observe(kx, cpu, s, vhi, vlo);
  }

  /** After it: records the event. */
  end(kx: Kernel, cpu: Cpu, s: number, kind: number, vhi: number, vlo: number, before: number, code: number, arg: number): void {
    const after = this.observe(kx, cpu, s, vhi, vlo);
    // Stable: no fork ran (or was running) between the two observations, and the process did not
    // exit meanwhile (an exit's IPI, taken in one of the operation's waits, takes the core out of s).
    const stable = (this.epoch & 1) === 0 && this.forks(kx, s) === this.epoch && this.gen(kx, s) === this.epochGen && kx.current[cpu.id] === s;
    this.events.push(kind, s, Math.floor(vaJoin(vhi, vlo) / PAGE), before, after, code, stable ? 1 : 0, arg);
  }

  private key(kx: Kernel, s: number): number {
    return s * 65536 + (Atomics.load(kx.v.k, kx.v.klayout.spaceBase(s) + S_GEN) & 0xffff);
  }

  exportsOf(kx: Kernel, s: number): { slot: number; page: number }[] {
    const k = this.key(kx, s);
    let l = this.exports.get(k);
    if (!l) this.exports.set(k, (l = []));
    return l;
  }

  /** Maps the device's register pages at IO_VA in s unless they are. False when that fails. */
  ensureIo(kx: Kernel, cpu: Cpu, s: number): boolean {
    const r = this.observe(kx, cpu, s, IO_HI, IO_LO);
    if (r >= 0) return (r & R_IO) !== 0;
    const dev = kx.v.device;
    if (!dev) return false;
    const before = this.begin(kx, cpu, s, IO_HI, IO_LO);
    const code = mh.mapIo(kx, cpu.id, s, IO_HI, IO_LO, 0, dev.pages, R_WRITE | R_USER, cpu);
    this.end(kx, cpu, s, EV_MAP_IO, IO_HI, IO_LO, before, code, 0);
    return code === OK || code === ALREADY_MAPPED;
  }

  /** Reads device register i through the I/O mapping: 0 (value in cpu.mmu.valLo) or the fault. */
  readReg(kx: Kernel, cpu: Cpu, i: number): number {
    return faults.access(kx, cpu, ACC_READ, IO_HI, IO_LO + i * 8);
  }

  /**
   * Waits until the device has finished every request posted up to `posted` (FIFO: ours among
   * them), polling REG_DMA_DONE through the I/O mapping and serving IPIs. '' or what went wrong.
   */
  awaitDma(kx: Kernel, cpu: Cpu, posted: number): string {
    const dev = kx.v.device;
    if (!dev) return 'no device';
    const s = kx.current[cpu.id];
    this.bw.begin();
    for (;;) {
      if (this.readReg(kx, cpu, REG_DMA_DONE) !== 0) {
        // The process exited while it waited (an exit's IPI took the core out of it): the transfer
        // finishes without it.
        if (kx.current[cpu.id] !== s) return '';
        return 'REG_DMA_DONE faulted';
      }
      if (cpu.mmu.valLo - posted >= 0) return '';
      cpu.apic.poll();
      const st = this.bw.step();
      if (st === STEP_EXPIRED) return `the DMA engine did not finish request ${posted} within ${this.bw.limitMs} ms`;
      if (st === STEP_SLEEP) sleepOn(this.bw, dev.ctl, dev.base + DEV_DMA_DONE, cpu.mmu.valLo);
    }
  }
}

/** One MH operation of a program. Returns '' or an error that ends the run on this core. */
export function mhOp(cpu: Cpu, kx: Kernel, buf: Int32Array, w: number, index: number, st: RunState): string {
  const run = st.mh;
  const cur = kx.current[cpu.id];
  if (run === null || !kx.mh) return `core ${cpu.id}: op ${index}: an MH operation, but the kernel's personality is not 'mh'`;
  if (cur < 0) return '';
  const op = buf[w];
  switch (op) {
    case OP_K_EXPORT: {
      const s = buf[w + 1] === CURRENT_SPACE ? cur : buf[w + 1];
      const vhi = buf[w + 2];
      const vlo = buf[w + 3];
      const before = run.begin(kx, cpu, s, vhi, vlo);
      const slot = mh.exportRange(kx, cpu, s, vhi, vlo, 1);
      const code = slot >= 0 ? OK : -slot;
      run.end(kx, cpu, s, EV_EXPORT, vhi, vlo, before, code, 0);
      if (slot >= 0) run.exportsOf(kx, s).push({ slot, page: Math.floor(vaJoin(vhi, vlo) / PAGE) });
      st.tally('export', code);
      return '';
    }
    case OP_K_UNEXPORT: {
      const list = run.exportsOf(kx, cur);
      if (list.length === 0) {
        st.tally('unexport', 'NoExport');
        return '';
      }
      const at = (buf[w + 2] >>> 0) % list.length;
      const x = list[at];
      const vhi = vaHi(x.page * PAGE);
      const vlo = vaLo(x.page * PAGE);
      const before = run.begin(kx, cpu, cur, vhi, vlo);
      const code = mh.unexport(kx, cpu, cur, x.slot);
      run.end(kx, cpu, cur, EV_UNEXPORT, vhi, vlo, before, code, 0);
      list.splice(at, 1);
      st.tally('unexport', code);
      return '';
    }
    case OP_K_DMA: {
      const list = run.exportsOf(kx, cur);
      if (list.length === 0) {
        st.tally('dma', 'NoExport');
        return '';
      }
      if (!run.ensureIo(kx, cpu, cur)) {
        st.tally('dma', 'NoIoMapping');
        return '';
      }
      const x = list[(buf[w + 2] >>> 0) % list.length];
      const cmd = buf[w + 4] !== 0 ? DMA_WRITE : DMA_READ;
      if (faults.access(kx, cpu, ACC_WRITE, IO_HI, IO_LO + REG_DMA * 8, buf[w + 3], x.slot | (cmd << 16)) !== 0 ||
          run.readReg(kx, cpu, REG_DMA_POSTED) !== 0) {
        st.tally('dma', 'Fault');
        return '';
      }
      const err = run.awaitDma(kx, cpu, cpu.mmu.valLo);
      if (err) return `core ${cpu.id}: op ${index}: DMA on export slot ${x.slot}: ${err}`;
      if (kx.current[cpu.id] !== cur) {
        st.tally('dma', 'Exited');
        return '';
      }
      // The device wrote the page: what this core wrote there is gone.
      if (cmd === DMA_WRITE) st.forgetPage(cur, vaHi(x.page * PAGE), vaLo(x.page * PAGE));
      st.tally('dma', cmd === DMA_WRITE ? 'Write' : 'Read');
      return '';
    }
    case OP_K_DEVREG: {
      if (!run.ensureIo(kx, cpu, cur)) {
        st.tally('devreg', 'NoIoMapping');
        return '';
      }
      // Now and then the process tries to unmap or change its I/O mapping: MH says EBUSY.
      if (((buf[w + 3] >>> 0) & 15) === 0) {
        const unmapIt = (buf[w + 3] & 16) !== 0;
        const before = run.begin(kx, cpu, cur, IO_HI, IO_LO);
        const code = unmapIt ? vm.unmap(kx, cpu, cur, IO_HI, IO_LO).code : vm.adjust(kx, cpu, cur, IO_HI, IO_LO, R_USER).code;
        run.end(kx, cpu, cur, unmapIt ? EV_UNMAP : EV_ADJUST, IO_HI, IO_LO, before, code, R_USER);
        st.tally(unmapIt ? 'unmap' : 'adjust', code);
        return '';
      }
      // Registers, and now and then an offset no register decodes (it reads as all ones).
      const i = (buf[w + 2] >>> 0) % (DEV_REG_COUNT + 2);
      if (buf[w + 4] !== 0) {
        st.tally('devreg', faults.access(kx, cpu, ACC_WRITE, IO_HI, IO_LO + REG_SCRATCH * 8, 0, buf[w + 3]) === 0 ? 'Write' : 'Fault');
        return '';
      }
      if (run.readReg(kx, cpu, i) !== 0) st.tally('devreg', 'Fault');
      else if (i === 0) st.tally('devreg', cpu.mmu.valLo === DEVICE_ID ? 'Id' : 'WrongDevice');
      else if (i >= DEV_REG_COUNT) st.tally('devreg', cpu.mmu.valLo === -1 && cpu.mmu.valHi === -1 ? 'Unclaimed' : 'WrongDevice');
      else st.tally('devreg', 'Read');
      return '';
    }
    case OP_K_MOVE: {
      const s = buf[w + 1] === CURRENT_SPACE ? cur : buf[w + 1];
      const dhi = buf[w + 2];
      const dlo = buf[w + 3];
      const shi = vaHi(buf[w + 4] * PAGE);
      const slo = vaLo(buf[w + 4] * PAGE);
      const bd = run.begin(kx, cpu, s, dhi, dlo);
      const bs = run.observe(kx, cpu, s, shi, slo);
      const code = mh.move(kx, cpu, s, dhi, dlo, shi, slo);
      run.end(kx, cpu, s, EV_MOVE_DST, dhi, dlo, bd, code, bs);
      run.end(kx, cpu, s, EV_MOVE_SRC, shi, slo, bs, code, bd);
      if (code === OK) {
        st.forgetPage(s, dhi, dlo);
        st.forgetPage(s, shi, slo);
      }
      st.tally('move', code);
      return '';
    }
  }
  return `core ${cpu.id}: op ${index}: unknown MH opcode ${op}`;
}
