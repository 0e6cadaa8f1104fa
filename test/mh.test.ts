// MH's mapping states (reference/seed-behaviours.md 19-24) under the kernel personality 'mh',
// driven from the main thread with cores attached here: the states and who may move a page
// between them, the errors as values (and that a refused change changes nothing), wiring by
// export with nesting, DMA by the device's engine, I/O mappings that reach the device through the
// MMU, MH's fork, the user-level copy-on-write handler, bad input to every new operation, the
// state oracle against injected bugs, and the DMA frame-owner oracle.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ConfigError, Machine } from '../src/machine/machine.js';
import type { Cpu } from '../src/hw/cpu.js';
import { ACC_READ, ACC_WRITE } from '../src/hw/fault.js';
import { DEVICE_ID, DMA_READ, DMA_WRITE, REG_ACCESSES, REG_DMA_DONE, REG_DMA_ERRORS, REG_DMA_SUM, REG_SCRATCH } from '../src/hw/device.js';
import fc from 'fast-check';
import { findEntry } from '../src/hw/pagetable.js';
import { CTR } from '../src/hw/layout.js';
import { PTE_PCD, PTE_PWT } from '../src/hw/pte.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';
import * as faults from '../src/kernel/fault.js';
import * as forks from '../src/kernel/fork.js';
import * as mh from '../src/kernel/mh.js';
import { scratchVa } from '../src/kernel/mrg.js';
import {
  ALREADY_MAPPED, EBUSY, EINVAL, EPERM, INVALID_FRAME, NOT_MAPPED, OK, R_COW, R_IO, R_NX, R_USER, R_WIRED, R_WRITE,
} from '../src/kernel/ops.js';
import * as refs from '../src/kernel/refs.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as spaces from '../src/kernel/space.js';
import * as vm from '../src/kernel/vm.js';
import type { MapEntry } from '../src/kernel/mapdb.js';
import { checkDma, checkMhEvents } from '../src/check/mh.js';
import { EV_ADJUST, EV_EXPORT, EV_MAP_IO, EV_UNMAP, EVENT_WORDS } from '../src/machine/mhops.js';
import { encodeOps, ProgramError } from '../src/machine/program.js';
import type { CoreResult } from '../src/machine/executor.js';
import { runVmStress, DEFAULT_MH_MIX } from '../src/cli/vmstress.js';

const RW = R_WRITE | R_USER;
const RO = R_USER;
const A = 0x10_0000;
const B = 0x20_0000;
const IO = 0x30_0000;

interface Mh {
  m: Machine;
  s: number;
  c0: Cpu;
}

async function boot(opts: { inject?: string[]; personality?: 'mh' | 'default' } = {}): Promise<Mh> {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '16MiB', kernel: { personality: opts.personality ?? 'mh', maxSpaces: 8 }, inject: opts.inject ?? [] }, { pool: false });
  const s = spaces.createSpace(m.kernel);
  m.setRegisters(0, { cpl: 3 });
  m.setRegisters(1, { cpl: 3 });
  const c0 = m.attachHere(0);
  m.attachHere(1);
  shootdowns.switchTo(m.kernel, c0, s);
  return { m, s, c0 };
}

/** The mapping based at va in space s (its rights word), or null. */
function at(x: Mh, va: number, s = x.s): MapEntry | null {
  const e: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };
  return vm.lookup(x.m.kernel, 0, s, vaHi(va), vaLo(va), e) && e.va === va ? e : null;
}

function state(x: Mh, va: number, s = x.s): string {
  const e = at(x, va, s);
  return mh.STATE_NAMES[mh.stateOf(e ? e.rights : -1)];
}

function map(x: Mh, va: number, rights = RW): number {
  assert.is(vm.mapAnon(x.m.kernel, 0, x.s, vaHi(va), vaLo(va), 1, rights, x.c0), OK);
  return x.m.kernel.anonFrame;
}

