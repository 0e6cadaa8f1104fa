// The SDM's rules (issue 14), each test naming its section: CR2 (only a #PF loads it), the
// control-register moves and INVPCID (a refused instruction raises #GP(0) and changes nothing: no
// register, no TLB entry), implicit supervisor-mode accesses, access sizes and page-crossing
// accesses, and CR0.PG = 0.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bootLocal, Tables, core, hl } from './helpers.js';
import { CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CR4_PCIDE, CR4_PGE, CR4_SMAP, CR4_SMEP, EFER_LMA, EFER_LME, EFER_NXE } from '../src/hw/regs.js';
import { ACC_READ, ACC_WRITE, FAULT_GP0, faultError, faultVector, VEC_PF } from '../src/hw/fault.js';
import { R_USER, R_WRITE } from '../src/kernel/ops.js';
import * as faults from '../src/kernel/fault.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as spaces from '../src/kernel/space.js';
import * as vm from '../src/kernel/vm.js';
import { Machine } from '../src/machine/machine.js';
import type { Cpu } from '../src/hw/cpu.js';

const CR0 = (CR0_PG | CR0_WP | 1) | 0;
const EFER = EFER_LME | EFER_LMA | EFER_NXE;
const A = 0x10_0000n;
const G = 0xffff_8000_0010_0000n;

async function setup(cr4 = CR4_PAE | CR4_PGE | CR4_PCIDE, pcid = 1): Promise<{ m: Machine; t: Tables; cpu: Cpu }> {
  const m = await bootLocal();
  const t = new Tables(m);
  t.map(A, { write: true, user: false });
  t.map(G, { write: true, user: false, global: true });
  const cpu = core(m, 0, { cr0: CR0, cr3: t.cr3(pcid), cr4, efer: EFER, cpl: 0 });
  return { m, t, cpu };
}

/** Cached pages of core 0 as "pcid:va" / "g:va". */
function cached(m: Machine): string[] {
  return m.tlb(0).map((e) => `${e.global ? 'g' : e.pcid}:${e.va.toString(16)}`).sort();
}

/** Loads A under PCIDs 1 and 2 and the global page G; ends on PCID 1. */
function fill(c: { t: Tables; cpu: Cpu }): void {
  c.cpu.mmu.translate(...hl(A), ACC_READ);
  c.cpu.mmu.translate(...hl(G), ACC_READ);
  c.cpu.movCr3(0, Number(c.t.cr3(2)));
  c.cpu.mmu.translate(...hl(A), ACC_READ);
  c.cpu.movCr3(1 << 31, Number(c.t.cr3(1)));
}

const S = suite('SDM rules: CR2, control registers, INVPCID');

S('SDM 6.15 (#PF, #GP): only a page fault loads CR2; a #GP leaves it, and the fault log keeps the address', async () => {
  const { m, cpu } = await setup();
  const missing = 0x7777_0000n;
  assert.is(faultVector(cpu.mmu.translate(...hl(missing), ACC_READ)), VEC_PF);
  assert.equal([cpu.mmu.cr2hi, cpu.mmu.cr2lo], hl(missing));
  const nonCanonical = 0x0000_8000_0000_0000n;
  assert.is(cpu.mmu.translate(...hl(nonCanonical), ACC_READ), FAULT_GP0);
  assert.equal([cpu.mmu.cr2hi, cpu.mmu.cr2lo], hl(missing), 'CR2 still holds the #PF address');
  assert.equal([cpu.mmu.faultHi, cpu.mmu.faultLo], hl(nonCanonical), 'the last fault address is the #GP one');
  cpu.detach();
  assert.is(m.registers(0).cr2, missing, 'the controller reads CR2');
  await m.shutdown();
});

