// Fork as one replicated operation (issue 10, part 4; kernel/fork.ts, kernel/forkcopy.ts): on a
// two-node machine, a fork of a space of many mappings adds one entry to the parent's log, however
// many pages; the child's replicas are built on their own nodes with the parent's leaves made
// read-only (wired and I/O mappings left out) and the same mapping database; the parent's other
// replica makes its pages read-only when it applies that entry; references and owners go up by
// exactly one per shared frame; a child write copies on node 1 and the parent keeps its value;
// and a fork that finds no frame for a table on one node is undone whole — no reference added,
// no frame lost. The forks of processes (seed behaviours 12-20) are process.test.ts's.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Machine } from '../src/machine/machine.js';
import { NO_FRAME } from '../src/hw/frames.js';
import { enumerateMappings, tableFrames } from '../src/hw/pagetable.js';
import { ACC_WRITE } from '../src/hw/fault.js';
import type { Cpu } from '../src/hw/cpu.js';
import { OUT_OF_MEMORY, R_COW, R_IO, R_USER, R_WIRED, R_WRITE } from '../src/kernel/ops.js';
import * as faults from '../src/kernel/fault.js';
import * as forks from '../src/kernel/fork.js';
import * as refs from '../src/kernel/refs.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as spaces from '../src/kernel/space.js';
import * as vm from '../src/kernel/vm.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';

const RW = R_WRITE | R_USER;
const PAGE = 4096;
const BASE = 0x1000_0000;

/** A two-node machine with one device page, a space run by core 0, and `n` mappings of several kinds. */
async function boot(n: number): Promise<{ m: Machine; s: number; c0: Cpu; c1: Cpu; shared: number[]; wired: number }> {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '32MiB', devicePages: 1 }, { pool: false });
  const k = m.kernel;
  const s = spaces.createSpace(k);
  m.setRegisters(0, { cpl: 3 });
  m.setRegisters(1, { cpl: 3 });
  const c0 = m.attachHere(0);
  const c1 = m.attachHere(1);
  shootdowns.switchTo(k, c0, s);
  const shared: number[] = [];
  for (let i = 0; i < n; i++) {
    // Mappings of one and two pages with a gap after each, some read-only, made through both replicas.
    const va = BASE + i * 4 * PAGE;
    const pages = 1 + (i % 2);
    const f = pages === 1 ? m.frames.allocZeroed(i % 2) : m.frames.allocContiguous(i % 2, 2);
    assert.ok(f !== NO_FRAME);
    for (let p = 0; p < pages; p++) refs.holdNew(k, f + p, s);
    assert.is(vm.map(k, i % 2, s, vaHi(va), vaLo(va), f * PAGE, pages * PAGE, i % 3 === 0 ? R_USER : RW).code, 0);
    for (let p = 0; p < pages; p++) shared.push(f + p);
  }
  // A 2 MiB leaf, a wired page and the device's register page (I/O).
  const run = m.frames.allocContiguous(0, 1024);
  const huge = Math.ceil(run / 512) * 512;
  for (let p = 0; p < 512; p++) refs.holdNew(k, huge + p, s);
  assert.is(vm.map(k, 0, s, 0, 0x4000_0000, huge * PAGE, 2 ** 21, RW).code, 0);
  for (let p = 0; p < 512; p++) shared.push(huge + p);
  const wired = m.frames.allocZeroed(0);
  refs.holdNew(k, wired, s);
  assert.is(vm.map(k, 0, s, 0, 0x5000_0000, wired * PAGE, PAGE, RW | R_WIRED).code, 0);
  assert.is(vm.map(k, 0, s, 0, 0x5000_1000, m.layout.deviceFrame * PAGE, PAGE, RW | R_IO).code, 0);
  return { m, s, c0, c1, shared, wired };
}

/** Leaves of replica r of space s in the user half: va > pa / size / write (A and D left out). */
function leaves(m: Machine, s: number, r: number): string[] {
  return enumerateMappings(m.mem, m.layout.totalFrames, m.kernel.vspace(s).root(r), false)
    .filter((x) => x.va < 1n << 47n)
    .map((x) => `${x.va.toString(16)}>${x.pa.toString(16)}/${x.size}/${x.write}/${x.user}/${x.nx}/${x.pcd}`);
}