const exp = (x: Mh, va: number, pages = 1): number => mh.exportRange(x.m.kernel, x.c0, x.s, vaHi(va), vaLo(va), pages);
const adj = (x: Mh, va: number, rights: number): number => vm.adjust(x.m.kernel, x.c0, x.s, vaHi(va), vaLo(va), rights).code;
const unm = (x: Mh, va: number): number => vm.unmap(x.m.kernel, x.c0, x.s, vaHi(va), vaLo(va)).code;
const mv = (x: Mh, dst: number, src: number): number => mh.move(x.m.kernel, x.c0, x.s, vaHi(dst), vaLo(dst), vaHi(src), vaLo(src));
const write = (x: Mh, va: number, v: number): number => faults.access(x.m.kernel, x.c0, ACC_WRITE, vaHi(va), vaLo(va), 0, v);
function read(x: Mh, va: number): number {
  assert.is(faults.access(x.m.kernel, x.c0, ACC_READ, vaHi(va), vaLo(va)), 0, `read 0x${va.toString(16)}`);
  return x.c0.mmu.valLo;
}

const T = suite('mh');

T('the states: Unmapped, Private RW/RO, Wired RW/RO, I/O, RO-Shared, each reached and derived from the rights word (19)', async () => {
  const x = await boot();
  assert.is(state(x, A), 'Unmapped');
  map(x, A);
  assert.is(state(x, A), 'Private RW');
  assert.is(adj(x, A, RO), OK);
  assert.is(state(x, A), 'Private RO');
  assert.ok(exp(x, A) >= 0);
  assert.is(state(x, A), 'Wired RO');
  map(x, B);
  assert.ok(exp(x, B) >= 0);
  assert.is(state(x, B), 'Wired RW');
  assert.is(mh.mapIo(x.m.kernel, 0, x.s, 0, IO, 0, 1, RW, x.c0), OK);
  assert.is(state(x, IO), 'I/O');
  const c = map(x, 0x40_0000);
  assert.ok(c >= 0);
  const child = forks.fork(x.m.kernel, x.c0, x.s);
  assert.ok(child >= 0);
  assert.is(state(x, 0x40_0000), 'RO-Shared');
  // Every replica derives the same state from its own copy.
  const e1: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };
  x.m.kernel.sync(x.s, 1);
  assert.ok(vm.lookup(x.m.kernel, 1, x.s, 0, A, e1));
  assert.is(mh.STATE_NAMES[mh.stateOf(e1.rights)], 'Wired RO');
  await x.m.shutdown();
});

T('the executable bit changes only on Private, unwired pages (19)', async () => {
  const x = await boot();
  map(x, A);
  assert.is(adj(x, A, RW | R_NX), OK);
  assert.ok(((at(x, A) as MapEntry).rights & R_NX) !== 0);
  assert.is(adj(x, A, RW), OK, 'and back');
  map(x, B);
  exp(x, B);
  assert.is(adj(x, B, RW | R_NX), EBUSY, 'wired');
  mh.mapIo(x.m.kernel, 0, x.s, 0, IO, 0, 1, RW, x.c0);
  assert.is(adj(x, IO, RW | R_NX), EBUSY, 'I/O');
  map(x, 0x40_0000);
  forks.fork(x.m.kernel, x.c0, x.s);
  assert.is(adj(x, 0x40_0000, RO | R_NX), EINVAL, 'RO-Shared');
  await x.m.shutdown();
});

T('fork: every present, unwired, non-I/O page (RW and RO) becomes RO-Shared in both, refcount + 1; wired and I/O are absent in the child (20)', async () => {
  const x = await boot();
  const k = x.m.kernel;
  const frw = map(x, A, RW);
  const fro = map(x, B, RO);
  map(x, 0x40_0000);
  exp(x, 0x40_0000);
  mh.mapIo(k, 0, x.s, 0, IO, 0, 1, RW, x.c0);
  const child = forks.fork(k, x.c0, x.s);
  for (const [va, f] of [[A, frw], [B, fro]]) {
    for (const s of [x.s, child]) {
      assert.is(state(x, va, s), 'RO-Shared', `0x${va.toString(16)} in space ${s}`);
      assert.is(((at(x, va, s) as MapEntry).rights & R_WRITE), 0, 'the read/write bit is lost (MH)');
    }
    assert.is(refs.refcount(k, f), 2);
  }
  assert.is(state(x, 0x40_0000, child), 'Unmapped', 'wired: absent in the child');
  assert.is(state(x, IO, child), 'Unmapped', 'I/O: absent in the child');
  assert.is(state(x, 0x40_0000), 'Wired RW', 'the parent keeps its wired page');
  await x.m.shutdown();
});

