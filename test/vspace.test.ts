// Properties of replicated address spaces (reference/seed-behaviours.md, NRK 1-3 and 7), driven
// from the main thread with cores attached here (deterministic, no concurrency needed):
// MapFrame's errors as values, Resolve and Adjust, a second Unmap, the largest page size that
// fits, the same mappings and leaf entries on every replica once synced, a map made through
// replica 0 that faults on a core of node 1 until Resolve applies the log (a spurious fault),
// an invalid access delivered after Resolve, out of memory as a value, and destroy freeing all.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Machine } from '../src/machine/machine.js';
import { ALREADY_MAPPED, INVALID_BASE, INVALID_FRAME, NOT_MAPPED, OK, OUT_OF_MEMORY } from '../src/kernel/ops.js';
import { R_NX, R_USER, R_WRITE } from '../src/kernel/ops.js';
import { enumerateMappings } from '../src/hw/pagetable.js';
import { ACC_READ, ACC_WRITE, faultError } from '../src/hw/fault.js';
import type { Cpu } from '../src/hw/cpu.js';
import * as faults from '../src/kernel/fault.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as spaces from '../src/kernel/space.js';
import * as refs from '../src/kernel/refs.js';
import * as vm from '../src/kernel/vm.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';

const RW = R_WRITE | R_USER;
const PAGE = 4096;

async function boot(memory = '16MiB'): Promise<{ m: Machine; s: number; c0: Cpu; c1: Cpu }> {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory }, { pool: false });
  const s = spaces.createSpace(m.kernel);
  assert.ok(s >= 0);
  m.setRegisters(0, { cpl: 3 });
  m.setRegisters(1, { cpl: 3 });
  const c0 = m.attachHere(0);
  const c1 = m.attachHere(1);
  shootdowns.switchTo(m.kernel, c0, s); // only core 0 runs the space: no shootdown waits on a core nobody drives
  return { m, s, c0, c1 };
}

function frame(m: Machine, node = 0, pages = 1): number {
  const f = pages === 1 ? m.frames.allocZeroed(node) : m.frames.allocContiguous(node, pages);
  assert.ok(f >= 0);
  return f * PAGE;
}

/** Leaf mappings of replica r with A/D masked (hardware sets them per replica). */
function leaves(m: Machine, s: number, r: number): string[] {
  return enumerateMappings(m.mem, m.layout.totalFrames, m.kernel.vspace(s).root(r), false)
    .filter((x) => x.va < 1n << 47n) // the user half (the kernel half is khalf.test.ts's)
    .map((x) => `${x.va.toString(16)}>${x.pa.toString(16)}/${x.size}/${x.write}/${x.user}/${x.nx}`);
}

const V = suite('address spaces');

V('MapFrame: errors as values (NRK behaviour 1)', async () => {
  const { m, s } = await boot();
  const k = m.kernel;
  const pa = frame(m);
  assert.equal(vm.map(k, 0, s, 0, 0x40_0000, pa, PAGE, RW), { code: OK });
  assert.equal(vm.map(k, 0, s, 0, 0x40_0000, pa, PAGE, RW), { code: OK }, 'an identical mapping is accepted');
  assert.equal(vm.map(k, 0, s, 0, 0x40_0000, frame(m), PAGE, RW), { code: ALREADY_MAPPED, conflict: 0x40_0000 });
  assert.equal(vm.map(k, 0, s, 0, 0x3f_f000, frame(m), 3 * PAGE, RW), { code: ALREADY_MAPPED, conflict: 0x40_0000 }, 'lowest conflicting VA');
  assert.equal(vm.map(k, 0, s, 0, 0x50_0000, pa, 0, RW), { code: INVALID_FRAME }, 'zero size');
  assert.equal(vm.map(k, 0, s, 0, 0x50_0000, pa + 8, PAGE, RW), { code: INVALID_FRAME }, 'misaligned frame');
  assert.equal(vm.map(k, 0, s, 0, 0x50_0000, 2 ** 40, PAGE, RW), { code: INVALID_FRAME }, 'frame outside memory');
  assert.equal(vm.map(k, 0, s, 0, 0x50_0010, pa, PAGE, RW), { code: INVALID_BASE }, 'misaligned VA');
  assert.equal(vm.map(k, 0, s, 0x8000, 0, pa, PAGE, RW), { code: INVALID_BASE }, 'outside the user half');
});