S('SDM 6.15 through a program: the fault log shows the #GP address and CR2 unchanged', async () => {
  const pm = await Machine.boot({ cores: 1, nodes: 1, memory: '8MiB' });
  const t = new Tables(pm);
  pm.setRegisters(0, { cr3: t.cr3(0), cpl: 0, cr2: 0x1234_5000n });
  const [r] = await pm.run([{ core: 0, program: { kind: 'ops', ops: [{ op: 'load', va: '0x800000000000' }, { op: 'load', va: '0x5000' }] } }]);
  assert.is(r.faultLog.length, 2);
  assert.equal([r.faultLog[0].vector, r.faultLog[0].address, r.faultLog[0].cr2], [13, '0x800000000000', '0x12345000']);
  assert.equal([r.faultLog[1].vector, r.faultLog[1].address, r.faultLog[1].cr2], [14, '0x5000', '0x5000']);
  assert.is(pm.registers(0).cr2, 0x5000n);
  await pm.shutdown();
});

S('SDM 4.10.4.1: MOV to CR4 that sets SMEP drops the current PCID\'s entries (not other PCIDs\', not globals)', async () => {
  const c = await setup();
  fill(c);
  assert.equal(cached(c.m), ['1:100000', '2:100000', 'g:ffff800000100000']);
  assert.is(c.cpu.movCr4(c.cpu.regs.cr4 | CR4_SMEP), 0);
  assert.equal(cached(c.m), ['2:100000', 'g:ffff800000100000']);
  fill(c);
  assert.is(c.cpu.movCr4(c.cpu.regs.cr4 & ~CR4_SMEP), 0);
  assert.equal(cached(c.m), ['1:100000', '2:100000', 'g:ffff800000100000'], 'clearing SMEP drops nothing');
  c.cpu.detach();
  await c.m.shutdown();
});

S('SDM 2.5 / Vol. 2 MOV CRn: forbidden mode changes in IA-32e mode are #GP(0) and change nothing', async () => {
  const c = await setup(CR4_PAE | CR4_PGE);
  fill(c);
  const before = cached(c.m);
  const cr4 = c.cpu.regs.cr4;
  assert.is(c.cpu.movCr4(cr4 & ~CR4_PAE), FAULT_GP0, 'clearing PAE in IA-32e mode');
  assert.is(c.cpu.movCr4(cr4 | CR4_LA57), FAULT_GP0, 'changing LA57 with paging on');
  assert.is(c.cpu.movCr0(c.cpu.regs.cr0 & ~CR0_PG), FAULT_GP0, 'clearing PG in 64-bit mode');
  c.cpu.movCr3(0, Number(c.t.cr3(0)) | 0x18); // PWT|PCD in CR3[11:0] while PCIDE = 0
  const after3 = cached(c.m);
  assert.is(c.cpu.movCr4(cr4 | CR4_PCIDE), FAULT_GP0, 'setting PCIDE while CR3[11:0] != 0');
  assert.is(c.cpu.regs.cr4, cr4, 'CR4 unchanged');
  assert.ok(c.cpu.regs.cr0 & CR0_PG, 'CR0.PG unchanged');
  assert.equal(cached(c.m), after3, 'no TLB entry dropped by the refused moves');
  assert.ok(before.length > 0);
  c.cpu.detach();
  await c.m.shutdown();
});

S('Vol. 2 MOV CRn: MOV to CR3 with a reserved bit set is #GP(0), not masked; bit 63 is the no-flush bit only with PCIDE', async () => {
  const c = await setup();
  fill(c);
  const cr3 = [c.cpu.regs.cr3hi, c.cpu.regs.cr3lo];
  const before = cached(c.m);
  // MAXPHYADDR 40 by default: CR3 bits 62:40 are reserved.
  assert.is(c.cpu.movCr3(1 << 20, Number(c.t.cr3(1))), FAULT_GP0);
  assert.is(c.cpu.movCr3(1 << 30, Number(c.t.cr3(1))), FAULT_GP0);
  assert.equal([c.cpu.regs.cr3hi, c.cpu.regs.cr3lo], cr3);
  assert.equal(cached(c.m), before);
  assert.is(c.cpu.movCr3(1 << 31, Number(c.t.cr3(2))), 0, 'bit 63 with PCIDE = 1: no flush');
  c.cpu.detach();
  await c.m.shutdown();
  const d = await setup(CR4_PAE | CR4_PGE, 0);
  assert.is(d.cpu.movCr3(1 << 31, Number(d.t.cr3(0))), FAULT_GP0, 'bit 63 is reserved with PCIDE = 0');
  d.cpu.detach();
  await d.m.shutdown();
});

