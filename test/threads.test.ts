// Threads (issue 12; kernel/thread.ts): a thread's registers (PKRU, CPL, AC) are saved and restored
// with it; switching between threads of one process loads no CR3, to another process's thread it
// loads that space's CR3 with its PCID (no flush); each thread has its own demand-zero stack page
// (in the RPAL slot for a process in one); exit gives the stack back; bad input is EINVAL.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Machine } from '../src/machine/machine.js';
import { ACC_READ, ACC_WRITE } from '../src/hw/fault.js';
import { CR4_PAE, CR4_PKE } from '../src/hw/regs.js';
import { CTR } from '../src/hw/layout.js';
import { PROC_RUNNING, PROC_TERMINATED } from '../src/kernel/layout.js';
import { EINVAL, OK, R_USER, R_WRITE } from '../src/kernel/ops.js';
import * as vm from '../src/kernel/vm.js';
import * as faults from '../src/kernel/fault.js';
import * as procs from '../src/kernel/proc.js';
import * as rpal from '../src/kernel/rpal.js';
import * as spaces from '../src/kernel/space.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as threads from '../src/kernel/thread.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';
import { DataType, Pointer, Simulator, ValueType } from '../src/machine/simulator.js';

async function boot(): Promise<{ m: Machine; p: number; q: number }> {
  const m = await Machine.boot({ cores: 2, nodes: 1, memory: '16MiB', kernel: { maxSpaces: 4 } }, { pool: false });
  const k = m.kernel;
  const p = procs.spawn(k, spaces.createSpace(k), -1);
  const q = procs.spawn(k, spaces.createSpace(k), -1);
  procs.setProcessState(k, p, PROC_RUNNING);
  procs.setProcessState(k, q, PROC_RUNNING);
  m.setRegisters(0, { cpl: 3, cr4: CR4_PAE | CR4_PKE });
  return { m, p, q };
}

const T = suite('threads');

T('switching threads of one process loads no CR3; another process\'s thread loads its CR3 with its PCID, no flush; PKRU goes with the thread', async () => {
  const { m, p, q } = await boot();
  const k = m.kernel;
  const [p1, p2, q1] = [threads.spawnThread(k, p), threads.spawnThread(k, p), threads.spawnThread(k, q)];
  assert.ok(p1 >= 0 && p2 >= 0 && q1 >= 0);
  const cpu = m.attachHere(0);
  assert.is(threads.switchThread(k, cpu, p1), OK);
  cpu.wrpkru(0b1100); // thread p1 denies key 1
  const cr3 = cpu.regs.cr3lo;
  const switches = k.stats.switches;
  const loads = (): number[] => [cpu.ctr[CTR.cr3Flushes], cpu.ctr[CTR.cr3NoFlush]];
  const before = loads();
  assert.is(threads.switchThread(k, cpu, p2), OK);
  assert.equal(loads(), before, 'same process: no MOV to CR3 at all');
  assert.is(cpu.regs.cr3lo, cr3);
  assert.is(k.stats.switches, switches, 'no address-space switch');
  assert.is(cpu.regs.pkru, 0, "p2's own PKRU");
  assert.is(threads.switchThread(k, cpu, q1), OK);
  assert.is.not(cpu.regs.cr3lo, cr3, "another process: its space's CR3");
  assert.is(cpu.regs.cr3lo & 0xfff, procs.processOf(k, q).space + 1, "with q's PCID");
  assert.is(k.stats.switches, switches + 1);
  assert.equal(loads(), [before[0], before[1] + 1], 'one CR3 load, without a flush (bit 63: the PCID is kept)');
  assert.is(threads.switchThread(k, cpu, p1), OK);
  assert.is(cpu.regs.pkru, 0b1100, "p1's PKRU restored");
  assert.is(threads.threadOf(k, p2).state, 1, 'p2 runnable');
  assert.is(threads.threadOf(k, p1).core, 0);
  cpu.detach();
});

