// Property: the walker follows the SDM (Vol. 3A 4.5-4.8) exactly — every #PF error-code bit,
// every rights rule of reference/x86-paging.md, A/D updates, 4- and 5-level roots, huge pages at
// both levels, #GP for non-canonical addresses — each as a named case through a real core's
// access path (TLB + walker).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bootLocal, Tables, core, hl } from './helpers.js';
import { CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CR4_PKE, CR4_SMAP, CR4_SMEP, EFER_LMA, EFER_LME, EFER_NXE } from '../src/hw/regs.js';
import { ACC_FETCH, ACC_READ, ACC_WRITE, PF_ID, PF_P, PF_PK, PF_RSVD, PF_U, PF_W, VEC_GP, VEC_PF, faultError, faultVector } from '../src/hw/fault.js';
import { PTE_A, PTE_D, PTE_PS, HI_XD } from '../src/hw/pte.js';
import type { Machine } from '../src/machine/machine.js';
import type { Cpu } from '../src/hw/cpu.js';

const CR0 = (CR0_PG | CR0_WP | 1) | 0;
const EFER = EFER_LME | EFER_LMA | EFER_NXE;
const VA = 0x0000_1234_5600_0000n;

interface Ctx {
  m: Machine;
  t: Tables;
  cpu: Cpu;
}

async function setup(opts: { cr0?: number; cr4?: number; efer?: number; pkru?: number; cpl?: 0 | 3; ac?: boolean; la57?: boolean } = {}): Promise<Ctx> {
  const m = await bootLocal();
  const t = new Tables(m, opts.la57 ?? false);
  const cpu = core(m, 0, {
    cr0: opts.cr0 ?? CR0, cr3: t.cr3(), cr4: (opts.cr4 ?? CR4_PAE) | (opts.la57 ? CR4_LA57 : 0),
    efer: opts.efer ?? EFER, pkru: opts.pkru ?? 0, cpl: opts.cpl ?? 3, ac: opts.ac ?? false,
  });
  return { m, t, cpu };
}

/** Runs one access; returns 'ok' or 'PF:<error code>' / 'GP'. */
function access(cpu: Cpu, va: bigint, acc: number): string {
  const [hi, lo] = hl(va);
  const r = cpu.mmu.translate(hi, lo, acc);
  if (r >= 0) return 'ok';
  if (faultVector(r) === VEC_GP) return 'GP';
  assert.is(faultVector(r), VEC_PF);
  return `PF:${faultError(r)}`;
}

const pf = (e: number): string => `PF:${e}`;
const W = suite('walker: #PF error codes and rights');

W('not-present: error code has P=0, with W and U describing the access', async () => {
  const { cpu } = await setup({ cpl: 3 });
  assert.is(access(cpu, VA, ACC_READ), pf(PF_U));
  assert.is(access(cpu, VA, ACC_WRITE), pf(PF_W | PF_U));
  cpu.setMode(0, false);
  assert.is(access(cpu, VA, ACC_READ), pf(0));
  assert.is(access(cpu, VA, ACC_WRITE), pf(PF_W));
});

W('CR2 holds the faulting linear address', async () => {
  const { cpu } = await setup();
  access(cpu, VA + 0x18n, ACC_READ);
  assert.is(`${(cpu.mmu.cr2hi >>> 0).toString(16)}:${(cpu.mmu.cr2lo >>> 0).toString(16)}`, '1234:56000018');
});

W('I/D is set for a fetch only when EFER.NXE or CR4.SMEP is set', async () => {
  const a = await setup({ efer: EFER_LME | EFER_LMA });
  assert.is(access(a.cpu, VA, ACC_FETCH), pf(PF_U));
  const b = await setup({ efer: EFER });
  assert.is(access(b.cpu, VA, ACC_FETCH), pf(PF_U | PF_ID));
  const c = await setup({ efer: EFER_LME | EFER_LMA, cr4: CR4_PAE | CR4_SMEP });
  assert.is(access(c.cpu, VA, ACC_FETCH), pf(PF_U | PF_ID));
});

W('RSVD: a leaf with an address bit at or above MAXPHYADDR (46) faults with P|RSVD', async () => {
  const { m, t, cpu } = await setup();
  t.map(VA, { write: true, user: true });
  const w = t.entryWord(VA);
  m.mem[w + 1] |= 1 << (46 - 32);
  assert.is(access(cpu, VA, ACC_READ), pf(PF_P | PF_RSVD | PF_U));
  assert.is(access(cpu, VA, ACC_WRITE), pf(PF_P | PF_RSVD | PF_W | PF_U));
});