S('Vol. 2 INVPCID: #GP(0), invalidating nothing, for type > 3, a PCID above 4095, PCID != 0 with PCIDE = 0, a non-canonical type-0 address', async () => {
  const c = await setup();
  fill(c);
  const before = cached(c.m);
  assert.is(c.cpu.mmu.invpcid(4, 0, 0, 0), FAULT_GP0);
  assert.is(c.cpu.mmu.invpcid(1, 0x1000, 0, 0), FAULT_GP0);
  assert.is(c.cpu.mmu.invpcid(0, 1, ...hl(0x0000_8000_0010_0000n)), FAULT_GP0);
  assert.equal(cached(c.m), before);
  assert.is(c.cpu.mmu.invpcid(0, 1, ...hl(A)), 0);
  c.cpu.detach();
  await c.m.shutdown();
  const d = await setup(CR4_PAE | CR4_PGE, 0);
  d.cpu.mmu.translate(...hl(A), ACC_READ);
  assert.is(d.cpu.mmu.invpcid(1, 1, 0, 0), FAULT_GP0, 'PCID 1 with PCIDE = 0');
  assert.is(d.cpu.mmu.invpcid(0, 0, ...hl(A)), 0, 'PCID 0 with PCIDE = 0 is fine');
  assert.is(d.cpu.mmu.invpcid(2, 7, 0, 0), 0, 'types 2 and 3 ignore the PCID');
  d.cpu.detach();
  await d.m.shutdown();
});

S('an INVPCID or MOV to CR3 that faults in a program is a fault of the program, not an error of the run', async () => {
  const pm = await Machine.boot({ cores: 1, nodes: 1, memory: '8MiB' });
  const t = new Tables(pm);
  pm.setRegisters(0, { cr3: t.cr3(0), cpl: 0 });
  const [r] = await pm.run([{ core: 0, program: { kind: 'ops', ops: [{ op: 'invpcid', type: 9 }, { op: 'movCr3', value: 1n << 62n }, { op: 'invlpg', va: 0 }] } }]);
  assert.ok(r.ok, r.error);
  assert.equal(r.faultLog.map((f) => f.vector), [13, 13]);
  assert.is(r.ops, 3);
  await pm.shutdown();
});

S.run();

const I = suite('SDM 4.6: implicit supervisor-mode accesses');

I('at CPL 3 an implicit access is a supervisor access: supervisor pages pass, user pages fall to SMAP whatever AC says, and the #PF error code has U/S = 0', async () => {
  const m = await bootLocal();
  const t = new Tables(m);
  const sup = 0x20_0000n;
  const user = 0x30_0000n;
  const ro = 0x40_0000n;
  t.map(sup, { write: true, user: false, dirty: false });
  t.map(user, { write: true, user: true });
  t.map(ro, { write: false, user: false });
  const cpu = core(m, 0, { cr0: CR0, cr3: t.cr3(0), cr4: CR4_PAE | CR4_SMAP, efer: EFER, cpl: 3, ac: true });
  assert.is(cpu.mmu.implicit64(...hl(sup), false), 0, 'an implicit read of a supervisor page at CPL 3');
  assert.is(faultVector(cpu.mmu.load64(...hl(sup))), VEC_PF, 'an explicit user read of it faults');
  assert.is(faultError(cpu.mmu.load64(...hl(sup))), 0x5, 'P | U');
  const r = cpu.mmu.implicit64(...hl(user), false);
  assert.is(faultVector(r), VEC_PF, 'SMAP blocks the implicit read of a user page though AC = 1');
  assert.is(faultError(r), 0x1, 'P only: U/S = 0, W = 0');
  assert.is(faultError(cpu.mmu.implicit64(...hl(ro), true, 0, 7)), 0x3, 'an implicit write to a read-only page with WP: P | W');
  assert.is(cpu.mmu.implicit64(...hl(sup), true, 0, 9), 0, 'an implicit write to a writable supervisor page');
  assert.ok((m.mem[t.entryWord(sup)] & 0x40) !== 0, 'and it set D (SDM 4.8)');
  cpu.movCr0(CR0 & ~CR0_WP);
  assert.is(cpu.mmu.implicit64(...hl(ro), true, 0, 7), 0, 'WP = 0: supervisor writes to read-only pages pass');
  cpu.movCr4(CR4_PAE);
  assert.is(cpu.mmu.implicit64(...hl(user), false), 0, 'SMAP off: the user page passes');
  cpu.detach();
  await m.shutdown();
});

