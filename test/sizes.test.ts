// Correct at every size (issue 16). Physical memory above 4 GiB: frames whose numbers need a page-table entry's high
// half — page tables, the root a CR3 load names, data frames, copy-on-write copies, zero fills —
// through the kernel, on a machine whose second node starts at 4 GiB; and the address-space
// stress run with its oracles on that machine. A CR3 built from the root's frame number by a
// 32-bit multiply once dropped the root's high bits: every walk of node 1 went through another
// frame (spurious faults by the hundred thousand, stale-tlb violations).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bootLocal } from './helpers.js';
import { ACC_READ, ACC_WRITE } from '../src/hw/fault.js';
import { FRAME_WORDS } from '../src/hw/pte.js';
import { cr3Hi, cr3Lo } from '../src/hw/regs.js';
import { checkConservation, checkConvergence, checkLogs } from '../src/check/kernel.js';
import { OK, R_USER, R_WRITE } from '../src/kernel/ops.js';
import * as faults from '../src/kernel/fault.js';
import * as forks from '../src/kernel/fork.js';
import * as procs from '../src/kernel/proc.js';
import * as refs from '../src/kernel/refs.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as spaces from '../src/kernel/space.js';
import * as vm from '../src/kernel/vm.js';
import { DEFAULT_VM_MIX, runVmStress } from '../src/cli/vmstress.js';
import { Machine } from '../src/machine/machine.js';
import type { Cpu } from '../src/hw/cpu.js';
import { S_LOCK_PROGRESS } from '../src/kernel/layout.js';

/** The first frame at or above 4 GiB. */
const FOUR_GIB = 2 ** 20;

const H = suite('memory above 4 GiB');

H('CR3 holds a root above 4 GiB in both halves, with its PCID and the no-flush bit', () => {
  const pfn = FOUR_GIB + 0x12345;
  assert.is(cr3Hi(pfn, false), 1);
  assert.is(cr3Lo(pfn, 7), 0x12345007);
  assert.is(cr3Hi(pfn, true) >>> 0, 0x80000001);
  assert.is(cr3Lo(0xfffff, 0) >>> 0, 0xfffff000);
  assert.is(cr3Hi(0xfffff, false), 0);
});

H('a core of the node above 4 GiB maps, writes, forks, copies and zero-fills through its own tables', async () => {
  const m = await bootLocal({ cores: 2, nodes: 2, memory: '8GiB' });
  const k = m.kernel;
  const cpu = m.attachHere(1); // core 1 is node 1's: frames from 4 GiB up
  try {
    const s = spaces.createSpace(k);
    procs.spawn(k, s, -1);
    const va = 0x40_0000;
    assert.is(vm.mapAnon(k, 1, s, 0, va, 1, R_USER | R_WRITE, cpu), OK);
    const data = k.anonFrame;
    const root = k.vspace(s).root(1);
    assert.ok(data >= FOUR_GIB, `the data frame ${data} is above 4 GiB`);
    assert.ok(root >= FOUR_GIB, `replica 1's root ${root} is above 4 GiB`);

    shootdowns.switchTo(k, cpu, s);
    assert.is(cpu.regs.rootPfn, root, 'CR3 names the whole root');
    assert.is(faults.access(k, cpu, ACC_WRITE, 0, va, 0x1234, 0x5678), 0);
    assert.is(m.mem[data * FRAME_WORDS], 0x5678, 'the store reached the data frame');
    assert.is(faults.access(k, cpu, ACC_READ, 0, va), 0);
    assert.equal([cpu.mmu.valHi, cpu.mmu.valLo], [0x1234, 0x5678]);
    assert.is(k.stats.spuriousFaults, 0);

    // Fork, then the parent's write copies the page into a new frame of node 1.
    const child = forks.fork(k, cpu, s);
    assert.ok(child >= 0, 'fork');
    procs.spawn(k, child, procs.pidOf(k, s));
    assert.is(faults.access(k, cpu, ACC_WRITE, 0, va, 0, 7), 0);
    assert.is(k.stats.cowCopies, 1);
    const copy = vm.resolve(k, 1, s, 0, va, cpu);
    assert.ok(copy.code === OK && copy.pa / 4096 >= FOUR_GIB && copy.pa / 4096 !== data, 'the copy is a new frame above 4 GiB');
    shootdowns.switchTo(k, cpu, child);
    assert.is(cpu.regs.rootPfn, k.vspace(child).root(1));
    assert.is(faults.access(k, cpu, ACC_READ, 0, va), 0);
    assert.equal([cpu.mmu.valHi, cpu.mmu.valLo], [0x1234, 0x5678], "the child still reads the parent's old value");

    // A demand-zero page: the first write takes a zeroed frame of node 1.
    assert.is(vm.mapZero(k, 1, child, 0, 0x50_0000, R_USER | R_WRITE, cpu).code, OK);
    assert.is(faults.access(k, cpu, ACC_WRITE, 0, 0x50_0000, 0, 9), 0);
    assert.is(k.stats.zeroFills, 1);
    const z = vm.resolve(k, 1, child, 0, 0x50_0000, cpu);
    assert.ok(z.code === OK && z.pa / 4096 >= FOUR_GIB, 'the zero fill took a frame above 4 GiB');

    // Unmap frees what it held; the replicas agree, the logs are sound and no frame is lost.
    const u = vm.unmap(k, cpu, child, 0, 0x50_0000);
    assert.is(u.code, OK);
    for (let p = 0; p < u.pages; p++) refs.release(k, u.pfn + p, child);
    assert.ok(faults.access(k, cpu, ACC_READ, 0, 0x50_0000) !== 0, 'the unmapped page faults');
    assert.is(k.stats.spuriousFaults, 0, 'no walk went astray');
    shootdowns.leave(k, cpu);
    assert.equal(checkConvergence(m), []);
    assert.equal(checkLogs(m), []);
    assert.equal(checkConservation(m), []);
  } finally {
    cpu.detach();
    await m.shutdown();
  }
});

