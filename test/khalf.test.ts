// The kernel half (reference/seed-behaviours.md 31; seeds/os5-kernel-map-sync.txt), driven from
// the main thread: one kernel mapping in every address space; a kernel table added while P runs
// reaches Q eagerly, at Q's next switch, or after one kernel-mode fault (lazy); the lazy method
// cannot propagate a removal; bad input changes nothing; the kernel-half oracle and the stale-tlb
// oracle over kernel frames fire on what they exist for.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Machine } from '../src/machine/machine.js';
import type { Cpu } from '../src/hw/cpu.js';
import { ACC_READ, ACC_WRITE, PF_P, PF_U, VEC_PF, faultError, faultVector } from '../src/hw/fault.js';
import { enumerateMappings } from '../src/hw/pagetable.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';
import * as faults from '../src/kernel/fault.js';
import * as khalf from '../src/kernel/khalf.js';
import { ALREADY_MAPPED, EINVAL, INVALID_BASE, NOT_MAPPED, OK } from '../src/kernel/ops.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as spaces from '../src/kernel/space.js';
import * as forks from '../src/kernel/fork.js';
import { checkKernelHalf } from '../src/check/khalf.js';
import { checkConservation, destroyAllAndCheck } from '../src/check/kernel.js';
import { writeDump } from '../src/machine/dump.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

type Method = 'eager' | 'switch' | 'lazy';
const NEW = khalf.KERNEL_BASE + 20 * 2 ** 39; // a top-level entry nobody has yet (276)
const TOP = 276;

async function boot(method: Method): Promise<{ m: Machine; p: number; q: number; c0: Cpu }> {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '16MiB', kernel: { khalf: method, maxSpaces: 8 } }, { pool: false });
  const p = spaces.createSpace(m.kernel);
  const q = spaces.createSpace(m.kernel);
  m.setRegisters(0, { cpl: 0 });
  const c0 = m.attachHere(0);
  shootdowns.switchTo(m.kernel, c0, p);
  return { m, p, q, c0 };
}

function kread(m: Machine, c: Cpu, va: number): number | 'fault' {
  const r = faults.access(m.kernel, c, ACC_READ, vaHi(va), vaLo(va));
  return r === 0 ? c.mmu.valLo : 'fault';
}

/** Whether space s's replica r has top-level entry i as the master does (A aside). */
function hasEntry(m: Machine, s: number, r: number, i = TOP): boolean {
  return khalf.matchesMaster(m.kernel, s, r, i);
}

function present(m: Machine, s: number, r: number, i = TOP): boolean {
  return (m.mem[m.kernel.vspace(s).root(r) * 1024 + i * 2] & 1) === 1;
}

const K = suite('kernel half');

K('every address space maps the kernel: the boot heap and per-core pages, global and supervisor-only, in every replica (31)', async () => {
  const { m, p, q, c0 } = await boot('eager');
  for (const s of [p, q]) {
    for (let r = 0; r < 2; r++) {
      const kernel = enumerateMappings(m.mem, m.layout.totalFrames, m.kernel.vspace(s).root(r), false).filter((x) => x.va >= 1n << 63n);
      assert.is(kernel.length, khalf.KHEAP_PAGES + 2, `space ${s} replica ${r}: the heap and one page per core`);
      assert.ok(kernel.every((x) => x.global && !x.user && x.write), 'global, supervisor-only, writable');
    }
  }
  assert.is(kread(m, c0, khalf.KPERCORE_VA + 4096), 2, "core 1's per-core page holds 2");
  m.setRegisters(1, { cpl: 3 });
  const c1 = m.attachHere(1);
  shootdowns.switchTo(m.kernel, c1, q);
  const f = faults.access(m.kernel, c1, ACC_READ, vaHi(khalf.KHEAP_VA), vaLo(khalf.KHEAP_VA));
  assert.is(faultVector(f), VEC_PF, 'user mode: a page fault');
  assert.is(faultError(f), PF_P | PF_U, 'present, user');
  await m.shutdown();
});