T('errors as values: EINVAL (writable on RO-Shared), EPERM (not present), EBUSY (change, unmap or move of wired or I/O); a refusal changes nothing (21)', async () => {
  const x = await boot();
  const k = x.m.kernel;
  map(x, A);
  forks.fork(k, x.c0, x.s);
  const cowBefore = (at(x, A) as MapEntry).rights;
  assert.is(adj(x, A, RW), EINVAL);
  assert.is((at(x, A) as MapEntry).rights, cowBefore, 'still RO-Shared, same rights');
  assert.is(adj(x, 0x50_0000, RW), EPERM, 'not present');
  assert.is(state(x, 0x50_0000), 'Unmapped');
  map(x, B);
  exp(x, B);
  map(x, 0x40_0000);
  const wired = (at(x, B) as MapEntry).rights;
  const leaf = findEntry(x.m.mem, k.vspace(x.s).root(0), false, 0, B, 12);
  const leafBefore = x.m.mem[leaf];
  assert.is(adj(x, B, RO), EBUSY);
  assert.is(unm(x, B), EBUSY);
  assert.is(mv(x, B, 0x40_0000), EBUSY, 'move over a wired page');
  assert.is(mv(x, 0x40_0000, B), EBUSY, 'move of a wired page');
  assert.is((at(x, B) as MapEntry).rights, wired);
  assert.is(x.m.mem[leaf], leafBefore, 'the leaf is untouched');
  assert.is(state(x, 0x40_0000), 'Private RW', 'the other page of the refused move is untouched');
  mh.mapIo(k, 0, x.s, 0, IO, 0, 1, RW, x.c0);
  assert.is(adj(x, IO, RO), EBUSY);
  assert.is(unm(x, IO), EBUSY);
  assert.is(mv(x, IO, 0x40_0000), EBUSY);
  assert.is(state(x, IO), 'I/O');
  // RO-Shared leaves its state only by unmap.
  assert.is(unm(x, A), OK);
  await x.m.shutdown();
});

T('wiring nests: wire, wire, unwire leaves it wired; the last unwire makes it Private with its protection unchanged (22)', async () => {
  const x = await boot();
  map(x, A);
  assert.is(adj(x, A, RO | R_NX), OK);
  const s1 = exp(x, A);
  const s2 = exp(x, A);
  assert.ok(s1 >= 0 && s2 >= 0 && s1 !== s2);
  assert.is(mh.wireCount((at(x, A) as MapEntry).rights), 2);
  assert.is(mh.unexport(x.m.kernel, x.c0, x.s, s1), OK);
  assert.is(state(x, A), 'Wired RO', 'still wired');
  assert.is(unm(x, A), EBUSY);
  assert.is(mh.unexport(x.m.kernel, x.c0, x.s, s2), OK);
  const e = at(x, A) as MapEntry;
  assert.is(state(x, A), 'Private RO');
  assert.is(e.rights & (R_WIRED | R_WRITE), 0);
  assert.ok((e.rights & R_NX) !== 0, 'NX kept');
  assert.is(unm(x, A), OK, 'and now it can go');
  await x.m.shutdown();
});