H('the address-space stress runs clean with its second node above 4 GiB', async () => {
  const r = await runVmStress({
    machine: { cores: 4, nodes: 2, memory: '8GiB' }, seconds: 1, seed: 1, processes: 2, opsPerRound: 4000, slots: 64, mix: DEFAULT_VM_MIX,
  }, 'test');
  assert.equal(r.violations, []);
  assert.ok(r.spuriousFaults < r.faults / 100, `spurious faults ${r.spuriousFaults} of ${r.faults}`);
});

H.run();

// --seconds holds: a round ends at the run's deadline, not only after its operations (a billion
// per core here, hours of work): the bound asserted is generous, the property is that it ends.
const T = suite('the stress run ends at its deadline');

T('a round of a billion operations per core ends when the run is out of time', async () => {
  const r = await runVmStress({
    machine: { cores: 8, nodes: 2, memory: '64MiB' }, seconds: 1, seed: 3, processes: 2, opsPerRound: 1e9, slots: 64, mix: DEFAULT_VM_MIX,
  }, 'test');
  assert.equal(r.violations, []);
  assert.is(r.rounds, 1);
  assert.ok(r.seconds < 60, `ran ${r.seconds} s`);
});

T.run();

// A fork may hold a space's lock past the machine's wait limit when simulated cores outnumber
// the CPUs; the limit is on the holder making no progress, so a waiter keeps waiting while the
// fork moves, and fails naming what it waited for only when it stops. Driven on one thread with
// a fake clock: the waiter's interrupt poll advances it (no sleeps), plays the holder's progress
// and finally releases the lock.
const L = suite('space lock: the bound is on progress');

L('a waiter outlasts the wait limit while the holder makes progress, and fails when it makes none', async () => {
  const m = await Machine.boot({ cores: 1, nodes: 1, memory: '16MiB', waitLimitMs: 1000 }, { pool: false });
  const k = m.kernel;
  const s = spaces.createSpace(k);
  procs.spawn(k, s, -1);
  const progress = k.v.klayout.spaceBase(s) + S_LOCK_PROGRESS;
  const realNow = Date.now;
  let now = realNow();
  Date.now = () => now;
  try {
    let polls = 0;
    let moving = true;
    const core = {
      id: 0,
      apic: {
        poll(): void {
          now += 100; // 100 ms of the holder's time per step of the waiter
          polls++;
          if (moving && polls % 5 === 0) Atomics.add(k.v.k, progress, 1);
          if (moving && polls === 400) spaces.unlockExclusive(k, s); // 40 s of fake time: forty limits
        },
      },
    } as unknown as Cpu;
    spaces.lockExclusive(k, s);
    spaces.lockShared(k, s, core);
    assert.is(polls, 400, 'it waited until the holder let go');
    spaces.unlockShared(k, s);

    moving = false;
    spaces.lockExclusive(k, s);
    assert.throws(() => spaces.lockShared(k, s, core), /space \d+'s lock \(a fork, share or attach holds it and made no progress\)/);
    spaces.unlockExclusive(k, s);
  } finally {
    Date.now = realNow;
    await m.shutdown();
  }
});

L.run();

// A dead worker is a reported failure, never a hang: the run is aborted, the dead core's result
// names it and the cause, and the machine runs again afterwards (a new worker takes the core).
const D = suite('a dead worker');

D('a core whose worker dies ends the run with a core-failure naming it, and the machine runs on', async () => {
  const r = await runVmStress({
    machine: { cores: 3, nodes: 1, memory: '16MiB', inject: ['core-crash'] }, seconds: 2, seed: 1, processes: 2, opsPerRound: 1000, slots: 64, mix: DEFAULT_VM_MIX,
  }, 'test');
  const dead = r.violations.filter((v) => v.kind === 'core-failure' && /core 2: its worker died \(worker exited with code: 70\)/.test(v.detail));
  assert.is(dead.length, 1, JSON.stringify(r.violations));
  assert.is(r.rounds, 1, 'the run stopped at the failing round');

  const m = await Machine.boot({ cores: 2, nodes: 1, memory: '8MiB', inject: ['core-crash'] });
  try {
    const crash = await m.run([0, 1].map((c) => ({ core: c, program: { kind: 'vm-mix', seed: 1, count: 10, cores: 2, slots: 4, regionBase: 2 ** 32, mix: { ...DEFAULT_VM_MIX } } })));
    assert.equal(crash.map((x) => x.ok), [false, false]);
    assert.match(crash[1].error ?? '', /core 1: its worker died/);
    const again = await m.run([0, 1].map((c) => ({ core: c, program: { kind: 'ops', ops: [{ op: 'ping', target: 1 - c }] } })));
    assert.equal(again.map((x) => x.ok), [true, true], 'both cores run again');
  } finally {
    await m.shutdown();
  }
});

D.run();