I('a program names an implicit access with implicit: true; it faults as the program\'s fault', async () => {
  const pm = await Machine.boot({ cores: 1, nodes: 1, memory: '8MiB' });
  const t = new Tables(pm);
  const user = 0x30_0000n;
  t.map(user, { write: true, user: true });
  pm.setRegisters(0, { cr3: t.cr3(0), cr4: CR4_PAE | CR4_SMAP, cpl: 3, ac: true });
  const [r] = await pm.run([{ core: 0, program: { kind: 'ops', record: true, ops: [{ op: 'load', va: user }, { op: 'load', va: user, implicit: true }, { op: 'store', va: user, value: 1, implicit: true }] } }]);
  assert.ok(r.ok, r.error);
  assert.equal(r.faultLog.map((f) => [f.vector, f.error]), [[14, 0x1], [14, 0x3]]);
  await pm.shutdown();
});

I.run();

const Z = suite('access sizes: 1, 2, 4 and 8 bytes, aligned or not, across pages');

Z('narrow and unaligned loads and stores are little-endian and keep the neighbouring bytes', async () => {
  const m = await bootLocal();
  const t = new Tables(m);
  const va = 0x50_0000n;
  const pfn = t.map(va, { write: true, user: true });
  const cpu = core(m, 0, { cr0: CR0, cr3: t.cr3(0), cr4: CR4_PAE, efer: EFER, cpl: 3 });
  assert.is(cpu.mmu.store64(...hl(va), 0x88776655, 0x44332211), 0);
  assert.is(cpu.mmu.access(...hl(va + 1n), 1, false), 0);
  assert.equal([cpu.mmu.valHi, cpu.mmu.valLo], [0, 0x22]);
  assert.is(cpu.mmu.access(...hl(va + 3n), 4, false), 0);
  assert.equal([cpu.mmu.valHi, cpu.mmu.valLo >>> 0], [0, 0x77665544]);
  assert.is(cpu.mmu.access(...hl(va + 2n), 2, true, 0, 0xbeef), 0);
  assert.equal([m.mem[pfn * 1024] >>> 0, m.mem[pfn * 1024 + 1] >>> 0], [0xbeef2211, 0x88776655], 'bytes 2-3 written, the rest kept');
  assert.is(cpu.mmu.access(...hl(va + 5n), 8, false), 0, 'an unaligned 8-byte load inside the page');
  assert.equal([cpu.mmu.valHi >>> 0, cpu.mmu.valLo >>> 0], [0x00000000, 0x00887766]);
  cpu.detach();
  await m.shutdown();
});

Z('an access that crosses a page boundary translates both pages first: a fault on the second gives CR2 in it and leaves the first unwritten', async () => {
  const m = await bootLocal();
  const t = new Tables(m);
  const p1 = 0x60_0000n;
  const f1 = t.map(p1, { write: true, user: true });
  const cpu = core(m, 0, { cr0: CR0, cr3: t.cr3(0), cr4: CR4_PAE, efer: EFER, cpl: 3 });
  const r = cpu.mmu.access(...hl(p1 + 0xffcn), 8, true, 0x55555555, 0x55555555);
  assert.is(faultVector(r), VEC_PF);
  assert.is(faultError(r), 0x6, 'not present, write, user');
  assert.equal([cpu.mmu.cr2hi, cpu.mmu.cr2lo], hl(p1 + 0x1000n), 'CR2 is the second page');
  assert.is(m.mem[f1 * 1024 + 1023], 0, 'the first page was not written');
  // Map the second page (its frame not next to the first) and the access goes through, split.
  const f2 = t.map(p1 + 0x1000n, { write: true, user: true });
  assert.is(cpu.mmu.access(...hl(p1 + 0xffen), 4, true, 0, 0xddccbbaa), 0);
  assert.equal([(m.mem[f1 * 1024 + 1023] >>> 16) & 0xffff, m.mem[f2 * 1024] & 0xffff], [0xbbaa, 0xddcc]);
  assert.is(cpu.mmu.access(...hl(p1 + 0xffen), 4, false), 0);
  assert.is(cpu.mmu.valLo >>> 0, 0xddccbbaa);
  // Crossing out of the canonical range is #GP(0), and writes nothing either.
  const top = 0x7fff_ffff_f000n;
  const ft = t.map(top, { write: true, user: true });
  assert.is(cpu.mmu.access(...hl(top + 0xffcn), 8, true, -1, -1), FAULT_GP0);
  assert.is(m.mem[ft * 1024 + 1023], 0);
  cpu.detach();
  await m.shutdown();
});