T("MH's last sharer: the write makes it Private RO (no copy), the retried write faults again and the user-level handler makes it writable: 2 faults, 0 copies; default: 1 fault (23)", async () => {
  for (const [personality, want] of [['mh', 2], ['default', 1]] as const) {
    const x = await boot({ personality });
    const k = x.m.kernel;
    const f = map(x, A);
    const child = forks.fork(k, x.c0, x.s);
    // The child goes: the parent is the last sharer.
    spaces.destroySpace(k, child, (pfn, pages, r) => refs.releaseMapping(k, child, pfn, pages, r));
    assert.is(refs.refcount(k, f), 1);
    assert.is(state(x, A), 'RO-Shared');
    const pf = x.c0.ctr[CTR.pageFaults];
    const copies = k.stats.userCopies + k.stats.cowCopies;
    assert.is(write(x, A, 9), 0);
    assert.is(x.c0.ctr[CTR.pageFaults] - pf, want, `${personality}: page faults`);
    assert.is(k.stats.userCopies + k.stats.cowCopies, copies, `${personality}: no copy`);
    assert.is((at(x, A) as MapEntry).pfn, f, 'the same frame');
    assert.is(state(x, A), 'Private RW');
    await x.m.shutdown();
  }
});

T('a copy-on-write fault goes to the user-level handler: it copies into its scratch page and moves it over the shared mapping (24)', async () => {
  const x = await boot();
  const k = x.m.kernel;
  const f = map(x, A);
  assert.is(write(x, A + 8, 41), 0);
  const child = forks.fork(k, x.c0, x.s);
  const uf = k.stats.userFaults;
  assert.is(write(x, A + 16, 42), 0);
  assert.is(k.stats.userFaults - uf, 1, 'one fault reached the process');
  assert.is(k.stats.userCopies, 1, 'its handler copied once');
  const e = at(x, A) as MapEntry;
  assert.ok(e.pfn !== f, 'the parent has a private frame now');
  assert.is(state(x, A), 'Private RW');
  assert.is(refs.refcount(k, f), 1, 'the shared frame lost one reference');
  assert.is(state(x, scratchVa(0)), 'Unmapped', 'the scratch page was moved away');
  assert.is(read(x, A + 8), 41, 'the copy has the old contents');
  assert.is(read(x, A + 16), 42);
  shootdowns.switchTo(k, x.c0, child);
  assert.is(faults.access(k, x.c0, ACC_READ, 0, A + 16), 0);
  assert.is(x.c0.mmu.valLo, 0, 'the child does not see the write');
  await x.m.shutdown();
});

T('I/O: device pages above RAM reached through the MMU, leaves with PCD and PWT; unclaimed offsets read as all ones', async () => {
  const x = await boot();
  const k = x.m.kernel;
  const dev = x.m.device;
  assert.ok(dev);
  assert.is(mh.mapIo(k, 0, x.s, 0, IO, 0, 2, RW, x.c0), OK);
  const leaf = findEntry(x.m.mem, k.vspace(x.s).root(0), false, 0, IO, 12);
  assert.is(x.m.mem[leaf] & (PTE_PCD | PTE_PWT), PTE_PCD | PTE_PWT);
  assert.is((at(x, IO) as MapEntry).pfn, x.m.layout.totalFrames, 'the first frame past RAM');
  const acc = dev.peek(REG_ACCESSES);
  assert.is(read(x, IO), DEVICE_ID);
  assert.is(write(x, IO + REG_SCRATCH * 8, 0x1234), 0);
  assert.is(read(x, IO + REG_SCRATCH * 8), 0x1234);
  assert.is(dev.peek(REG_ACCESSES) - acc, 3, 'every access counted by the device');
  assert.is(read(x, IO + 0x800), -1, 'no register at that offset');
  assert.is(read(x, IO + 4096), -1, 'nor on the second register page');
  assert.is(mh.mapIo(k, 0, x.s, 0, 0x60_0000, 3, 2, RW, x.c0), INVALID_FRAME, 'past the device');
  assert.is(mh.mapIo(k, 0, x.s, 0, 0x60_0000, -1, 1, RW, x.c0), INVALID_FRAME);
  await x.m.shutdown();
});

