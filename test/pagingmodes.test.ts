// The legacy paging modes (issue 14, SDM 4.1.1, 4.3, 4.4): 32-bit paging (4-byte entries, 4 MiB
// pages with CR4.PSE and PSE-36 address bits, no XD, no keys) and PAE paging (PDPTE registers
// loaded on MOV to CR3 and by the CR0/CR4 moves that enter PAE paging, reserved PDPTE bits #GP at
// the load, 8-byte entries, 2 MiB pages, XD with NXE), each with error codes at every level,
// rights, A/D, large pages and invalidation; the mode changes the SDM forbids; dumps per mode.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bootLocal, core } from './helpers.js';
import { CR0_PG, CR0_WP, CR4_PAE, CR4_PCIDE, CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_LMA, EFER_LME, EFER_NXE } from '../src/hw/regs.js';
import { ACC_FETCH, ACC_READ, ACC_WRITE, FAULT_GP0, PF_ID, PF_P, PF_RSVD, PF_U, PF_W, VEC_PF, faultError, faultVector } from '../src/hw/fault.js';
import { FRAME_WORDS, PTE_A, PTE_D } from '../src/hw/pte.js';
import { enumerate32, enumeratePae, map32, mapPae } from '../src/hw/legacy.js';
import { describe } from '../src/machine/dump.js';
import { findScenario } from '../src/workloads/scenarios.js';
import { runStress } from '../src/cli/stress.js';
import { DEFAULT_STRESS_MIX } from '../src/workloads/hwstress.js';
import type { Cpu } from '../src/hw/cpu.js';
import type { Machine } from '../src/machine/machine.js';

const CR0 = (CR0_PG | CR0_WP | 1) | 0;

/** The page a translation reached, or the fault as 'PF:<error code>' / 'GP'. */
function go(cpu: Cpu, vlo: number, acc = ACC_READ, vhi = 0): number | string {
  const w = cpu.mmu.translate(vhi, vlo, acc);
  if (w === FAULT_GP0) return 'GP';
  if (w < 0) return faultVector(w) === VEC_PF ? `PF:${faultError(w)}` : `fault ${w}`;
  return Math.floor(w / FRAME_WORDS);
}

/** A 32-bit paging machine: a page directory, 4 KiB pages at 0x40_0000 (RW user), 0x40_1000 (RO user), 0x40_2000 (supervisor), a 4 MiB page at 0x80_0000. */
async function boot32(cr4 = CR4_PSE, efer = 0): Promise<{ m: Machine; pd: number; f: Record<string, number>; cpu: Cpu }> {
  const m = await bootLocal({ memory: '16MiB' });
  const pd = m.frames.allocZeroed(0);
  const f: Record<string, number> = {};
  for (const [n, va, attrs] of [['rw', 0x40_0000, { write: true, user: true }], ['ro', 0x40_1000, { user: true }], ['sup', 0x40_2000, { write: true }]] as const) {
    f[n] = m.frames.allocZeroed(0);
    assert.is(map32(m.mem, m.frames, 0, pd, va, f[n], false, attrs), 0);
  }
  f.big = m.frames.allocContiguous(0, 1024);
  assert.ok(f.big % 1024 === 0, 'a 4 MiB aligned run');
  assert.is(map32(m.mem, m.frames, 0, pd, 0x80_0000, f.big, true, { write: true, user: true }), 0);
  const cpu = core(m, 0, { cr0: CR0, cr3: BigInt(pd) << 12n, cr4, efer, cpl: 3 });
  return { m, pd, f, cpu };
}