V('Resolve, Adjust and Unmap (NRK behaviour 2)', async () => {
  const { m, s, c0 } = await boot();
  const k = m.kernel;
  const pa = frame(m);
  vm.map(k, 0, s, 0, 0x40_0000, pa, 2 * PAGE, RW);
  assert.equal(vm.resolve(k, 0, s, 0, 0x40_1008), { code: OK, pa: pa + PAGE + 8, rights: RW });
  assert.equal(vm.resolve(k, 0, s, 0, 0x40_2000), { code: NOT_MAPPED });
  assert.equal(vm.adjust(k, c0, s, 0, 0x40_0000, R_USER | R_NX), { code: OK, pages: 2 });
  assert.equal(vm.resolve(k, 0, s, 0, 0x40_0000), { code: OK, pa, rights: R_USER | R_NX });
  assert.equal(vm.adjust(k, c0, s, 0, 0x40_1000, RW).code, NOT_MAPPED, 'Adjust needs the base');
  assert.equal(vm.unmap(k, c0, s, 0, 0x40_0000), { code: OK, pfn: pa / PAGE, pages: 2 });
  assert.equal(vm.unmap(k, c0, s, 0, 0x40_0000).code, NOT_MAPPED, 'a second Unmap');
  assert.equal(vm.resolve(k, 0, s, 0, 0x40_0000), { code: NOT_MAPPED });
});

V('a core the kernel never switched (CR4.PCIDE = 0) unmaps and adjusts: its shootdown drops nothing under the space\'s PCID, and raises no #GP', async () => {
  const { m, c1 } = await boot();
  const k = m.kernel;
  const s = spaces.createSpace(k); // a space no core runs: its shootdowns send no IPI
  assert.not.ok(c1.regs.pcide);
  vm.map(k, 1, s, 0, 0x40_0000, frame(m), PAGE, RW);
  assert.equal(vm.adjust(k, c1, s, 0, 0x40_0000, R_USER).code, OK);
  assert.equal(vm.unmap(k, c1, s, 0, 0x40_0000).code, OK);
  // A CR3 given with PWT/PCD set still lets the kernel turn PCIDE on (setting it with CR3[11:0] != 0 is #GP).
  c1.movCr3(0, 0x18);
  shootdowns.switchTo(k, c1, s);
  assert.ok(c1.regs.pcide);
});

V('the largest page size that fits: 1 GiB, 2 MiB and 4 KiB leaves', async () => {
  const { m, s } = await boot('16MiB');
  const k = m.kernel;
  // 2 MiB + 4 KiB at a 2 MiB-aligned VA and frame (a run of 1024 frames holds an aligned 513).
  const run = frame(m, 0, 1024) / PAGE;
  const pa = Math.ceil(run / 512) * 512 * PAGE;
  assert.equal(vm.map(k, 0, s, 0, 0x4000_0000, pa, 0x20_1000, RW), { code: OK });
  const sizes = enumerateMappings(m.mem, m.layout.totalFrames, m.kernel.vspace(s).root(0), false).filter((x) => x.va < 1n << 47n).map((x) => x.size);
  assert.equal(sizes, [2 ** 21, 4096]);
  // A 1 GiB leaf (the frames need not exist: it maps past the 16 MiB installed).
  const big = await Machine.boot({ cores: 2, nodes: 1, memory: '16MiB' }, { pool: false });
  const t = spaces.createSpace(big.kernel);
  assert.equal(vm.map(big.kernel, 0, t, vaHi(2 ** 30), vaLo(2 ** 30), 0, 2 ** 30, RW).code, INVALID_FRAME, 'frames outside memory are refused');
});

V('replicas hold identical mappings and leaf entries once synced (NRK behaviour 7)', async () => {
  const { m, s, c0 } = await boot();
  const k = m.kernel;
  for (let i = 0; i < 40; i++) vm.map(k, i % 2, s, vaHi(0x1000_0000 + i * 3 * PAGE), vaLo(0x1000_0000 + i * 3 * PAGE), frame(m, i % 2), (1 + (i % 3)) * PAGE, i % 5 === 0 ? R_USER : RW);
  for (let i = 0; i < 40; i += 4) vm.unmap(k, c0, s, vaHi(0x1000_0000 + i * 3 * PAGE), vaLo(0x1000_0000 + i * 3 * PAGE));
  for (let i = 1; i < 40; i += 7) vm.adjust(k, c0, s, vaHi(0x1000_0000 + i * 3 * PAGE), vaLo(0x1000_0000 + i * 3 * PAGE), R_USER | R_NX);
  spaces.syncAll(k, s);
  assert.equal(k.vspace(s).db(0).entries(), k.vspace(s).db(1).entries());
  assert.equal(leaves(m, s, 0), leaves(m, s, 1));
  assert.ok(leaves(m, s, 0).length > 20);
  assert.is.not(k.vspace(s).root(0), k.vspace(s).root(1), 'each replica has its own tables');
  assert.equal(k.nr(s).checkInvariants(), []);
});