T('copy-on-write is the only sharing: MapFrame of a frame another process maps is refused under MH, accepted by default', async () => {
  for (const [personality, want] of [['mh', INVALID_FRAME], ['default', OK]] as const) {
    const x = await boot({ personality });
    const f = map(x, A);
    const other = spaces.createSpace(x.m.kernel);
    assert.is(vm.mapFrame(x.m.kernel, 0, other, 0, A, f * 4096, 4096, RW).code, want, personality);
    const fresh = x.m.frames.allocZeroed(0);
    assert.is(vm.mapFrame(x.m.kernel, 0, other, 0, B, fresh * 4096, 4096, RW).code, OK, 'a frame nobody maps');
    assert.is(vm.mapZero(x.m.kernel, 0, other, 0, 0x40_0000, RW).code, personality === 'mh' ? EINVAL : OK, 'demand-zero: MH has none');
    await x.m.shutdown();
  }
});

T('DMA: the engine writes and reads exported frames; a request on a slot not exported is refused; unexport waits for a transfer', async () => {
  const x = await boot();
  const dev = x.m.device;
  assert.ok(dev);
  const f = map(x, A);
  const slot = exp(x, A);
  assert.ok(dev.post(slot, DMA_WRITE, 7));
  assert.is(x.m.serviceDma(), 1);
  assert.ok(x.m.mem.subarray(f * 1024, f * 1024 + 1024).every((w) => w === 7));
  assert.ok(dev.post(slot, DMA_READ, 0));
  x.m.serviceDma();
  assert.is(dev.peek(REG_DMA_SUM), 7 * 1024);
  assert.ok(dev.post(5, DMA_WRITE, 1));
  x.m.serviceDma();
  assert.is(dev.peek(REG_DMA_ERRORS), 1, 'slot 5 was never exported');
  assert.not.ok(dev.post(slot, 9, 0), 'an unknown command');
  assert.is(dev.violations().count, 0);
  await x.m.shutdown();
});

T('the DMA engine runs on its own thread, concurrently with the cores', async () => {
  const m = await Machine.boot({ cores: 2, nodes: 1, memory: '16MiB', kernel: { personality: 'mh' } });
  try {
    const s = spaces.createSpace(m.kernel);
    assert.is(vm.mapAnon(m.kernel, 0, s, 0, A, 4, RW), OK);
    const f = m.kernel.anonFrame;
    const dev = m.device;
    assert.ok(dev);
    // The controller exports for the process (no core needed: the lock and NR take no IPI here).
    const cpu = m.attachHere(0);
    const slot = mh.exportRange(m.kernel, cpu, s, 0, A, 4);
    cpu.detach();
    assert.ok(slot >= 0);
    for (let i = 1; i <= 20; i++) assert.ok(dev.post(slot, DMA_WRITE, i));
    await m.drainDma();
    assert.is(dev.inFlight(), 0);
    assert.ok(m.mem.subarray(f * 1024, (f + 4) * 1024).every((w) => w === 20), 'the last write won, in order');
  } finally {
    await m.shutdown();
  }
});

T('bad input to every new operation returns an error value and changes nothing', async () => {
  const x = await boot();
  const k = x.m.kernel;
  map(x, A);
  map(x, A + 4096);
  const before = vm.entries(k, 0, x.s).map((e) => `${e.va}:${e.pfn}:${e.rights}`).join();
  assert.is(exp(x, A + 8), EINVAL * -1, 'unaligned: not the base of a mapping');
  assert.is(exp(x, A, 2), -EINVAL, 'a range crossing a state boundary (two mappings)');
  assert.is(exp(x, 0x70_0000), -EPERM, 'not mapped');
  assert.is(mh.unexport(k, x.c0, x.s, 3), EINVAL, 'never exported');
  assert.is(mh.unexport(k, x.c0, x.s, 9999), EINVAL, 'no such slot');
  assert.is(mh.unexport(k, x.c0, x.s, -1), EINVAL);
  assert.is(mv(x, A, A), EINVAL, 'onto itself');
  assert.is(mv(x, A, 0x70_0000), EPERM, 'from nothing');
  assert.is(mv(x, 0x70_0000, A), EPERM, 'onto nothing');
  assert.is(vm.entries(k, 0, x.s).map((e) => `${e.va}:${e.pfn}:${e.rights}`).join(), before, 'nothing changed');
  assert.throws(() => encodeOps([{ op: 'devreg', reg: 8 }]), (e: Error) => e instanceof ProgramError && /out of range \(0-7\)/.test(e.message));
  assert.throws(() => encodeOps([{ op: 'move', space: 0, va: A, from: A + 8 }]), (e: Error) => e instanceof ProgramError && /page-aligned/.test(e.message));
  // Not the MH personality: its operations are refused as values.
  const d = await boot({ personality: 'default' });
  map(d, A);
  assert.is(mh.exportRange(d.m.kernel, d.c0, d.s, 0, A, 1), -EINVAL);
  assert.is(mh.move(d.m.kernel, d.c0, d.s, 0, A, 0, B), EINVAL);
  assert.is(vm.adjust(d.m.kernel, d.c0, d.s, 0, 0x70_0000, RW).code, NOT_MAPPED, "the default kernel's own error");
  await d.m.shutdown();
  await x.m.shutdown();
});