W('RSVD: XD (bit 63) is reserved when EFER.NXE = 0', async () => {
  const { m, t, cpu } = await setup({ efer: EFER_LME | EFER_LMA });
  t.map(VA, { user: true, nx: true });
  assert.is(access(cpu, VA, ACC_READ), pf(PF_P | PF_RSVD | PF_U));
  cpu.wrEfer(EFER);
  assert.is(access(cpu, VA, ACC_READ), 'ok');
  assert.ok((m.mem[t.entryWord(VA) + 1] & HI_XD) !== 0);
});

W('RSVD: PS is reserved in a PML4E', async () => {
  const { m, t, cpu } = await setup();
  t.map(VA, { user: true });
  m.mem[t.entryWord(VA, 39)] |= PTE_PS;
  assert.is(access(cpu, VA, ACC_READ), pf(PF_P | PF_RSVD | PF_U));
});

W('RSVD: address bits 20:13 of a 2 MiB leaf and 29:13 of a 1 GiB leaf are reserved', async () => {
  const { m, t, cpu } = await setup();
  const va2 = 0x4000_0000n * 3n + 0x20_0000n * 5n;
  t.map(va2, { user: true }, 21);
  m.mem[t.entryWord(va2, 21)] |= 1 << 13;
  assert.is(access(cpu, va2, ACC_READ), pf(PF_P | PF_RSVD | PF_U));
  const va1 = 0x80_0000_0000n * 2n;
  t.map(va1, { user: true }, 30, 0);
  m.mem[t.entryWord(va1, 30)] |= 1 << 20;
  assert.is(access(cpu, va1 + 0x1000n, ACC_READ), pf(PF_P | PF_RSVD | PF_U));
});

W('RSVD is only checked in present entries', async () => {
  const { m, t, cpu } = await setup();
  t.map(VA, { user: true });
  const w = t.entryWord(VA);
  m.mem[w + 1] |= 1 << (47 - 32);
  m.mem[w] &= ~1;
  assert.is(access(cpu, VA, ACC_READ), pf(PF_U));
});

W('user access to a supervisor page: P|U; a supervisor page anywhere in the chain is supervisor', async () => {
  const { m, t, cpu } = await setup();
  t.map(VA, { write: true, user: false });
  assert.is(access(cpu, VA, ACC_READ), pf(PF_P | PF_U));
  const va = VA + 0x20_0000n;
  t.map(va, { write: true, user: true });
  m.mem[t.entryWord(va, 21)] &= ~4; // U/S = 0 in the PDE
  assert.is(access(cpu, va, ACC_READ), pf(PF_P | PF_U));
});

W('user write needs R/W = 1 at every level', async () => {
  const { m, t, cpu } = await setup();
  t.map(VA, { write: false, user: true });
  assert.is(access(cpu, VA, ACC_READ), 'ok');
  assert.is(access(cpu, VA, ACC_WRITE), pf(PF_P | PF_W | PF_U));
  const va = VA + 0x40_0000n;
  t.map(va, { write: true, user: true });
  m.mem[t.entryWord(va, 30)] &= ~2; // R/W = 0 in the PDPTE
  assert.is(access(cpu, va, ACC_WRITE), pf(PF_P | PF_W | PF_U));
});

W('supervisor write to a read-only page: allowed with CR0.WP = 0, P|W with WP = 1', async () => {
  const { m, t, cpu } = await setup({ cpl: 0, cr0: (CR0_PG | 1) | 0 });
  t.map(VA, { write: false, user: false });
  assert.is(access(cpu, VA, ACC_WRITE), 'ok');
  assert.ok((m.mem[t.entryWord(VA)] & PTE_D) !== 0, 'D set by the allowed write');
  const va = VA + 0x1000n;
  t.map(va, { write: false, user: false });
  cpu.movCr0(CR0);
  assert.is(access(cpu, va, ACC_WRITE), pf(PF_P | PF_W));
});

W('SMAP: supervisor data access to a user page faults unless EFLAGS.AC = 1', async () => {
  const { t, cpu } = await setup({ cpl: 0, cr4: CR4_PAE | CR4_SMAP });
  t.map(VA, { write: true, user: true });
  assert.is(access(cpu, VA, ACC_READ), pf(PF_P));
  assert.is(access(cpu, VA, ACC_WRITE), pf(PF_P | PF_W));
  cpu.setMode(0, true);
  assert.is(access(cpu, VA, ACC_READ), 'ok');
  assert.is(access(cpu, VA, ACC_WRITE), 'ok');
});

W('SMEP: supervisor fetch from a user page faults with P|I/D', async () => {
  const { t, cpu } = await setup({ cpl: 0, cr4: CR4_PAE | CR4_SMEP });
  t.map(VA, { user: true });
  assert.is(access(cpu, VA, ACC_FETCH), pf(PF_P | PF_ID));
  assert.is(access(cpu, VA, ACC_READ), 'ok');
});