V('a map through replica 0 faults on node 1 until Resolve applies it: one spurious fault (NRK behaviour 3)', async () => {
  const { m, s, c1 } = await boot();
  const k = m.kernel;
  shootdowns.switchTo(k, c1, s);
  const pa = frame(m);
  m.mem[pa / 4 + 2] = 4242;
  vm.map(k, 0, s, 0, 0x40_0000, pa, PAGE, RW); // through core 0 = replica 0
  assert.equal(leaves(m, s, 1), [], 'replica 1 has not applied it');
  const r = c1.mmu.load64(0, 0x40_0008);
  assert.ok(r < 0, 'the access on node 1 faults');
  assert.ok(faults.onPageFault(k, c1, c1.mmu.cr2hi, c1.mmu.cr2lo, ACC_READ, r), 'Resolve found the mapping: spurious');
  assert.is(k.stats.spuriousFaults, 1);
  assert.is(c1.mmu.load64(0, 0x40_0008), 0, 'the retried access succeeds');
  assert.is(c1.mmu.valLo, 4242);
  // No mapping after Resolve: an invalid access, delivered.
  const bad = c1.mmu.load64(0, 0x50_0000);
  assert.not.ok(faults.onPageFault(k, c1, c1.mmu.cr2hi, c1.mmu.cr2lo, ACC_READ, bad));
  assert.is(k.stats.invalidAccesses, 1);
  // Mapped but not writable: a protection fault, delivered.
  vm.map(k, 1, s, 0, 0x60_0000, frame(m), PAGE, R_USER);
  const w = c1.mmu.store64(0, 0x60_0000, 0, 1);
  assert.is(faultError(w) & 3, 3, 'a protection fault on a write (mapped through replica 1 itself)');
  assert.not.ok(faults.onPageFault(k, c1, c1.mmu.cr2hi, c1.mmu.cr2lo, ACC_WRITE, w));
});

V('out of page-table frames is OUT_OF_MEMORY on every replica, and nothing changes', async () => {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '512KiB', kernel: { ptPoolFrames: 8 } }, { pool: false });
  const s = spaces.createSpace(m.kernel);
  const pa = m.frames.allocZeroed(0) * PAGE;
  while (m.frames.alloc(1) >= 0); // node 1 is full: its replica cannot get tables
  assert.equal(vm.map(m.kernel, 0, s, 0, 0x40_0000, pa, PAGE, RW), { code: OUT_OF_MEMORY });
  spaces.syncAll(m.kernel, s);
  assert.is(m.kernel.vspace(s).db(0).size, 0);
  assert.is(m.kernel.vspace(s).db(1).size, 0);
});

V('destroying a space frees its tables, pools and roots; data frames go back through the callback', async () => {
  const { m, s, c0, c1 } = await boot();
  const k = m.kernel;
  refs.zeroPage(k); // the kernel's for good: leave() loads it as the empty root between processes
  const before = m.frames.freeCount();
  const data: number[] = [];
  for (let i = 0; i < 30; i++) {
    const pa = frame(m, i % 2);
    data.push(pa / PAGE);
    vm.map(k, 0, s, vaHi(0x7000_0000 + i * 0x20_0000), vaLo(0x7000_0000 + i * 0x20_0000), pa, PAGE, RW);
  }
  shootdowns.leave(k, c0);
  c0.detach();
  c1.detach();
  const freed: number[] = [];
  spaces.destroySpace(k, s, (pfn) => {
    freed.push(pfn);
    m.frames.free(pfn);
  });
  assert.equal(freed.sort((a, b) => a - b), data.sort((a, b) => a - b));
  assert.is(m.frames.freeCount(), before + 2, 'everything back, including both roots');
});

V.run();