T('boot refuses a bad personality, the default copy-on-write under MH, and a device too large', async () => {
  const cases: [Parameters<typeof Machine.boot>[0], RegExp][] = [
    [{ kernel: { personality: 'linux' as 'mh' } }, /kernel.personality must be 'default' or 'mh'/],
    [{ kernel: { personality: 'mh', cow: 'default' } }, /kernel.cow 'default' does not apply/],
    [{ devicePages: 65 }, /devicePages must be between 0 and 64/],
  ];
  for (const [opts, want] of cases) {
    let msg = '';
    try {
      await Machine.boot(opts, { pool: false });
    } catch (e) {
      assert.instance(e, ConfigError);
      msg = (e as Error).message;
    }
    assert.match(msg, want);
  }
});

/** A core result carrying only MH events. */
function withEvents(events: number[]): CoreResult {
  return { core: 0, mhEvents: events } as unknown as CoreResult;
}

T('the state oracle holds each recorded change to the table, and fires on a wrong outcome or state', () => {
  const wiredRw = R_WRITE | R_USER | R_WIRED | (1 << 16);
  const ok = [EV_UNMAP, 0, 256, wiredRw, wiredRw, EBUSY, 1, 0, EV_EXPORT, 0, 257, RW, wiredRw, OK, 1, 0];
  assert.equal(checkMhEvents([withEvents(ok)]), []);
  const unmapSucceeded = [EV_UNMAP, 0, 256, wiredRw, -1, OK, 1, 0];
  const v = checkMhEvents([withEvents(unmapSucceeded)]);
  assert.is(v.length, 1);
  assert.match(v[0].detail, /unmap of page 0x100000 in space 0 \(Wired RW, wired 1\) returned Ok; the table says EBUSY/);
  const exportNoWire = [EV_EXPORT, 0, 257, RW, RW, OK, 1, 0];
  assert.match(checkMhEvents([withEvents(exportNoWire)])[0].detail, /left it Private RW \(wired 0\); the table says Wired RW \(wired 1\)/);
  const cow = R_COW | R_USER;
  assert.match(checkMhEvents([withEvents([EV_ADJUST, 0, 258, cow, cow | R_WRITE, OK, 1, RW])])[0].detail, /the table says EINVAL/);
  // A fork overlapped it: a Private page found RO-Shared is allowed, nonsense is not.
  assert.equal(checkMhEvents([withEvents([EV_ADJUST, 0, 258, RW, cow, EINVAL, 0, RW])]), []);
  assert.is(checkMhEvents([withEvents([EV_ADJUST, 0, 258, RW, RW, EBUSY, 0, RW])]).length, 1);
  // Two cores of a process map its I/O registers at once: the second finds them mapped, Ok (an identical mapping) or AlreadyMapped.
  const io = R_IO | RW;
  assert.equal(checkMhEvents([withEvents([EV_MAP_IO, 0, 259, io, io, OK, 1, 0, EV_MAP_IO, 0, 259, io, io, ALREADY_MAPPED, 1, 0])]), []);
  assert.is(EVENT_WORDS, 8);
});