for (const method of ['eager', 'switch', 'lazy'] as const) {
  K(`${method}: a kernel table added while P runs reaches Q ${method === 'eager' ? 'at once' : method === 'switch' ? "at Q's next switch" : 'after one kernel-mode fault'} (31)`, async () => {
    const { m, p, q, c0 } = await boot(method);
    const k = m.kernel;
    assert.is(khalf.kmap(k, 0, vaHi(NEW), vaLo(NEW), 1, c0), OK);
    assert.ok(hasEntry(m, p, 0) || method !== 'eager', 'eager: P has it');
    const f0 = k.stats.kernelFaults;
    assert.is(kread(m, c0, NEW), 0, 'P reads the new kernel page');
    if (method === 'eager') {
      for (const s of [p, q]) for (let r = 0; r < 2; r++) assert.ok(hasEntry(m, s, r), `eager: space ${s} replica ${r} has it before kmap returned`);
    } else {
      assert.not.ok(present(m, q, 0) || present(m, q, 1), `${method}: Q does not have it yet`);
    }
    shootdowns.switchTo(k, c0, q);
    if (method === 'switch') assert.ok(hasEntry(m, q, 0), 'switch: switching Q in copied it');
    if (method === 'lazy') assert.not.ok(present(m, q, 0), 'lazy: not even after the switch');
    const before = k.stats.kernelFaults;
    assert.is(kstore(m, c0, NEW, 7), 0);
    assert.is(kread(m, c0, NEW), 7, 'Q reads and writes the same kernel page');
    assert.is(k.stats.kernelFaults - before, method === 'lazy' ? 1 : 0, `${method}: ${method === 'lazy' ? 'one kernel fault copied the entry' : 'no kernel fault'}`);
    if (method !== 'lazy') assert.is(k.stats.kernelFaults - f0, method === 'switch' ? 1 : 0, 'P, already running when the entry was added: switch repairs it on a fault too');
    assert.equal(checkKernelHalf(m), []);
    await m.shutdown();
  });
}

function kstore(m: Machine, c: Cpu, va: number, v: number): number {
  return faults.access(m.kernel, c, ACC_WRITE, vaHi(va), vaLo(va), 0, v);
}

K('a removal reaches every space (eager, switch) and the tables are freed; the lazy method refuses it, changing nothing', async () => {
  for (const method of ['eager', 'switch', 'lazy'] as const) {
    const { m, p, q, c0 } = await boot(method);
    const k = m.kernel;
    const free0 = m.frames.freeCount();
    assert.is(khalf.kmap(k, 0, vaHi(NEW), vaLo(NEW), 1, c0), OK);
    assert.is(kread(m, c0, NEW), 0);
    shootdowns.switchTo(k, c0, q);
    assert.is(kread(m, c0, NEW), 0);
    const r = khalf.kunmap(k, c0, vaHi(NEW), vaLo(NEW));
    if (method === 'lazy') {
      assert.is(r, EINVAL, 'lazy: refused');
      assert.is(kread(m, c0, NEW), 0, 'still mapped');
      assert.equal(checkKernelHalf(m), []);
    } else {
      assert.is(r, OK);
      for (const s of [p, q]) for (let x = 0; x < 2; x++) assert.not.ok(present(m, s, x), `${method}: space ${s} replica ${x} lost the entry`);
      assert.is(kread(m, c0, NEW), 'fault');
      assert.is(m.frames.freeCount(), free0, 'the page and every table under the entry are free again');
      assert.equal(checkKernelHalf(m), []);
    }
    assert.equal(checkConservation(m), []);
    await m.shutdown();
  }
});

K('fork: the child has the kernel half; destroying every space leaves only the kernel\'s frames', async () => {
  const { m, p, c0 } = await boot('switch');
  const k = m.kernel;
  assert.is(khalf.kmap(k, 0, vaHi(NEW), vaLo(NEW), 2, c0), OK);
  const child = forks.fork(k, c0, p);
  assert.ok(child >= 0);
  assert.ok(hasEntry(m, child, 0) && hasEntry(m, child, 1), 'the child copied the master');
  shootdowns.leave(k, c0);
  assert.equal(destroyAllAndCheck(m), []);
  await m.shutdown();
});