/** A PAE machine: a PDPT frame, 4 KiB pages at 0x4000_0000 (RW user) and 0x4000_1000 (RW user, XD), a 2 MiB page at 0x8020_0000. */
async function bootPae(efer = EFER_NXE): Promise<{ m: Machine; pdpt: number; f: Record<string, number>; cpu: Cpu }> {
  const m = await bootLocal({ memory: '16MiB' });
  const pdpt = m.frames.allocZeroed(0);
  const f: Record<string, number> = { a: m.frames.allocZeroed(0), x: m.frames.allocZeroed(0) };
  assert.is(mapPae(m.mem, m.frames, 0, pdpt, 0x4000_0000, f.a, 12, { write: true, user: true }), 0);
  assert.is(mapPae(m.mem, m.frames, 0, pdpt, 0x4000_1000, f.x, 12, { write: true, user: true, nx: true }), 0);
  f.big = m.frames.allocContiguous(0, 1024);
  f.big = Math.ceil(f.big / 512) * 512;
  assert.is(mapPae(m.mem, m.frames, 0, pdpt, 0x8020_0000 | 0, f.big, 21, { user: true }), 0);
  const cpu = core(m, 0, { cr0: CR0, cr3: BigInt(pdpt) << 12n, cr4: CR4_PAE, efer, cpl: 3 });
  return { m, pdpt, f, cpu };
}

const M = suite('paging modes: 32-bit and PAE');

M('SDM 4.3: 32-bit paging walks a directory and a table of 4-byte entries; A in the PDE, A and D in the PTE', async () => {
  const { m, pd, f, cpu } = await boot32();
  assert.is(go(cpu, 0x40_0010), f.rw);
  const pde = m.mem[pd * FRAME_WORDS + 1];
  const pt = pde >>> 12;
  assert.ok((pde & PTE_A) !== 0, 'the PDE is accessed');
  assert.is(m.mem[pt * FRAME_WORDS] & (PTE_A | PTE_D), PTE_A, 'a read sets A, not D');
  assert.is(go(cpu, 0x40_0010, ACC_WRITE), f.rw);
  assert.is(m.mem[pt * FRAME_WORDS] & (PTE_A | PTE_D), PTE_A | PTE_D, 'a write sets D');
  assert.is(go(cpu, 0x0040_0000, ACC_READ, 1), 'GP', 'a linear address above 4 GiB is #GP(0) outside IA-32e mode');
  cpu.detach();
});

M('SDM 4.3: 32-bit error codes at both levels and the rights of both levels', async () => {
  const { f, cpu } = await boot32();
  assert.is(go(cpu, 0x1000_0000), `PF:${PF_U}`, 'no PDE: not present');
  assert.is(go(cpu, 0x40_3000, ACC_WRITE), `PF:${PF_U | PF_W}`, 'no PTE: not present');
  assert.is(go(cpu, 0x40_1000, ACC_WRITE), `PF:${PF_P | PF_W | PF_U}`, 'user write to a read-only page');
  assert.is(go(cpu, 0x40_2000), `PF:${PF_P | PF_U}`, 'user read of a supervisor page');
  assert.is(go(cpu, 0x40_1000, ACC_FETCH), f.ro, 'no execute-disable in 32-bit paging');
  cpu.setMode(0, false);
  assert.is(go(cpu, 0x40_2000, ACC_WRITE), f.sup);
  assert.is(go(cpu, 0x40_1000, ACC_WRITE), `PF:${PF_P | PF_W}`, 'CR0.WP: a supervisor write to a read-only page faults');
  cpu.detach();
});

M('SDM 4.7: a fetch fault sets I/D under 32-bit paging only with SMEP (NXE counts with PAE only)', async () => {
  const a = await boot32(CR4_PSE, EFER_NXE);
  assert.is(go(a.cpu, 0x1000_0000, ACC_FETCH), `PF:${PF_U}`);
  a.cpu.detach();
  const b = await boot32(CR4_PSE | CR4_SMEP);
  assert.is(go(b.cpu, 0x1000_0000, ACC_FETCH), `PF:${PF_U | PF_ID}`);
  b.cpu.detach();
  const c = await bootPae();
  assert.is(go(c.cpu, 0x1000_0000, ACC_FETCH), `PF:${PF_U | PF_ID}`, 'PAE with NXE');
  c.cpu.detach();
});