T('--inject unwired-dma: export does not wire, the unmap succeeds, the frame is reused, and the frame-owner oracle catches the DMA', async () => {
  const x = await boot({ inject: ['unwired-dma'] });
  const k = x.m.kernel;
  const f = map(x, A);
  const slot = exp(x, A);
  assert.ok(slot >= 0);
  assert.is(state(x, A), 'Private RW', 'the injected bug: not wired');
  const u = vm.unmap(k, x.c0, x.s, 0, A);
  assert.is(u.code, OK);
  refs.release(k, u.pfn, x.s);
  const other = spaces.createSpace(k);
  // Another space gets the freed frame: take frames from its node until it comes, give the others back.
  const taken: number[] = [];
  for (let g = x.m.frames.alloc(0); g >= 0 && g !== f; g = x.m.frames.alloc(0)) taken.push(g);
  for (const g of taken) x.m.frames.free(g);
  assert.ok(x.m.frames.isAllocated(f), 'the allocator handed the freed frame out again');
  refs.holdNew(k, f, other);
  assert.is(vm.map(k, 0, other, 0, B, f * 4096, 4096, RW).code, OK, 'and another space maps it');
  x.m.device?.post(slot, DMA_WRITE, 0x666);
  x.m.serviceDma();
  const v = checkDma(x.m);
  assert.is(v.length, 1);
  assert.match(v[0].detail, new RegExp(`frame ${f}, exported by space ${x.s} \\(owners now: ${other}\\)`), v[0].detail);
  await x.m.shutdown();
});

T('--kernel mh stress: clean without injection; skip-wire-check caught by the state oracle, unwired-dma by the DMA frame-owner oracle', async () => {
  const run = async (inject: string[], seconds: number, mix = DEFAULT_MH_MIX) => runVmStress({
    machine: { cores: 2, nodes: 2, memory: '32MiB', kernel: { personality: 'mh' }, inject },
    seconds, seed: 11, processes: 2, opsPerRound: 20_000, slots: 16, mix,
  }, 'test');
  const clean = await run([], 2);
  assert.equal(clean.violations.map((v) => `${v.kind}: ${v.detail}`), []);
  assert.ok((clean.mh?.exports ?? 0) > 0 && (clean.mh?.userCopies ?? 0) > 0 && (clean.mh?.dma.done ?? 0) > 0, JSON.stringify(clean.mh));
  const wire = await run(['skip-wire-check'], 2);
  assert.ok(wire.violations.some((v) => v.kind === 'mh-transition' && /unmap .*Wired.* returned Ok; the table says EBUSY/.test(v.detail)), JSON.stringify(wire.violations.slice(0, 3)));
  // DMA often, so that one lands on a page unmapped after its unwired export.
  const dma = await run(['unwired-dma'], 3, { ...DEFAULT_MH_MIX, dma: 10, export: 8 });
  assert.ok(dma.violations.some((v) => v.kind === 'dma-frame-owner'), JSON.stringify(dma.violations.slice(0, 3)));
});

T.run();

// The device's export table and DMA ring against a sequential model (random operation sequences,
// seeded and shrunk by fast-check), and under real threads posting at once.
const D = suite('device');

