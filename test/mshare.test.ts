// mshare (issue 12; kernel/mshare.ts): a region backed by a host address space of its own, attached
// by processes at its slot's address: both see the host's pages and each other's writes, on either
// node; a fault in the range is handled in the host's space; the attached processes cannot map
// there themselves; the host lives until the last detach, and then every frame comes back; bad
// input is an error value.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Machine } from '../src/machine/machine.js';
import type { Cpu } from '../src/hw/cpu.js';
import { ACC_READ, ACC_WRITE } from '../src/hw/fault.js';
import { EBUSY, EINVAL, INVALID_BASE, OK, R_USER, R_WRITE } from '../src/kernel/ops.js';
import * as faults from '../src/kernel/fault.js';
import * as ms from '../src/kernel/mshare.js';
import { SLOT_BYTES } from '../src/kernel/slots.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as spaces from '../src/kernel/space.js';
import * as vm from '../src/kernel/vm.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';
import { mshareRerouteRace } from '../src/workloads/races-share.js';

const RW = R_USER | R_WRITE;

function access(m: Machine, cpu: Cpu, va: number, value?: number): number | 'fault' {
  const r = faults.access(m.kernel, cpu, value === undefined ? ACC_READ : ACC_WRITE, vaHi(va), vaLo(va), 0, value ?? 0);
  return r === 0 ? (value ?? cpu.mmu.valLo) : 'fault';
}

const M = suite('mshare');

M('two processes attach a region: both see the host\'s pages and each other\'s writes; faults in it are the host\'s; the last detach frees everything', async () => {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '32MiB', kernel: { maxSpaces: 8 } }, { pool: false });
  const k = m.kernel;
  const free = m.frames.freeCount();
  const a = spaces.createSpace(k);
  const b = spaces.createSpace(k);
  const h = ms.mshareCreate(k, 5);
  assert.ok(h >= 0 && ms.isHost(k, h));
  const base = 5 * SLOT_BYTES;
  const X = base + 0x40_0000;
  const Z = base + 0x80_0000;
  assert.is(vm.mapAnon(k, 0, h, vaHi(X), vaLo(X), 1, RW), OK, "the region's own map");
  m.mem[k.anonFrame * 1024] = 0x5ea;
  assert.is(vm.mapZero(k, 0, h, vaHi(Z), vaLo(Z), RW).code, OK);
  assert.is(ms.mshareAttach(k, a, h, base), OK);
  assert.is(ms.mshareAttach(k, b, h, base), OK);
  m.setRegisters(0, { cpl: 3 });
  m.setRegisters(1, { cpl: 3 });
  const c0 = m.attachHere(0);
  const c1 = m.attachHere(1);
  shootdowns.switchTo(k, c0, a);
  assert.is(access(m, c0, X), 0x5ea, "A reads the host's page");
  const fills = k.stats.zeroFills;
  // (Core 1 switches to B after the write: the host's shootdown would wait for it, and this
  // thread drives both cores. The race mshare-fault-reroute runs them on workers.)
  assert.is(access(m, c0, Z, 41), 41, 'A writes a demand-zero page of the region...');
  shootdowns.switchTo(k, c1, b); // node 1
  assert.is(k.stats.zeroFills, fills + 1, "...filled in the host's space");
  const r = vm.resolve(k, 0, h, vaHi(Z), vaLo(Z));
  assert.ok(r.code === OK && (r.rights & 16) === 0, 'the host maps its own frame there now');
  assert.is(vm.entries(k, 0, a).length, 0, 'A maps nothing of it');
  assert.is(access(m, c1, Z), 41, "B (node 1) reads A's write");
  const spare = m.frames.allocZeroed(0);
  assert.is(vm.map(k, 0, a, vaHi(X + 4096), vaLo(X + 4096), spare * 4096, 4096, RW).code, INVALID_BASE, "A cannot map inside the region");
  m.frames.free(spare);
  shootdowns.leave(k, c1);
  assert.is(ms.mshareDetach(k, b, h, c1), OK);
  assert.ok(ms.isHost(k, h), 'the host lives while A is attached');
  assert.is(access(m, c0, X), 0x5ea);
  shootdowns.leave(k, c0);
  assert.is(ms.mshareDetach(k, a, h, c0), OK);
  assert.not.ok(ms.isHost(k, h), 'the last detach destroyed the host');
  c0.detach();
  c1.detach();
  spaces.destroySpace(k, a, () => {});
  spaces.destroySpace(k, b, () => {});
  assert.is(m.frames.freeCount(), free, 'every frame is back: the host\'s pages and tables, the spaces\' roots');
});

M('bad input: a misaligned or other address, a space with its own mappings there, twice, a detach never attached', async () => {
  const m = await Machine.boot({ cores: 1, nodes: 1, memory: '16MiB', kernel: { maxSpaces: 8 } }, { pool: false });
  const k = m.kernel;
  const a = spaces.createSpace(k);
  const c = spaces.createSpace(k);
  const h = ms.mshareCreate(k, 6);
  const base = 6 * SLOT_BYTES;
  assert.is(ms.mshareAttach(k, a, h, base + 4096), EINVAL, 'misaligned');
  assert.is(ms.mshareAttach(k, a, h, 7 * SLOT_BYTES), EINVAL, 'another slot');
  assert.is(ms.mshareAttach(k, a, a, base), EINVAL, 'not a region');
  assert.is(vm.mapAnon(k, 0, c, vaHi(base + 0x1000), vaLo(base + 0x1000), 1, RW), OK);
  assert.is(ms.mshareAttach(k, c, h, base), EBUSY, 'c maps there already');
  assert.is(ms.mshareDetach(k, a, h), EINVAL, 'never attached');
  assert.is(ms.mshareAttach(k, a, h, base), OK);
  assert.is(ms.mshareAttach(k, a, h, base), EINVAL, 'twice');
  assert.is(ms.mshareCreate(k, 6), -1 - EINVAL, 'a slot in use');
  assert.is(ms.mshareDetach(k, a, h), OK);
});

M('race mshare-fault-reroute: a write fault in the region on one core is the host\'s, the other core reads it, and the host\'s unmap shoots both down', async () => {
  const r = await mshareRerouteRace();
  assert.ok(r.ok, r.steps.join('\n'));
});

M.run();