Z('through the kernel: a store across two demand-zero pages fills both (the handler is given CR2) and lands', async () => {
  const m = await Machine.boot({ cores: 1, nodes: 1, memory: '16MiB' }, { pool: false });
  const k = m.kernel;
  const s = spaces.createSpace(k);
  m.setRegisters(0, { cpl: 3 });
  const cpu = m.attachHere(0);
  shootdowns.switchTo(k, cpu, s);
  for (const va of [0x70_0000, 0x70_1000]) assert.is(vm.mapZero(k, 0, s, 0, va, R_USER | R_WRITE, cpu).code, 0);
  const zeroFills = k.stats.zeroFills;
  assert.is(faults.access(k, cpu, ACC_WRITE, 0, 0x70_0ffe, 0x0000_0000, 0x4433_2211, 4), 0);
  assert.is(k.stats.zeroFills - zeroFills, 2, 'both pages zero-filled');
  assert.is(faults.access(k, cpu, ACC_READ, 0, 0x70_0ffe, 0, 0, 4), 0);
  assert.is(cpu.mmu.valLo >>> 0, 0x44332211);
  cpu.detach();
  await m.shutdown();
});

Z('a program takes sizes: store and load 2 bytes across a page boundary, recorded', async () => {
  const pm = await Machine.boot({ cores: 1, nodes: 1, memory: '8MiB' });
  const t = new Tables(pm);
  t.map(0x80_0000n, { write: true, user: true });
  t.map(0x80_1000n, { write: true, user: true });
  pm.setRegisters(0, { cr3: t.cr3(0), cpl: 3 });
  const [r] = await pm.run([{ core: 0, program: { kind: 'ops', record: true, ops: [
    { op: 'store', va: 0x80_0fff, value: 0xabcd, size: 2 }, { op: 'load', va: 0x80_0fff, size: 2 }, { op: 'load', va: 0x80_0ffe, size: 4 }, { op: 'load', va: 0x80_1000, size: 1 },
  ] } }]);
  assert.ok(r.ok, r.error);
  assert.equal(r.values?.map((v) => Number(BigInt(v))), [0xabcd, 0xabcd00, 0xab]);
  await pm.shutdown();
});

Z.run();

const N = suite('SDM 4.1.1: CR0.PG = 0');

N('with paging off there is no translation: the linear address is the physical one, no TLB entry is made, and above 4 GiB is #GP(0)', async () => {
  const m = await bootLocal();
  m.setRegisters(0, { cr0: 1, cr4: 0, efer: 0, cpl: 0 }); // PE only: protected mode, no paging, no IA-32e
  const cpu = m.attachHere(0);
  assert.is(cpu.mmu.store64(0, 0x5008, 0x1234, 0x5678), 0);
  assert.equal([m.mem[0x5008 / 4], m.mem[0x5008 / 4 + 1]], [0x5678, 0x1234]);
  assert.is(cpu.mmu.load64(0, 0x5008), 0);
  assert.equal([cpu.mmu.valHi, cpu.mmu.valLo], [0x1234, 0x5678]);
  assert.is(cpu.mmu.access(0, 0x5009, 2, false), 0);
  assert.is(cpu.mmu.valLo, 0x56);
  assert.equal(m.tlb(0), [], 'nothing cached');
  assert.equal(cpu.mmu.fastEntries(), []);
  assert.is(cpu.mmu.load64(1, 0), FAULT_GP0);
  cpu.detach();
  await m.shutdown();
});

N.run();
