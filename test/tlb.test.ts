// Property: each core's TLB follows the SDM's invalidation rules (Vol. 3A 4.10.4): INVLPG,
// INVPCID types 0-3, MOV to CR3 with and without the no-flush bit, CR4.PGE/PCIDE changes, global
// entries, PCID tags, no negative caching, a #PF dropping the page, set-associative capacity per
// page size — and, like hardware, no coherence with the page tables without an invalidation.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bootLocal, Tables, core, hl } from './helpers.js';
import { CR0_PG, CR0_WP, CR4_PAE, CR4_PCIDE, CR4_PGE, EFER_LMA, EFER_LME, EFER_NXE } from '../src/hw/regs.js';
import { ACC_READ, ACC_WRITE, faultError } from '../src/hw/fault.js';
import { PTE_P, PTE_RW } from '../src/hw/pte.js';
import type { Machine } from '../src/machine/machine.js';
import type { Cpu } from '../src/hw/cpu.js';
import { CTR } from '../src/hw/layout.js';

const CR0 = (CR0_PG | CR0_WP | 1) | 0;
const EFER = EFER_LME | EFER_LMA | EFER_NXE;
const A = 0x10_0000n;
const B = 0x20_0000n;
const G = 0xffff_8000_0010_0000n;

interface Ctx { m: Machine; t: Tables; cpu: Cpu }

async function setup(cr4 = CR4_PAE | CR4_PGE | CR4_PCIDE, pcid = 1, tlb = {}): Promise<Ctx> {
  const m = await bootLocal({ tlb });
  const t = new Tables(m);
  t.map(A, { write: true, user: false });
  t.map(B, { write: true, user: false });
  t.map(G, { write: true, user: false, global: true });
  const cpu = core(m, 0, { cr0: CR0, cr3: t.cr3(pcid & 0xfff), cr4, efer: EFER, cpl: 0 });
  return { m, t, cpu };
}

function touch(cpu: Cpu, va: bigint, acc = ACC_READ): number {
  const [hi, lo] = hl(va);
  return cpu.mmu.translate(hi, lo, acc);
}

/** Cached pages of core 0 as "pcid:va" / "g:va" strings. */
function cached(m: Machine): string[] {
  return m.tlb(0).map((e) => `${e.global ? 'g' : e.pcid}:${e.va.toString(16)}`).sort();
}

/** Loads A, B and G under PCID 1, then A under PCID 2 (same tables). */
function fillTwoPcids(c: Ctx): void {
  for (const va of [A, B, G]) touch(c.cpu, va);
  c.cpu.movCr3(0, Number(c.t.cr3(2)));
  touch(c.cpu, A);
  c.cpu.movCr3(1 << 31, Number(c.t.cr3(1))); // back to PCID 1 without flushing
}

const T = suite('TLB invalidation rules');

T('entries are tagged with the PCID; global entries match every PCID', async () => {
  const c = await setup();
  fillTwoPcids(c);
  assert.equal(cached(c.m), ['1:100000', '1:200000', '2:100000', 'g:ffff800000100000']);
  c.cpu.movCr3(1 << 31, Number(c.t.cr3(2)));
  const misses = c.cpu.ctr[CTR.tlbMisses];
  touch(c.cpu, G);
  touch(c.cpu, A);
  assert.is(c.cpu.ctr[CTR.tlbMisses], misses, 'G and PCID 2 A both hit');
  touch(c.cpu, B);
  assert.is(c.cpu.ctr[CTR.tlbMisses], misses + 1, 'B was cached only under PCID 1');
});

T('INVLPG drops the page in the current PCID and its global entry, not other PCIDs', async () => {
  const c = await setup();
  fillTwoPcids(c);
  c.cpu.mmu.invlpg(...hl(A));
  c.cpu.mmu.invlpg(...hl(G));
  assert.equal(cached(c.m), ['1:200000', '2:100000']);
});

T('INVPCID type 0 drops one address in one PCID, never a global entry', async () => {
  const c = await setup();
  fillTwoPcids(c);
  c.cpu.mmu.invpcid(0, 2, ...hl(A));
  c.cpu.mmu.invpcid(0, 1, ...hl(G));
  assert.equal(cached(c.m), ['1:100000', '1:200000', 'g:ffff800000100000']);
});

T('INVPCID type 1 drops every non-global entry of one PCID', async () => {
  const c = await setup();
  fillTwoPcids(c);
  c.cpu.mmu.invpcid(1, 1, 0, 0);
  assert.equal(cached(c.m), ['2:100000', 'g:ffff800000100000']);
});

T('INVPCID type 2 drops everything, globals included; type 3 everything but globals', async () => {
  const c = await setup();
  fillTwoPcids(c);
  c.cpu.mmu.invpcid(3, 0, 0, 0);
  assert.equal(cached(c.m), ['g:ffff800000100000']);
  fillTwoPcids(c);
  c.cpu.mmu.invpcid(2, 0, 0, 0);
  assert.equal(cached(c.m), []);
});

T('MOV to CR3 with PCIDE = 1 drops the new PCID non-global entries unless bit 63 is set', async () => {
  const c = await setup();
  fillTwoPcids(c);
  c.cpu.movCr3(1 << 31, Number(c.t.cr3(2)));
  assert.is(cached(c.m).length, 4, 'no-flush bit: nothing dropped');
  c.cpu.movCr3(0, Number(c.t.cr3(2)));
  assert.equal(cached(c.m), ['1:100000', '1:200000', 'g:ffff800000100000']);
});