/** A leaf line with its write field false. */
function readOnly(l: string): string {
  const f = l.split('/');
  f[2] = 'false';
  return f.join('/');
}

const F = suite('fork as one operation');

F('a fork is one entry in the parent\'s log; the child\'s replicas are on their nodes, read-only where shared, without wired and I/O mappings', async () => {
  const { m, s, c0, shared, wired } = await boot(200);
  const k = m.kernel;
  spaces.syncAll(k, s);
  const before = leaves(m, s, 0);
  const refsBefore = shared.map((f) => refs.refcount(k, f));
  const tail = k.nr(s).tail();
  const child = forks.fork(k, c0, s);
  assert.ok(child >= 0);
  assert.is(k.nr(s).tail() - tail, 1, 'one log entry for the whole fork');
  assert.is(k.nr(child).tail(), 0, 'the child was built beside its log');
  // The parent's replica 1 has not applied the fork yet: its leaves are still as they were.
  assert.equal(leaves(m, s, 1), before);
  spaces.syncAll(k, s);
  const after = leaves(m, s, 0);
  assert.equal(leaves(m, s, 1), after, 'replica 1 applied the same fork');
  const shareable = (l: string): boolean => !l.startsWith('50000000>') && !l.startsWith('50001000>');
  assert.equal(after.filter(shareable), before.filter(shareable).map(readOnly), 'shared leaves read-only in the parent');
  assert.equal(after.filter((l) => !shareable(l)), before.filter((l) => !shareable(l)), 'wired and I/O leaves untouched');
  for (const r of [0, 1]) {
    assert.equal(leaves(m, child, r), after.filter(shareable), `child replica ${r}: the parent's shared leaves`);
    assert.equal(k.vspace(child).db(r).entries(), k.vspace(s).db(0).entries().filter((e) => (e.rights & (R_WIRED | R_IO)) === 0));
    const tables = tableFrames(m.mem, m.layout.totalFrames, k.vspace(child).root(r));
    assert.ok(tables.length > 3);
    assert.ok(tables.every((t) => m.layout.nodeOfFrame(t) === r), `child replica ${r}'s tables are on node ${r}`);
  }
  for (const e of k.vspace(s).db(0).entries()) if ((e.rights & (R_WIRED | R_IO)) === 0) assert.ok((e.rights & R_COW) !== 0);
  assert.equal(shared.map((f) => refs.refcount(k, f)), refsBefore.map((n) => n + 1), 'one more reference per shared frame');
  assert.ok(shared.every((f) => (refs.ownerMask(k, f) & (1 << child)) !== 0), 'the child owns every shared frame');
  assert.is(refs.refcount(k, wired), 1, 'the wired frame is not shared');
  assert.equal(k.nr(child).checkInvariants(), []);
});

F('the child writes on node 1 through a copy; the parent keeps its value', async () => {
  const { m, s, c0, c1 } = await boot(20);
  const k = m.kernel;
  const va = BASE + 8 * PAGE; // mapping 2: one page, writable
  assert.is(c0.mmu.store64(vaHi(va), vaLo(va), 0, 111), 0);
  const child = forks.fork(k, c0, s);
  shootdowns.switchTo(k, c1, child);
  let r = c1.mmu.store64(vaHi(va), vaLo(va), 0, 222);
  assert.ok(r < 0, 'the child\'s first write faults (copy-on-write)');
  assert.ok(faults.onPageFault(k, c1, c1.mmu.cr2hi, c1.mmu.cr2lo, ACC_WRITE, r));
  r = c1.mmu.store64(vaHi(va), vaLo(va), 0, 222);
  assert.is(r, 0);
  assert.is(c0.mmu.load64(vaHi(va), vaLo(va)), 0);
  assert.is(c0.mmu.valLo, 111, 'the parent reads its own value');
  assert.is(c1.mmu.load64(vaHi(va), vaLo(va)), 0);
  assert.is(c1.mmu.valLo, 222);
  const copy = vm.resolve(k, 1, child, vaHi(va), vaLo(va));
  assert.ok(copy.code === 0 && m.layout.nodeOfFrame(copy.pa / PAGE) === 1, 'the copy is a frame of node 1');
});

