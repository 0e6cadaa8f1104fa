// Paging-structure caches (SDM 4.10.3; src/hw/psc.ts, the machine option tlb.psc): a core's PDE
// cache keeps the page table a PDE named after the PDE changes, until an invalidation the SDM
// lists (4.10.4.1) removes it: INVLPG (every entry of the current PCID, whatever the address),
// INVPCID type 0 (the address's entry in its PCID) and type 1, a CR3 load that flushes (not one
// with bit 63 set), a #PF (the faulting address's entry). Entries of another PCID survive the
// current PCID's INVLPG. With the option off nothing is cached: the walk reads the new PDE. The
// kernel frees page tables with INVPCID type 2; the race free-table-without-flush shows why.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bootLocal, Tables, core, hl } from './helpers.js';
import { CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PCIDE, EFER_LMA, EFER_LME, EFER_NXE } from '../src/hw/regs.js';
import { ACC_READ, faultVector, VEC_PF } from '../src/hw/fault.js';
import { FRAME_WORDS, PTE_P } from '../src/hw/pte.js';
import type { Cpu } from '../src/hw/cpu.js';
import type { Machine } from '../src/machine/machine.js';
import { validateConfig } from '../src/machine/config.js';
import { freeTableRace } from '../src/workloads/races-seeds.js';

const CR0 = (CR0_PG | CR0_WP | 1) | 0;
const EFER = EFER_LME | EFER_LMA | EFER_NXE;
const A = 0x10_0000n;
const B = 0x10_1000n;
const C = 0x10_2000n;
const D = 0x10_3000n;
const FAR = 0x4000_0000n; // another 2 MiB region (and another PDPT entry's 1 GiB)

/**
 * Tables mapping A, B and C (not D) under one page table, and a second page table for the same
 * 2 MiB region mapping B, C and D to other frames. Returns the PDE's word and both tables.
 */
async function setup(psc: boolean): Promise<{ m: Machine; t: Tables; cpu: Cpu; pde: number; oldPt: number; newPt: number; frames: Record<string, number> }> {
  const m = await bootLocal({ tlb: { psc } });
  const t = new Tables(m);
  const frames: Record<string, number> = {};
  for (const [n, va] of [['A', A], ['B', B], ['C', C]] as const) frames[n] = t.map(va, { write: true });
  t.map(FAR, { write: true });
  const pde = t.entryWord(A, 21);
  const oldPt = m.mem[pde] >>> 12;
  const newPt = m.frames.allocZeroed(0);
  m.mem.copyWithin(newPt * FRAME_WORDS, oldPt * FRAME_WORDS, (oldPt + 1) * FRAME_WORDS);
  for (const [n, i] of [['B2', 257], ['C2', 258], ['D2', 259]] as const) {
    frames[n] = m.frames.allocZeroed(0);
    m.mem[newPt * FRAME_WORDS + i * 2] = (frames[n] << 12) | PTE_P | 2;
    m.mem[newPt * FRAME_WORDS + i * 2 + 1] = 0;
  }
  const cpu = core(m, 0, { cr0: CR0, cr3: t.cr3(1), cr4: CR4_PAE | CR4_PGE | CR4_PCIDE, efer: EFER, cpl: 0 });
  return { m, t, cpu, pde, oldPt, newPt, frames };
}

/** The frame a read of va reaches, or 'PF'. */
function frameOf(cpu: Cpu, va: bigint): number | string {
  const w = cpu.mmu.translate(...hl(va), ACC_READ);
  if (w < 0) return faultVector(w) === VEC_PF ? 'PF' : `fault ${w}`;
  return Math.floor(w / FRAME_WORDS);
}

/** Walks A (filling the PDE cache), then points the PDE at the new table, invalidating nothing. */
function repoint(c: Awaited<ReturnType<typeof setup>>): void {
  assert.is(frameOf(c.cpu, A), c.frames.A);
  c.m.mem[c.pde] = (c.newPt << 12) | (c.m.mem[c.pde] & 0xfff);
}

const P = suite('paging-structure caches');

P('SDM 4.10.3.2: with tlb.psc a walk uses the cached PDE after the PDE changed; without it, the new PDE', async () => {
  const on = await setup(true);
  repoint(on);
  assert.is(frameOf(on.cpu, B), on.frames.B, 'the PDE cache still names the old page table');
  assert.is(on.cpu.mmu.psc?.size(), 1);
  const off = await setup(false);
  repoint(off);
  assert.is(frameOf(off.cpu, B), off.frames.B2, 'no cache: the walk reads the new PDE');
  assert.is(off.cpu.mmu.psc, null);
  on.cpu.detach();
  off.cpu.detach();
});