M('SDM 4.3: 4 MiB pages with CR4.PSE (PSE-36 address bits, a reserved bit 21); without PSE the PDE points at a table', async () => {
  const { m, pd, f, cpu } = await boot32();
  assert.is(go(cpu, 0x80_0000 + 0x25_0000), f.big + 0x250, 'inside the 4 MiB page');
  const w = pd * FRAME_WORDS + 2;
  m.mem[w] |= 1 << 13; // address bit 32
  const t = m.translate(0x80_0000n, { access: 'read' });
  assert.ok(t.ok && t.pa === (1n << 32n) + (BigInt(f.big) << 12n) && t.size === 2 ** 22, `PSE-36: ${JSON.stringify(t, (_k, x) => (typeof x === 'bigint' ? x.toString(16) : x))}`);
  m.mem[w] = (m.mem[w] & ~(1 << 13)) | (1 << 21);
  cpu.mmu.invlpg(0, 0x80_0000);
  assert.is(go(cpu, 0x80_0000), `PF:${PF_P | PF_RSVD | PF_U}`, 'bit 21 is reserved in a 4 MiB PDE');
  cpu.detach();
  const nopse = await boot32(0);
  // Without PSE the PS bit is ignored: the PDE names a page table (the run's first frame).
  const target = nopse.m.frames.allocZeroed(0);
  nopse.m.mem[nopse.f.big * FRAME_WORDS] = (target << 12) | 0x7;
  assert.is(go(nopse.cpu, 0x80_0000), target);
  assert.is(go(nopse.cpu, 0x80_1000), `PF:${PF_U}`, 'the rest of that "table" is not present');
  nopse.cpu.detach();
});

M('SDM 4.10.2.3: a 4 MiB page is cached as 2 MiB halves; INVLPG of one address drops both', async () => {
  const { m, cpu } = await boot32();
  go(cpu, 0x80_0000);
  go(cpu, 0xa0_0000);
  const big = (): string[] => m.tlb(0).filter((e) => e.shift === 21).map((e) => e.va.toString(16)).sort();
  assert.equal(big(), ['800000', 'a00000']);
  cpu.mmu.invlpg(0, 0x80_1000);
  assert.equal(big(), [], 'both halves went');
  cpu.detach();
});

M('SDM 4.4: PAE paging translates through the PDPTE registers, 8-byte entries, 2 MiB pages; XD with NXE', async () => {
  const { f, cpu } = await bootPae();
  assert.is(go(cpu, 0x4000_0008), f.a);
  assert.is(go(cpu, 0x8020_0000 | 0), f.big);
  assert.is(go(cpu, (0x8020_0000 + 0x1f_f000) | 0), f.big + 0x1ff);
  assert.is(go(cpu, 0x8020_0000 | 0, ACC_WRITE), `PF:${PF_P | PF_W | PF_U}`, 'a read-only 2 MiB page');
  assert.is(go(cpu, 0x4000_1000, ACC_FETCH), `PF:${PF_P | PF_U | PF_ID}`, 'XD');
  assert.is(go(cpu, 0x4000_1000), f.x, 'XD pages read');
  assert.is(go(cpu, 0x0000_0000), `PF:${PF_U}`, 'a not-present PDPTE');
  assert.is(go(cpu, 0x4020_0000), `PF:${PF_U}`, 'a not-present PDE');
  assert.is(go(cpu, 0x4000_2000), `PF:${PF_U}`, 'a not-present PTE');
  cpu.detach();
});

