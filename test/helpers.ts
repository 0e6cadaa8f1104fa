// Shared fixtures for the tests: a machine driven from the main thread, page-table building in
// a few words, and a deterministic PRNG for generated cases.

import { Machine } from '../src/machine/machine.js';
import type { MachineOptions } from '../src/machine/config.js';
import { findEntry, mapPage, type LeafAttrs, MAP_OK } from '../src/hw/pagetable.js';
import { split64 } from '../src/hw/vaddr.js';
import type { Cpu } from '../src/hw/cpu.js';

/** Boots a machine with no worker pool (main-thread tests). */
export async function bootLocal(opts: MachineOptions = {}): Promise<Machine> {
  return Machine.boot({ cores: 2, nodes: 1, memory: '8MiB', ...opts }, { pool: false });
}

/** A page-table hierarchy under construction on node 0. */
export class Tables {
  readonly root: number;
  constructor(readonly m: Machine, readonly la57 = false, readonly node = 0) {
    this.root = m.frames.allocZeroed(node);
  }
  /** CR3 value for this root (PCID in bits 11:0). */
  cr3(pcid = 0): bigint {
    return (BigInt(this.root) << 12n) | BigInt(pcid);
  }
  /** Maps va to a fresh zeroed frame (or `pfn`); returns the frame. Throws on a mapping error. */
  map(va: bigint, attrs: LeafAttrs, shift = 12, pfn?: number): number {
    const pages = 1 << (shift - 12);
    let f = pfn;
    if (f === undefined) {
      // Huge pages need aligned runs of frames: take them from the top of node 0.
      f = shift === 12 ? this.m.frames.allocZeroed(this.node) : alignedRun(this.m, pages);
    }
    const { hi, lo } = split64(va);
    const r = mapPage(this.m.mem, this.m.frames, this.node, this.root, this.la57, hi, lo, f, shift, attrs);
    if (r !== MAP_OK) throw new Error(`map ${va.toString(16)}: error ${r}`);
    return f;
  }
  /** Word index of the entry for va at level `shift` (the leaf for 12). Throws if a table is missing. */
  entryWord(va: bigint, shift = 12): number {
    const { hi, lo } = split64(va);
    const w = findEntry(this.m.mem, this.root, this.la57, hi, lo, shift);
    if (w < 0) throw new Error(`entryWord: no table down to 0x${va.toString(16)} at shift ${shift}`);
    return w;
  }
}

/** A run of `pages` frames aligned to `pages` on node 0. */
export function alignedRun(m: Machine, pages: number): number {
  const f = m.frames.allocContiguous(0, pages);
  if (f < 0) throw new Error('alignedRun: out of memory');
  return f;
}

/** Attaches core c on this thread with the given registers; remember to detach. */
export function core(m: Machine, c: number, regs: Parameters<Machine['setRegisters']>[1]): Cpu {
  m.setRegisters(c, regs);
  return m.attachHere(c);
}

/** Splits a bigint address into [hi, lo]. */
export function hl(va: bigint): [number, number] {
  const { hi, lo } = split64(va);
  return [hi, lo];
}