P('SDM 4.10.4.1 INVLPG: every PDE-cache entry of the current PCID goes, whatever its address', async () => {
  const c = await setup(true);
  repoint(c);
  c.cpu.mmu.invlpg(...hl(FAR));
  assert.is(frameOf(c.cpu, B), c.frames.B2, 'an INVLPG of another region dropped the entry');
  c.cpu.detach();
});

P('SDM 4.10.4.1 INVPCID type 0 drops only the entry for its address and PCID; type 1 drops the PCID\'s', async () => {
  const c = await setup(true);
  repoint(c);
  assert.is(c.cpu.mmu.invpcid(0, 1, ...hl(FAR)), 0);
  assert.is(c.cpu.mmu.invpcid(0, 2, ...hl(A)), 0);
  assert.is(frameOf(c.cpu, B), c.frames.B, 'another address, another PCID: kept');
  assert.is(c.cpu.mmu.invpcid(0, 1, ...hl(D)), 0);
  assert.is(frameOf(c.cpu, C), c.frames.C2, 'an address of the same 2 MiB region: dropped');
  const d = await setup(true);
  repoint(d);
  assert.is(d.cpu.mmu.invpcid(1, 1, 0, 0), 0);
  assert.is(frameOf(d.cpu, B), d.frames.B2);
  c.cpu.detach();
  d.cpu.detach();
});

P('SDM 4.10.4.1 MOV to CR3: a load with bit 63 set keeps the PCID\'s entries, a flushing load drops them', async () => {
  const c = await setup(true);
  repoint(c);
  assert.is(c.cpu.movCr3(1 << 31, Number(c.t.cr3(1))), 0);
  assert.is(frameOf(c.cpu, B), c.frames.B, 'no-flush load: kept');
  assert.is(c.cpu.movCr3(0, Number(c.t.cr3(1))), 0);
  assert.is(frameOf(c.cpu, C), c.frames.C2, 'flushing load: dropped');
  c.cpu.detach();
});

P('SDM 4.10.4.1 page faults: a #PF through a stale entry drops the entries for its address, and the retry walks the new PDE', async () => {
  const c = await setup(true);
  repoint(c);
  assert.is(frameOf(c.cpu, D), 'PF', 'the old page table has no D');
  assert.is(frameOf(c.cpu, D), c.frames.D2, 'the retried access walks from the root');
  c.cpu.detach();
});

P('entries of another PCID survive the current PCID\'s INVLPG (the reason a kernel freeing page tables must flush every PCID)', async () => {
  const c = await setup(true);
  repoint(c); // PCID 1 caches the old page table
  assert.is(c.cpu.movCr3(1 << 31, Number(c.t.cr3(2))), 0);
  c.cpu.mmu.invlpg(...hl(B)); // under PCID 2
  assert.is(c.cpu.movCr3(1 << 31, Number(c.t.cr3(1))), 0);
  assert.is(frameOf(c.cpu, B), c.frames.B, 'PCID 1 still walks the old page table');
  assert.is(c.cpu.mmu.invpcid(3, 0, 0, 0), 0);
  assert.is(frameOf(c.cpu, C), c.frames.C2, 'INVPCID type 3 (every PCID) dropped it');
  c.cpu.detach();
});

P('a kernel that frees page tables must invalidate every PCID: caught with the injection, clean without it, invisible without a PSC (race free-table-without-flush)', async () => {
  for (const [inject, psc] of [[true, true], [false, true], [true, false]]) {
    const r = await freeTableRace(inject, psc);
    assert.ok(r.ok, `inject ${inject}, psc ${psc}:\n${r.steps.join('\n')}`);
  }
});

P('tlb.psc takes true or false', () => {
  const bad = validateConfig({ tlb: { psc: 'yes' as unknown as boolean } });
  assert.ok('error' in bad && /tlb.psc must be true or false/.test(bad.error), JSON.stringify(bad));
  const on = validateConfig({ tlb: { psc: true } });
  assert.ok('config' in on && on.config.tlb.psc);
  const off = validateConfig({});
  assert.ok('config' in off && !off.config.tlb.psc);
});

P.run();