W('without SMEP/SMAP the supervisor may fetch and read user pages', async () => {
  const { t, cpu } = await setup({ cpl: 0 });
  t.map(VA, { user: true });
  assert.is(access(cpu, VA, ACC_FETCH), 'ok');
  assert.is(access(cpu, VA, ACC_READ), 'ok');
});

W('XD: a fetch from an execute-disable page faults with P|I/D; XD at any level counts', async () => {
  const { m, t, cpu } = await setup();
  t.map(VA, { user: true, nx: true });
  assert.is(access(cpu, VA, ACC_FETCH), pf(PF_P | PF_ID | PF_U));
  assert.is(access(cpu, VA, ACC_READ), 'ok');
  const va = 0x7f00_0000_0000n;
  t.map(va, { user: true });
  assert.is(access(cpu, va, ACC_FETCH), 'ok');
  cpu.mmu.invlpg(...hl(va));
  m.mem[t.entryWord(va, 39) + 1] |= HI_XD; // XD in the PML4E
  assert.is(access(cpu, va, ACC_FETCH), pf(PF_P | PF_ID | PF_U));
});

W('protection keys: AD denies data access, WD denies writes, with PK in the error code', async () => {
  const { t, cpu } = await setup({ cr4: CR4_PAE | CR4_PKE, pkru: 1 << (2 * 3) });
  t.map(VA, { write: true, user: true, pkey: 3 });
  assert.is(access(cpu, VA, ACC_READ), pf(PF_P | PF_U | PF_PK));
  assert.is(access(cpu, VA, ACC_WRITE), pf(PF_P | PF_W | PF_U | PF_PK));
  cpu.wrpkru(1 << (2 * 3 + 1));
  assert.is(access(cpu, VA, ACC_READ), 'ok');
  assert.is(access(cpu, VA, ACC_WRITE), pf(PF_P | PF_W | PF_U | PF_PK));
  cpu.wrpkru(0);
  assert.is(access(cpu, VA, ACC_WRITE), 'ok');
});

W('protection keys never apply to fetches, nor to supervisor-mode addresses, nor without CR4.PKE', async () => {
  const { t, cpu } = await setup({ cr4: CR4_PAE | CR4_PKE, pkru: -1 });
  t.map(VA, { write: true, user: true, pkey: 5 });
  assert.is(access(cpu, VA, ACC_FETCH), 'ok');
  const sup = VA + 0x1000n;
  t.map(sup, { write: true, user: false, pkey: 5 });
  cpu.setMode(0, false);
  assert.is(access(cpu, sup, ACC_WRITE), 'ok');
  cpu.setMode(3, false);
  cpu.movCr4(CR4_PAE);
  assert.is(access(cpu, VA, ACC_WRITE), 'ok');
});

W('protection keys: supervisor access to a user page obeys AD always, WD only when CR0.WP = 1', async () => {
  const { t, cpu } = await setup({ cpl: 0, cr4: CR4_PAE | CR4_PKE, pkru: 2 << (2 * 7) });
  t.map(VA, { write: true, user: true, pkey: 7 });
  assert.is(access(cpu, VA, ACC_WRITE), pf(PF_P | PF_W | PF_PK));
  cpu.movCr0((CR0_PG | 1) | 0);
  assert.is(access(cpu, VA, ACC_WRITE), 'ok');
  cpu.wrpkru(1 << (2 * 7));
  assert.is(access(cpu, VA, ACC_READ), pf(PF_P | PF_PK));
});

W('WRPKRU takes effect at once with no TLB flush: a cached translation is re-checked', async () => {
  const { m, cpu } = await setup({ cr4: CR4_PAE | CR4_PKE });
  const t = new Tables(m);
  cpu.movCr3(0, Number(t.cr3()));
  t.map(VA, { write: true, user: true, pkey: 2 });
  assert.is(access(cpu, VA, ACC_WRITE), 'ok');
  const misses = cpu.ctr[4];
  cpu.wrpkru(1 << (2 * 2));
  assert.is(access(cpu, VA, ACC_READ), pf(PF_P | PF_U | PF_PK));
  assert.is(cpu.ctr[4], misses, 'denied from the TLB, no walk');
});

W('#GP(0), not #PF, for a non-canonical address (4-level: bits 63:47 must agree)', async () => {
  const { cpu } = await setup();
  assert.is(access(cpu, 0x0000_8000_0000_0000n, ACC_READ), 'GP');
  assert.is(access(cpu, 0xffff_7fff_ffff_f000n, ACC_READ), 'GP');
  assert.is(access(cpu, 0xffff_8000_0000_0000n, ACC_READ), pf(PF_U));
});

const L = suite('walker: levels, page sizes, A/D');