F('a fork that finds no frame for a table on node 1 is undone whole: no reference, no frame lost, the parent still works', async () => {
  const { m, s, c0, shared } = await boot(60);
  const k = m.kernel;
  spaces.syncAll(k, s);
  const refsBefore = shared.map((f) => refs.refcount(k, f));
  const hog: number[] = [];
  for (let f = m.frames.alloc(1); f !== NO_FRAME; f = m.frames.alloc(1)) hog.push(f);
  m.frames.free(hog.pop() as number); // room for the child's root on node 1, none for its tables
  const free0 = m.frames.freeCount(0);
  assert.is(forks.fork(k, c0, s), -1 - OUT_OF_MEMORY);
  assert.equal(shared.map((f) => refs.refcount(k, f)), refsBefore, 'no reference added');
  assert.is(m.frames.freeCount(0), free0, 'node 0 got back the child\'s root and replica-0 tables');
  assert.is(m.frames.freeCount(1), 1, 'node 1 got back the child\'s root');
  for (const f of hog) m.frames.free(f);
  assert.ok(shared.every((f) => refs.ownerMask(k, f) === 1 << s), 'only the parent owns its frames');
  // The parent's pages are copy-on-write now (as before a fork that failed late); a write copies, then succeeds.
  const va = BASE + 8 * PAGE;
  const r = c0.mmu.store64(vaHi(va), vaLo(va), 0, 7);
  if (r < 0) assert.ok(faults.onPageFault(k, c0, c0.mmu.cr2hi, c0.mmu.cr2lo, ACC_WRITE, r));
  assert.is(c0.mmu.store64(vaHi(va), vaLo(va), 0, 7), 0);
  const child = forks.fork(k, c0, s);
  assert.ok(child >= 0, 'with memory back, the fork succeeds');
});

F('a write to one page of a multi-page copy-on-write mapping copies that page and splits the mapping around it', async () => {
  const { m, s, c0, c1 } = await boot(2); // mapping 1: two pages at BASE + 4 pages
  const k = m.kernel;
  const va = BASE + 4 * PAGE;
  assert.is(c0.mmu.store64(vaHi(va), vaLo(va + PAGE), 0, 1111), 0);
  const before = vm.entries(k, 0, s).find((e) => e.va === va);
  assert.is(before?.pages, 2);
  const child = forks.fork(k, c0, s);
  shootdowns.switchTo(k, c1, child);
  let r = c1.mmu.store64(vaHi(va), vaLo(va + PAGE), 0, 2222);
  assert.ok(r < 0);
  assert.ok(faults.onPageFault(k, c1, c1.mmu.cr2hi, c1.mmu.cr2lo, ACC_WRITE, r), 'the copy-on-write fault of the second page is handled');
  r = c1.mmu.store64(vaHi(va), vaLo(va + PAGE), 0, 2222);
  assert.is(r, 0);
  const parts = vm.entries(k, 1, child).filter((e) => e.va >= va && e.va < va + 2 * PAGE);
  assert.equal(parts.map((e) => [e.va - va, e.pages, e.pfn === before?.pfn]), [[0, 1, true], [PAGE, 1, false]], 'the child\'s mapping split: the first page shared, the second its own copy');
  assert.ok((parts[0].rights & R_COW) !== 0 && (parts[1].rights & R_COW) === 0);
  assert.is(refs.refcount(k, (before?.pfn ?? 0) + 1), 1, 'the parent alone holds its second frame now');
  assert.is(refs.refcount(k, before?.pfn ?? 0), 2, 'both still share the first');
  assert.is(c0.mmu.load64(vaHi(va), vaLo(va + PAGE)), 0);
  assert.is(c0.mmu.valLo, 1111, 'the parent reads its own value');
  spaces.syncAll(k, child);
  assert.equal(k.vspace(child).db(0).entries(), k.vspace(child).db(1).entries(), 'both replicas of the child agree once synced');
});

F.run();
