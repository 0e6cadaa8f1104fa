// Named machine scenarios for `nrvm dump`: page tables built directly in physical memory, for
// looking at with outside tools. Later issues add process address spaces.
//
//   varied   a 4-level root with 4 KiB, 2 MiB and 1 GiB pages, user and kernel halves, read-only,
//            NX, protection keys and global pages, some of them touched by a core so that A and D
//            differ; a 5-level root with a mapping above 2^47 and a kernel-half mapping; a
//            32-bit paging root (4 KiB pages, 4 MiB pages at 0 and, PSE-36, at 4 GiB) and a PAE
//            root (4 KiB pages, one NX, a 2 MiB page), each touched in its own mode.

import type { Machine } from '../machine/machine.js';
import type { DumpRoot } from '../machine/dump.js';
import { mapPage, MAP_OK, type LeafAttrs } from '../hw/pagetable.js';
import { NO_FRAME } from '../hw/frames.js';
import { split64 } from '../hw/vaddr.js';
import { CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CR4_PGE, CR4_PKE, CR4_PSE, DEFAULT_REGS, EFER_NXE } from '../hw/regs.js';
import { map32, mapPae } from '../hw/legacy.js';

export interface Scenario {
  name: string;
  summary: string;
  /** Minimum memory the scenario needs. */
  memory: string;
  build(m: Machine): DumpRoot[];
}

/** A scenario that cannot be built on this machine (too little memory...). */
export class ScenarioError extends Error {}

function frame(m: Machine, count = 1): number {
  const f = count === 1 ? m.frames.allocZeroed(0) : m.frames.allocContiguous(0, count);
  if (f === NO_FRAME) throw new ScenarioError(`out of memory building the scenario: ${count} frame(s) wanted on node 0`);
  return f;
}

function map(m: Machine, root: number, la57: boolean, va: bigint, pfn: number, shift: number, attrs: LeafAttrs): void {
  const { hi, lo } = split64(va);
  const r = mapPage(m.mem, m.frames, 0, root, la57, hi, lo, pfn, shift, attrs);
  if (r !== MAP_OK) throw new ScenarioError(`mapping 0x${va.toString(16)} failed (${r === 1 ? 'out of memory' : 'conflict'})`);
}