L('5-level paging (CR4.LA57) translates addresses above 2^47 that 4-level calls non-canonical', async () => {
  const { m, t, cpu } = await setup({ la57: true });
  const va = 0x00ab_cdef_1234_5000n;
  const f = t.map(va, { write: true, user: true });
  m.mem[f * 1024 + 2] = 0x1234;
  const [hi, lo] = hl(va + 8n);
  assert.is(cpu.mmu.load64(hi, lo), 0);
  assert.is(cpu.mmu.valLo, 0x1234);
  assert.is(access(cpu, 0x0100_0000_0000_0000n, ACC_READ), 'GP');
  assert.is(access(cpu, 0xff00_0000_0000_0000n, ACC_READ), pf(PF_U));
  const four = await setup();
  assert.is(access(four.cpu, va, ACC_READ), 'GP');
});

L('2 MiB and 1 GiB pages translate with the offset inside the page', async () => {
  const { m, t, cpu } = await setup();
  const va2 = 0x40_0000_0000n + 0x20_0000n * 7n;
  const f2 = t.map(va2, { write: true, user: true }, 21);
  m.mem[(f2 + 300) * 1024 + 6] = 77;
  let [hi, lo] = hl(va2 + 300n * 4096n + 24n);
  assert.is(cpu.mmu.load64(hi, lo), 0);
  assert.is(cpu.mmu.valLo, 77);
  const va1 = 0x80_0000_0000n;
  t.map(va1, { write: true, user: true }, 30, 0);
  m.mem[1000 * 1024 + 4] = 99; // frame 1000 lies inside the 1 GiB page at frame 0
  [hi, lo] = hl(va1 + 1000n * 4096n + 16n);
  assert.is(cpu.mmu.load64(hi, lo), 0);
  assert.is(cpu.mmu.valLo, 99);
  assert.equal(m.tlb(0).map((e) => e.shift).sort(), [21, 30]);
});

L('A is set in every entry used; D only in the leaf and only on a write', async () => {
  const { m, t, cpu } = await setup();
  t.map(VA, { write: true, user: true });
  const words = [39, 30, 21, 12].map((s) => t.entryWord(VA, s));
  for (const w of words) assert.is(m.mem[w] & (PTE_A | PTE_D), 0);
  assert.is(access(cpu, VA, ACC_READ), 'ok');
  for (const w of words) assert.is(m.mem[w] & (PTE_A | PTE_D), PTE_A);
  assert.is(access(cpu, VA, ACC_WRITE), 'ok');
  assert.is(m.mem[words[3]] & PTE_D, PTE_D);
  for (const w of words.slice(0, 3)) assert.is(m.mem[w] & PTE_D, 0);
});

L('a clean page is cached without write permission: the first write walks again and sets D', async () => {
  const { m, t, cpu } = await setup();
  t.map(VA, { write: true, user: true });
  assert.is(access(cpu, VA, ACC_READ), 'ok');
  const walks = cpu.ctr[5];
  assert.is(access(cpu, VA, ACC_READ), 'ok');
  assert.is(cpu.ctr[5], walks, 'second read hits');
  assert.is(access(cpu, VA, ACC_WRITE), 'ok');
  assert.is(cpu.ctr[5], walks + 1, 'the write walked');
  assert.ok((m.mem[t.entryWord(VA)] & PTE_D) !== 0);
  assert.is(access(cpu, VA, ACC_WRITE), 'ok');
  assert.is(cpu.ctr[5], walks + 1, 'later writes hit');
});

L('a denied access leaves the leaf A clear (as QEMU), non-leaf A set', async () => {
  const { m, t, cpu } = await setup();
  t.map(VA, { write: true, user: false });
  assert.is(access(cpu, VA, ACC_READ), pf(PF_P | PF_U));
  assert.is(m.mem[t.entryWord(VA)] & PTE_A, 0);
  assert.is(m.mem[t.entryWord(VA, 21)] & PTE_A, PTE_A);
});

L('memory that is not installed reads as all ones and drops writes', async () => {
  const { t, cpu } = await setup();
  t.map(VA, { write: true, user: true }, 12, 1 << 20); // 4 GiB: far beyond 8 MiB
  const [hi, lo] = hl(VA);
  assert.is(cpu.mmu.store64(hi, lo, 1, 2), 0);
  assert.is(cpu.mmu.load64(hi, lo), 0);
  assert.is(cpu.mmu.valLo, -1);
  assert.is(cpu.mmu.valHi, -1);
});

L('side-effect-free translate (controller) sets no A/D bit and fills no TLB', async () => {
  const { m, t } = await setup();
  t.map(VA + 0x5000n, { write: true, user: true });
  const before = m.mem.slice();
  const tr = m.translate(VA + 0x5008n, { cr3: t.cr3(), cpl: 3, access: 'write' });
  assert.ok(tr.ok);
  if (tr.ok) assert.is(tr.pa & 0xfffn, 8n);
  assert.equal(m.mem, before);
  assert.is(m.tlb(0).length, 0);
});

W.run();
L.run();