K('bad input returns an error value and changes nothing: kmap into the user half or unaligned or twice, kunmap of what is not mapped', async () => {
  const { m, c0 } = await boot('eager');
  const k = m.kernel;
  const before = JSON.stringify(khalf.kentries(k));
  assert.is(khalf.kmap(k, 0, 0, 0x40_0000, 1, c0), INVALID_BASE, 'the user half');
  assert.is(khalf.kmap(k, 0, vaHi(NEW), vaLo(NEW) + 8, 1, c0), INVALID_BASE, 'unaligned');
  assert.is(khalf.kmap(k, 0, vaHi(-4096), vaLo(-4096), 2, c0), INVALID_BASE, 'past the top of the address space');
  assert.is(khalf.kmap(k, 0, 0x7fff, 0, 1, c0), INVALID_BASE, 'non-canonical');
  assert.is(khalf.kmap(k, 0, vaHi(khalf.KHEAP_VA), vaLo(khalf.KHEAP_VA), 1, c0), ALREADY_MAPPED);
  assert.is(khalf.kunmap(k, c0, vaHi(NEW), vaLo(NEW)), NOT_MAPPED, 'never mapped');
  assert.is(khalf.kunmap(k, c0, 0, 0x40_0000), INVALID_BASE);
  assert.is(khalf.kunmap(k, c0, vaHi(khalf.KHEAP_VA + 4096), vaLo(khalf.KHEAP_VA + 4096)), NOT_MAPPED, 'inside a mapping, not its base');
  assert.is(JSON.stringify(khalf.kentries(k)), before, 'nothing changed');
  assert.equal(checkConservation(m), []);
  await m.shutdown();
});

K('the kernel-half oracle fires on an entry the method does not allow; the stale-tlb oracle when a kernel access reaches a frame not its own (lazy removal)', async () => {
  const { m, p, c0 } = await boot('eager');
  const k = m.kernel;
  assert.is(khalf.kmap(k, 0, vaHi(NEW), vaLo(NEW), 1, c0), OK);
  const w = k.vspace(p).root(1) * 1024 + TOP * 2;
  const saved = m.mem[w];
  m.mem[w] = 0; // a lost eager update
  const v = checkKernelHalf(m);
  assert.is(v.length, 1);
  assert.match(v[0].detail, new RegExp(`space ${p} replica 1: top-level kernel entry ${TOP} is missing, the master's 0x`));
  m.mem[w] = saved;
  assert.equal(checkKernelHalf(m), []);
  await m.shutdown();
  // The lazy method's removal: a process's stale entry leads a kernel load to another process's frame.
  const r = await (await import('../src/workloads/races.js')).findRace('lazy-kernel-removal')?.run();
  assert.ok(r?.ok, r?.steps.join('\n'));
});

K('a dump shows the kernel half in every root and replica, the same kernel mappings in each (eager)', async () => {
  const { m, p, q, c0 } = await boot('eager');
  assert.is(khalf.kmap(m.kernel, 0, vaHi(NEW), vaLo(NEW), 3, c0), OK);
  const roots = [p, q].flatMap((s) => [0, 1].map((r) => ({ label: `space ${s} replica ${r}`, cr3: BigInt(m.kernel.vspace(s).root(r)) * 4096n, la57: false })));
  const dir = mkdtempSync(join(tmpdir(), 'nrvm-khalf-'));
  const { content } = await writeDump(m, dir, roots);
  const kernel = content.roots.map((r) => JSON.stringify(r.mappings.filter((x) => BigInt(x.va) >= 1n << 63n).map((x) => [x.va, x.pa, x.size, x.global, x.user])));
  assert.ok(JSON.parse(kernel[0]).length === khalf.KHEAP_PAGES + 2 + 3, 'heap, per-core pages and the new mapping');
  for (const k of kernel) assert.is(k, kernel[0], 'identical in every root and replica');
  await m.shutdown();
});

K.run();