T('each thread has its own stack page, demand-zero, in the RPAL slot for a process in one; exit gives it back', async () => {
  const { m, p, q } = await boot();
  const k = m.kernel;
  assert.is(rpal.enterSlot(k, procs.processOf(k, q).space, 3), OK);
  const a = threads.spawnThread(k, p);
  const b = threads.spawnThread(k, p);
  const c = threads.spawnThread(k, q);
  const [sa, sb, sc] = [a, b, c].map((t) => threads.threadOf(k, t).stack);
  assert.is.not(sa, sb);
  assert.ok(sc >= 3 * rpal.SLOT_BYTES && sc < 4 * rpal.SLOT_BYTES, 'in slot 3');
  const cpu = m.attachHere(0);
  assert.is(threads.switchThread(k, cpu, a), OK);
  const free = m.frames.freeCount();
  assert.is(faults.access(k, cpu, ACC_WRITE, vaHi(sa), vaLo(sa), 0, 42), 0);
  assert.is(faults.access(k, cpu, ACC_READ, vaHi(sb), vaLo(sb)), 0);
  assert.is(cpu.mmu.valLo, 0, "b's stack is its own (still the zero page)");
  assert.is(m.frames.freeCount(), free - 1, "a's stack took a frame");
  assert.is(threads.exitThread(k, cpu), OK);
  assert.is(m.frames.freeCount(), free, 'and gave it back');
  assert.is(threads.threadOf(k, a).state, 0, 'the tid is free');
  assert.ok(faults.access(k, cpu, ACC_READ, vaHi(sa), vaLo(sa)) !== 0, 'the stack is unmapped: a read faults');
  cpu.detach();
});

T('bad input is EINVAL and changes nothing', async () => {
  const { m, p } = await boot();
  const k = m.kernel;
  const ts = Array.from({ length: 8 }, () => threads.spawnThread(k, p));
  assert.ok(ts.every((t) => t >= 0));
  assert.is(threads.spawnThread(k, p), -1 - EINVAL, 'a ninth thread');
  assert.is(threads.spawnThread(k, 3), -1 - EINVAL, 'no such process');
  const c0 = m.attachHere(0);
  m.setRegisters(1, { cpl: 3 });
  const c1 = m.attachHere(1);
  assert.is(threads.switchThread(k, c0, ts[0]), OK);
  assert.is(threads.switchThread(k, c1, ts[0]), EINVAL, 'running on another core');
  assert.is(threads.switchThread(k, c1, 999), EINVAL, 'no such thread');
  assert.is(threads.exitThread(k, c1), EINVAL, 'core 1 runs no thread');
  c0.detach();
  c1.detach();
});

T('behaviour 30: an RPAL call switches the user context only; the callee\'s first kernel entry makes its process current once; the return restores the caller; an exited callee is an error to the caller', async () => {
  const { m, p, q } = await boot();
  const k = m.kernel;
  const [sp, sq] = [procs.processOf(k, p).space, procs.processOf(k, q).space];
  assert.is(rpal.enterSlot(k, sp, 1), OK);
  assert.is(rpal.enterSlot(k, sq, 2), OK);
  const X = 2 * rpal.SLOT_BYTES + 0x40_0000;
  const Y = X + 0x10_0000;
  const Y2 = X + 0x20_0000;
  assert.is(vm.mapAnon(k, 0, sq, vaHi(X), vaLo(X), 1, R_USER | R_WRITE), OK);
  m.mem[k.anonFrame * 1024] = 0x7e57;
  assert.is(vm.mapZero(k, 0, sq, vaHi(Y), vaLo(Y), R_USER | R_WRITE).code, OK);
  assert.is(vm.mapZero(k, 0, sq, vaHi(Y2), vaLo(Y2), R_USER | R_WRITE).code, OK);
  const p1 = threads.spawnThread(k, p);
  const q1 = threads.spawnThread(k, q);
  const cpu = m.attachHere(0);
  assert.is(threads.switchThread(k, cpu, q1), OK);
  cpu.wrpkru(0b110000); // q1's own PKRU (denies key 2)
  assert.is(threads.switchThread(k, cpu, p1), OK);
  assert.is(threads.rpalCall(k, cpu, q1), EINVAL, "Q's slot is not shared into P yet");
  assert.is(rpal.share(k, sp, sq), OK);
  const cr3 = cpu.regs.cr3lo;
  const loads = (): number => cpu.ctr[CTR.cr3Flushes] + cpu.ctr[CTR.cr3NoFlush];
  const [l0, s0] = [loads(), k.stats.switches];
  assert.is(threads.rpalCall(k, cpu, q1), OK);
  assert.is(cpu.regs.pkru, 0b110000, "the callee's PKRU");
  assert.equal([loads(), cpu.regs.cr3lo, k.current[0]], [l0, cr3, sp], 'no CR3 load: the callee runs in P\'s tables');
  assert.is(faults.access(k, cpu, ACC_READ, vaHi(X), vaLo(X)), 0);
  assert.is(cpu.mmu.valLo, 0x7e57, "the callee reads Q's page through P's tables, no kernel entry");
  assert.is(k.stats.switches, s0);
  assert.is(faults.access(k, cpu, ACC_WRITE, vaHi(Y), vaLo(Y), 0, 1), 0, 'its first page fault (a zero fill) is its first kernel entry...');
  assert.is(k.current[0], sq, '...which made Q current (the lazy kernel switch)');
  assert.is(k.stats.switches, s0 + 1);
  assert.is(faults.access(k, cpu, ACC_WRITE, vaHi(Y2), vaLo(Y2), 0, 2), 0);
  assert.is(k.stats.switches, s0 + 1, 'one lazy switch, not one per entry');
  assert.is(threads.rpalReturn(k, cpu), OK);
  assert.equal([k.current[0], cpu.regs.pkru, k.runs[0]], [sp, 0, p1], 'back in P, with p1\'s PKRU');
  assert.is(threads.rpalReturn(k, cpu), EINVAL, 'p1 was not called');
  // Q exits; it is reaped once no core runs a space its slot is shared into: a call into it is then
  // an error, and its slot is gone from P.
  procs.setProcessState(k, q, PROC_TERMINATED);
  assert.is(procs.reapZombies(k), 0, 'not while core 0 runs P, which shares its slot');
  shootdowns.leave(k, cpu);
  assert.is(procs.reapZombies(k), 1);
  shootdowns.switchTo(k, cpu, sp);
  assert.is(threads.rpalCall(k, cpu, q1), EINVAL, 'the callee\'s process exited');
  assert.ok(faults.access(k, cpu, ACC_READ, vaHi(X), vaLo(X)) !== 0, "touching the exited process's slot is a fault returned to the caller, not a fault forever");
  cpu.detach();
});