D('export table and DMA ring agree with a sequential model', async () => {
  const m = await Machine.boot({ cores: 1, nodes: 1, memory: '4MiB', devicePages: 1 }, { pool: false });
  const dev = m.device as NonNullable<typeof m.device>;
  const op = fc.oneof(
    fc.record({ k: fc.constant('claim' as const), s: fc.integer({ min: 0, max: 3 }), pfn: fc.integer({ min: 16, max: 600 }) }),
    fc.record({ k: fc.constant('release' as const), slot: fc.integer({ min: -1, max: 70 }), s: fc.integer({ min: 0, max: 3 }) }),
    fc.record({ k: fc.constant('post' as const), slot: fc.integer({ min: 0, max: 70 }), cmd: fc.integer({ min: 0, max: 3 }), v: fc.integer() }),
    fc.record({ k: fc.constant('service' as const) }),
  );
  fc.assert(fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
    m.ctl.fill(0, m.layout.devBase);
    const slots = new Map<number, { s: number; pfn: number }>();
    const queue: { slot: number; cmd: number; v: number }[] = [];
    const owned = new Set<number>();
    const frameOf = new Map<number, number>();
    let errors = 0;
    for (const o of ops) {
      if (o.k === 'claim') {
        const slot = dev.claim(o.s, o.pfn, 1, 0, o.pfn * 4096);
        let want = -1;
        for (let i = 0; i < 64; i++) if (!slots.has(i)) { want = i; break; }
        assert.is(slot, want, 'the first free slot');
        if (slot >= 0) slots.set(slot, { s: o.s, pfn: o.pfn });
      } else if (o.k === 'release') {
        const mine = slots.get(o.slot)?.s === o.s;
        assert.is(dev.release(o.slot, o.s), mine, `release ${o.slot} by ${o.s}`);
        if (mine) slots.delete(o.slot);
      } else if (o.k === 'post') {
        const ok = (o.cmd === DMA_WRITE || o.cmd === DMA_READ) && queue.length < 64;
        assert.is(dev.post(o.slot, o.cmd, o.v), ok && o.slot < 64);
        if (ok && o.slot < 64) queue.push({ slot: o.slot, cmd: o.cmd, v: o.v });
      } else {
        const r = dev.serviceOne(() => true);
        const q = queue.shift();
        if (!q) {
          assert.is(r, null);
          continue;
        }
        const x = slots.get(q.slot);
        assert.equal(r, { slot: q.slot, cmd: q.cmd, ok: x !== undefined });
        if (!x) errors++;
        else if (q.cmd === DMA_WRITE) {
          owned.add(x.pfn);
          frameOf.set(x.pfn, q.v);
        }
      }
    }
    assert.is(dev.peek(REG_DMA_ERRORS), errors, 'refused transfers counted');
    assert.is(dev.inFlight(), queue.length);
    for (const [pfn, v] of frameOf) assert.ok(m.mem.subarray(pfn * 1024, pfn * 1024 + 1024).every((w) => w === v), `frame ${pfn}`);
    assert.equal(dev.slotsOf(0).sort((a, b) => a - b), [...slots].filter(([, x]) => x.s === 0).map(([i]) => i).sort((a, b) => a - b));
  }), { seed: 1109, numRuns: 200 });
  await m.shutdown();
});

D('cores post DMA requests at once while the engine thread serves them: each exactly once, none lost', async () => {
  const cores = 4;
  const m = await Machine.boot({ cores, nodes: 2, memory: '32MiB', kernel: { personality: 'mh' } });
  try {
    const s = spaces.createSpace(m.kernel);
    for (let c = 0; c < cores; c++) m.setRegisters(c, { cpl: 3 });
    const N = 50;
    const res = await m.run([...Array(cores).keys()].map((c) => ({
      core: c,
      program: {
        kind: 'ops', ops: [
          { op: 'switch', space: s },
          { op: 'map', space: s, va: A + c * 4096, pages: 1, rights: RW },
          { op: 'export', space: s, va: A + c * 4096 },
          ...Array.from({ length: N }, (_, i) => ({ op: 'dma' as const, write: true, value: c * 1000 + i })),
        ],
      },
    })));
    assert.ok(res.every((r) => r.ok), res.map((r) => r.error).join());
    for (const r of res) assert.is(r.outcomes['dma:Write'], N, `core ${r.core}`);
    const dev = m.device as NonNullable<typeof m.device>;
    assert.is(dev.peek(REG_DMA_DONE), cores * N, 'every request done once');
    assert.is(dev.peek(REG_DMA_ERRORS), 0);
    for (let c = 0; c < cores; c++) {
      const e: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };
      assert.ok(vm.lookup(m.kernel, 0, s, 0, A + c * 4096, e));
      assert.ok(m.mem.subarray(e.pfn * 1024, e.pfn * 1024 + 1024).every((w) => w === c * 1000 + N - 1), `core ${c}'s page holds its last DMA`);
    }
    assert.is(dev.violations().count, 0);
  } finally {
    await m.shutdown();
  }
});

D.run();