const varied: Scenario = {
  name: 'varied',
  summary: '4 KiB/2 MiB/1 GiB pages, kernel half, RO, NX, keys, globals; plus a 5-level, a 32-bit and a PAE root',
  memory: '8MiB',
  build(m) {
    const r4 = frame(m);
    const user = (extra: LeafAttrs = {}): LeafAttrs => ({ user: true, write: true, ...extra });
    for (let i = 0; i < 4; i++) map(m, r4, false, 0x40_0000n + BigInt(i) * 0x1000n, frame(m), 12, user({ pkey: i }));
    map(m, r4, false, 0x40_4000n, frame(m), 12, user({ write: false }));
    map(m, r4, false, 0x40_5000n, frame(m), 12, user({ nx: true }));
    map(m, r4, false, 0x4000_0000n, frame(m, 512), 21, user());
    map(m, r4, false, 0x80_0000_0000n, 0, 30, { user: false, write: false, nx: true });
    const kernel = 0xffff_8000_0000_0000n;
    for (let i = 0; i < 2; i++) map(m, r4, false, kernel + BigInt(i) * 0x1000n, frame(m), 12, { write: true, global: true, nx: true });
    map(m, r4, false, kernel + 0x20_0000n, frame(m, 512), 21, { write: false, global: true });

    const r5 = frame(m);
    map(m, r5, true, 0x00ab_cdef_1234_5000n, frame(m), 12, user());
    map(m, r5, true, 0xff00_0000_0000_0000n, frame(m), 12, { write: true, global: true });

    // Touch some pages from core 0 so that A and D tell a story.
    const cr3 = BigInt(r4) << 12n;
    m.setRegisters(0, { cr3, cr4: CR4_PAE | CR4_PGE | CR4_PKE, cpl: 3 });
    let cpu = m.attachHere(0);
    const touch = (va: bigint, write: boolean): void => {
      const { hi, lo } = split64(va);
      if (write) cpu.mmu.store64(hi, lo, 0x6e72766d, 0x21);
      else cpu.mmu.load64(hi, lo);
    };
    try {
      touch(0x40_0000n, true);
      touch(0x40_1000n, false);
      touch(0x4000_0000n + 0x1234_5670n % 0x20_0000n, true);
      cpu.setMode(0, false);
      touch(kernel, true);
    } finally {
      cpu.detach();
    }
    // LA57 cannot change with paging on (#GP, SDM 4.1.1): the 5-level root is loaded offline.
    m.setRegisters(0, { cr3: BigInt(r5) << 12n, cr4: CR4_PAE | CR4_PGE | CR4_PKE | CR4_LA57, cpl: 3 });
    cpu = m.attachHere(0);
    try {
      touch(0x00ab_cdef_1234_5000n, false);
    } finally {
      cpu.detach();
    }

    // 32-bit paging: 4 KiB pages and 4 MiB ones (PSE), one of them above 4 GiB (PSE-36).
    const legacy = (what: string, r: number): void => {
      if (r !== MAP_OK) throw new ScenarioError(`mapping ${what} failed (${r === 1 ? 'out of memory' : 'conflict'})`);
    };
    const pd = frame(m);
    legacy('0x40_0000 (32-bit)', map32(m.mem, m.frames, 0, pd, 0x40_0000, frame(m), false, { write: true, user: true }));
    legacy('0x40_1000 (32-bit)', map32(m.mem, m.frames, 0, pd, 0x40_1000, frame(m), false, { user: true }));
    legacy('0xc000_0000 (32-bit)', map32(m.mem, m.frames, 0, pd, 0xc000_0000 | 0, frame(m), false, { write: true, global: true }));
    legacy('0xc040_0000 (32-bit)', map32(m.mem, m.frames, 0, pd, 0xc040_0000 | 0, 0, true, { global: true }));
    legacy('0xc080_0000 (32-bit)', map32(m.mem, m.frames, 0, pd, 0xc080_0000 | 0, 0x10_0000, true, {}));
    // PAE paging: 4 KiB pages (one NX) and a 2 MiB page.
    const pdpt = frame(m);
    legacy('0x40_0000 (PAE)', mapPae(m.mem, m.frames, 0, pdpt, 0x40_0000, frame(m), 12, { write: true, user: true }));
    legacy('0x40_1000 (PAE)', mapPae(m.mem, m.frames, 0, pdpt, 0x40_1000, frame(m), 12, { user: true, nx: true }));
    legacy('0x8000_0000 (PAE)', mapPae(m.mem, m.frames, 0, pdpt, 0x8000_0000 | 0, 0, 21, { write: true }));
    const legacyCr0 = (CR0_PG | CR0_WP | 1) | 0;
    // Registers set offline keep the TLB: its 4-level translations of the same addresses go first.
    m.setRegisters(0, { cr0: legacyCr0, cr3: BigInt(pd) << 12n, cr4: CR4_PSE | CR4_PGE, efer: 0, cpl: 3 });
    cpu = m.attachHere(0);
    cpu.mmu.flushAll();
    try {
      touch(0x40_0000n, true);
      cpu.setMode(0, false);
      touch(0xc040_0000n, false);
    } finally {
      cpu.detach();
    }
    m.setRegisters(0, { cr3: BigInt(pdpt) << 12n, cr4: CR4_PAE, efer: EFER_NXE, cpl: 3 });
    cpu = m.attachHere(0);
    cpu.mmu.flushAll();
    try {
      touch(0x40_1000n, false);
    } finally {
      cpu.detach();
    }
    m.setRegisters(0, { cr0: DEFAULT_REGS.cr0, cr3, cr4: CR4_PAE | CR4_PGE, efer: DEFAULT_REGS.efer, cpl: 0 });
    cpu = m.attachHere(0);
    cpu.mmu.flushAll();
    cpu.detach();
    return [
      { label: 'varied-4level', cr3, la57: false },
      { label: 'varied-5level', cr3: BigInt(r5) << 12n, la57: true },
      { label: 'varied-32bit', cr3: BigInt(pd) << 12n, la57: false, paging: '32bit', pse: true },
      { label: 'varied-pae', cr3: BigInt(pdpt) << 12n, la57: false, paging: 'pae' },
    ];
  },
};

export const SCENARIOS: Scenario[] = [varied];

export function findScenario(name: string): Scenario | undefined {
  return SCENARIOS.find((s) => s.name === name);
}