T("the seed's Simulator has threads: a main thread per process, spawnThread and switchThread (one memory, no CR3 load within a process), fork copies the forking thread, exit and kill", async () => {
  const lines: string[] = [];
  const sim = await Simulator.begin(false, { out: (l) => lines.push(l) });
  try {
    const k = sim.machine.kernel;
    const cpu = () => (sim as unknown as { cpu: { ctr: Int32Array } }).cpu;
    assert.ok(sim.tid >= 0 && sim.threads().length === 1, 'process 0 starts with its main thread');
    const x = new Pointer();
    sim.register(x);
    sim.write(x, ValueType.UnsignedInt(7));
    const t2 = sim.spawnThread();
    assert.ok(t2 >= 0 && sim.threads().length === 2 && threads.threadOf(k, t2).stack !== threads.threadOf(k, sim.tid).stack, 'a second thread, its own stack');
    const cr3 = cpu().ctr[CTR.cr3Flushes] + cpu().ctr[CTR.cr3NoFlush];
    sim.switchThread(t2);
    assert.is(sim.tid, t2);
    assert.is(sim.read(x, DataType.UnsignedInt)?.getValue(), 7, "the other thread sees the process's memory");
    assert.is(cpu().ctr[CTR.cr3Flushes] + cpu().ctr[CTR.cr3NoFlush], cr3, 'no CR3 load between threads of one process');
    const child = sim.fork();
    assert.ok(child > 0);
    const ct = sim.threads(child);
    assert.equal(ct.map((t) => t % 8), [t2 % 8], 'the child has a copy of the forking thread, at its index');
    assert.is(threads.threadOf(k, ct[0]).stack, threads.threadOf(k, t2).stack, 'on the same stack address (a copy-on-write copy)');
    sim.switch(child);
    assert.ok(sim.pid === child && sim.tid === ct[0], "switch runs the child's thread");
    assert.is(cpu().ctr[CTR.cr3Flushes] + cpu().ctr[CTR.cr3NoFlush], cr3 + 1, 'one CR3 load to another process');
    sim.exitThread();
    assert.match(lines.at(-1) ?? '', /Last thread of process 1: kill the process instead/);
    sim.switchThread(999);
    assert.match(lines.at(-1) ?? '', /No thread 999/);
    sim.switchThread(t2);
    assert.is(sim.pid, 0, "switchThread to a thread of another process switches to it");
    const main = sim.threads().find((t) => t !== t2) as number;
    sim.exitThread();
    assert.ok(sim.tid === main && sim.threads().length === 1, 'an exited thread is gone; the other runs');
    sim.kill(child);
    assert.equal(sim.threads(child), [], "a killed process's threads go with it");
    assert.is(procs.processOf(k, child).state, PROC_TERMINATED);
  } finally {
    await sim.end();
  }
});

T.run();