M('SDM 4.4.2: PAE A and D, reserved bits 62:52 (#PF with RSVD), SMEP and SMAP as in the other modes', async () => {
  const { m, f, cpu } = await bootPae();
  assert.is(go(cpu, 0x4000_0008, ACC_WRITE), f.a);
  const pdpte1 = m.mem[(cpu.regs.cr3lo >>> 12) * FRAME_WORDS + 2] >>> 12;
  const pt = m.mem[pdpte1 * FRAME_WORDS] >>> 12;
  assert.is(m.mem[pt * FRAME_WORDS] & (PTE_A | PTE_D), PTE_A | PTE_D, 'a write sets A and D in the PTE');
  assert.ok((m.mem[pdpte1 * FRAME_WORDS] & PTE_A) !== 0, 'and A in the PDE');
  m.mem[pt * FRAME_WORDS + 2 + 1] |= 1 << 20; // bit 52 of the PTE for 0x4000_1000
  cpu.mmu.invlpg(0, 0x4000_1000);
  assert.is(go(cpu, 0x4000_1000), `PF:${PF_P | PF_RSVD | PF_U}`, 'bit 52 is reserved in PAE paging (ignored in 4-level)');
  cpu.detach();
  m.setRegisters(0, { cpl: 0, cr4: CR4_PAE | CR4_SMEP | CR4_SMAP });
  const c = m.attachHere(0);
  assert.is(go(c, 0x4000_0000, ACC_FETCH), `PF:${PF_P | PF_ID}`, 'SMEP: a supervisor fetch from a user page');
  assert.is(go(c, 0x4000_0000, ACC_READ), `PF:${PF_P}`, 'SMAP: a supervisor read of a user page with AC clear');
  c.setMode(0, true);
  assert.is(go(c, 0x4000_0000, ACC_READ), f.a, 'SMAP with EFLAGS.AC set');
  c.detach();
});

M('SDM 4.4.1: the PDPTEs are registers, loaded by MOV to CR3: a change in memory shows at the next load', async () => {
  const { m, pdpt, f, cpu } = await bootPae();
  const w = pdpt * FRAME_WORDS + 2; // PDPTE 1 (0x4000_0000)
  const saved = m.mem[w];
  m.mem[w] = 0;
  assert.is(go(cpu, 0x4000_0008), f.a, 'still translated through the loaded PDPTE');
  assert.is(cpu.movCr3(0, pdpt << 12), 0);
  assert.is(go(cpu, 0x4000_0008), `PF:${PF_U}`, 'after MOV to CR3 the PDPTE is not present');
  m.mem[w] = saved;
  cpu.detach();
});

M('SDM 4.4.1: a present PDPTE with a reserved bit: MOV to CR3 is #GP(0) and changes nothing; setRegisters refuses it', async () => {
  const { m, pdpt, f, cpu } = await bootPae();
  const other = m.frames.allocZeroed(0);
  m.mem[other * FRAME_WORDS] = (pdpt << 12) | 1 | (1 << 1); // present, bit 1 reserved
  assert.is(cpu.movCr3(0, other << 12), FAULT_GP0);
  assert.is(cpu.regs.cr3lo, pdpt << 12, 'CR3 unchanged');
  assert.is(go(cpu, 0x4000_0008), f.a, 'the PDPTE registers unchanged');
  cpu.detach();
  assert.throws(() => m.setRegisters(0, { cr3: BigInt(other) << 12n }), /names PAE PDPTEs with reserved bits set/);
  assert.throws(() => m.setRegisters(0, { cr3: 1n << 40n }), /CR3 has 32 bits in pae paging/);
});

M('SDM 4.1.2: mode changes — PG with LME needs PAE (#GP), with LME and PAE it enters IA-32e; PG without LME enters PAE paging, loading the PDPTEs; PCIDE outside IA-32e is #GP', async () => {
  const { m, pdpt, f, cpu } = await bootPae();
  cpu.detach();
  m.setRegisters(0, { cr0: 1, cr4: 0, efer: EFER_LME });
  const c = m.attachHere(0);
  assert.is(c.movCr0(CR0), FAULT_GP0, 'PG with LME and without PAE');
  assert.is(c.regs.cr0, 1);
  assert.is(c.movCr4(CR4_PCIDE), FAULT_GP0, 'PCIDE outside IA-32e mode');
  c.wrEfer(EFER_NXE);
  assert.is(c.movCr4(CR4_PAE), 0);
  assert.is(c.movCr3(0, pdpt << 12), 0);
  assert.is(c.movCr0(CR0), 0, 'PG without LME: PAE paging');
  assert.is(go(c, 0x4000_0008), f.a);
  c.detach();
  const n = await bootPae();
  n.cpu.detach();
  n.m.setRegisters(0, { cr0: 1, cr4: CR4_PAE, efer: EFER_LME | EFER_NXE, cr3: 0n });
  const d = n.m.attachHere(0);
  assert.is(d.movCr0(CR0), 0);
  assert.ok((d.regs.efer & EFER_LMA) !== 0 && d.regs.ia32e, 'LMA: IA-32e mode');
  d.detach();
});