T('MOV to CR3 with PCIDE = 0 drops all non-global entries; globals survive', async () => {
  const c = await setup(CR4_PAE | CR4_PGE, 0);
  for (const va of [A, B, G]) touch(c.cpu, va);
  c.cpu.movCr3(0, Number(c.t.cr3(0)));
  assert.equal(cached(c.m), ['g:ffff800000100000']);
});

T('without CR4.PGE the G bit is ignored: a CR3 load drops the page too', async () => {
  const c = await setup(CR4_PAE, 0);
  touch(c.cpu, G);
  c.cpu.movCr3(0, Number(c.t.cr3(0)));
  assert.equal(cached(c.m), []);
});

T('changing CR4.PGE, or clearing CR4.PCIDE, flushes everything including globals', async () => {
  const c = await setup();
  fillTwoPcids(c);
  c.cpu.movCr4(CR4_PAE | CR4_PCIDE);
  assert.equal(cached(c.m), []);
  const d = await setup();
  fillTwoPcids(d);
  d.cpu.movCr4(CR4_PAE | CR4_PGE);
  assert.equal(cached(d.m), []);
});

T('no negative caching: after a not-present fault, mapping the page needs no flush', async () => {
  const c = await setup();
  const va = 0x30_0000n;
  assert.ok(touch(c.cpu, va) < 0);
  c.t.map(va, { write: true });
  assert.ok(touch(c.cpu, va) >= 0);
});

T('no coherence without invalidation: a changed entry is not seen until INVLPG', async () => {
  const c = await setup();
  const f1 = c.m.frames.allocZeroed(0);
  c.m.mem[f1 * 1024] = 111;
  const w = c.t.entryWord(A);
  const [hi, lo] = hl(A);
  assert.is(c.cpu.mmu.load64(hi, lo), 0);
  const old = c.cpu.mmu.valLo;
  c.m.mem[w] = (c.m.mem[w] & 0xfff) | (f1 << 12);
  assert.is(c.cpu.mmu.load64(hi, lo), 0);
  assert.is(c.cpu.mmu.valLo, old, 'the stale translation is still used');
  c.cpu.mmu.invlpg(hi, lo);
  assert.is(c.cpu.mmu.load64(hi, lo), 0);
  assert.is(c.cpu.mmu.valLo, 111);
});

T('a permission increase without flush costs at most one spurious #PF, which drops the entry', async () => {
  const c = await setup();
  const w = c.t.entryWord(A);
  c.m.mem[w] &= ~PTE_RW;
  assert.ok(touch(c.cpu, A) >= 0, 'read caches a read-only translation');
  c.m.mem[w] |= PTE_RW;
  const r = touch(c.cpu, A, ACC_WRITE);
  assert.ok(r < 0, 'the stale entry denies the write');
  assert.is(faultError(r), 0b11, 'P|W');
  assert.equal(cached(c.m).includes('1:100000'), false, '#PF dropped the entry');
  assert.ok(touch(c.cpu, A, ACC_WRITE) >= 0, 'the retry walks and succeeds');
});

T('a permission decrease is not seen until invalidated (why shootdowns exist)', async () => {
  const c = await setup();
  assert.ok(touch(c.cpu, A, ACC_WRITE) >= 0);
  const w = c.t.entryWord(A);
  c.m.mem[w] &= ~PTE_P;
  assert.ok(touch(c.cpu, A, ACC_WRITE) >= 0, 'stale writable translation still used');
  c.cpu.mmu.invlpg(...hl(A));
  assert.ok(touch(c.cpu, A, ACC_WRITE) < 0);
});

const C = suite('TLB capacity');

C('separate arrays per page size, each set-associative with its configured ways', async () => {
  const c = await setup(CR4_PAE, 0, { entries4k: 8, ways4k: 2, entries2m: 4, ways2m: 4, entries1g: 2, ways1g: 2 });
  // 6 pages that all fall into 4 KiB set 0 (4 sets): only 2 can stay.
  for (let i = 0; i < 6; i++) {
    const va = 0x4000_0000n + BigInt(i) * 4n * 4096n;
    c.t.map(va, { write: true });
    assert.ok(touch(c.cpu, va) >= 0);
  }
  assert.is(c.m.tlb(0).filter((e) => e.shift === 12).length, 2);
  for (let i = 0; i < 3; i++) {
    const va = 0x80_0000_0000n + BigInt(i) * 0x20_0000n;
    c.t.map(va, { write: true }, 21, 0);
    assert.ok(touch(c.cpu, va) >= 0);
  }
  assert.is(c.m.tlb(0).filter((e) => e.shift === 21).length, 3);
});

C('the default geometry is Skylake L1 DTLB: 64 x 4 KiB (4-way), 32 x 2 MiB, 4 x 1 GiB', async () => {
  const c = await setup(CR4_PAE, 0);
  for (let i = 0; i < 200; i++) {
    const va = 0x1_0000_0000n + BigInt(i) * 4096n;
    c.t.map(va, { write: true });
    touch(c.cpu, va);
  }
  assert.is(c.m.tlb(0).filter((e) => e.shift === 12).length, 64);
});

T.run();
C.run();