M('dumps: each legacy root is labelled with its mode and lists its mappings as the mode lays them out', async () => {
  const a = await boot32();
  a.cpu.detach();
  const d = describe(a.m, [{ label: 'r32', cr3: BigInt(a.pd) << 12n, la57: false, paging: '32bit' }]);
  assert.is(d.roots[0].mode, '32bit');
  assert.equal(d.roots[0].mappings.map((x) => [x.va, x.size, x.write, x.user]), [
    ['0x400000', 4096, true, true], ['0x401000', 4096, false, true], ['0x402000', 4096, true, false], ['0x800000', 4194304, true, true],
  ]);
  assert.is(enumerate32(a.m.mem, a.m.layout.totalFrames, a.pd, false, 46).length, 3, 'without PSE the 4 MiB PDE is read as a table (of zeros)');
  const b = await bootPae();
  b.cpu.detach();
  const e = describe(b.m, [{ label: 'pae', cr3: BigInt(b.pdpt) << 12n, la57: false, paging: 'pae' }]);
  assert.is(e.roots[0].mode, 'pae');
  assert.equal(e.roots[0].mappings.map((x) => [x.va, x.size, x.nx]), [['0x40000000', 4096, false], ['0x40001000', 4096, true], ['0x80200000', 2097152, false]]);
  assert.is(enumeratePae(b.m.mem, b.m.layout.totalFrames, b.pdpt << 12).length, 3);
});

M('dump --scenario varied: a 32-bit and a PAE root, every listed mapping what the walker translates in that mode', async () => {
  const m = await bootLocal({ memory: '8MiB' });
  const roots = (findScenario('varied') as NonNullable<ReturnType<typeof findScenario>>).build(m);
  const d = describe(m, roots);
  assert.equal(d.roots.map((r) => r.mode), ['4level', '5level', '32bit', 'pae']);
  const regs = { '32bit': { cr0: CR0, cr4: CR4_PSE, efer: 0 }, pae: { cr0: CR0, cr4: CR4_PAE, efer: EFER_NXE } } as const;
  for (const r of d.roots.slice(2)) {
    assert.ok(r.mappings.length >= 3);
    for (const x of r.mappings) {
      for (const off of [0n, BigInt(x.size - 8)]) {
        const t = m.translate(BigInt(x.va) + off, { ...regs[r.mode as '32bit' | 'pae'], cr3: BigInt(r.cr3), cpl: 0 });
        assert.ok(t.ok && t.pa === BigInt(x.pa) + off && t.size === x.size, `${r.label} ${x.va}+${off}: ${JSON.stringify(t, (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v))}`);
      }
    }
  }
});

M('the hardware stress runs clean in PAE and 32-bit paging (its 4 MiB page, its one-word flips)', async () => {
  for (const paging of ['pae', '32bit'] as const) {
    const r = await runStress({ machine: { cores: 2, nodes: 1, memory: '32MiB' }, seconds: 0.3, seed: 5, opsPerRound: 5000, mix: DEFAULT_STRESS_MIX, paging }, 'test');
    assert.equal(r.violations, [], paging);
    assert.is(r.config.paging, paging);
    assert.ok(r.accesses > 0 && r.pteUpdates > 0, `${paging}: accesses and flips ran`);
  }
});

M.run();
