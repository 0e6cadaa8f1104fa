// Properties of TLB shootdown and liveness (reference/seed-behaviours.md, NRK 4, 5, 6 and 8),
// with real worker cores. The main thread drives core 0 as the initiator; cores 1-3 run loops of
// loads in their address space until core 0 stops them with an IPI. Handshakes are on shared
// state (the active-core masks) and IPIs; there are no sleeps.
// - MapFrame never shoots down; after Unmap returns no core completes an access through the old
//   translation (the frame-owner oracle), and with the shootdown skipped one does.
// - IPIs go to exactly the active cores of the space minus the initiator; a receiver syncs its
//   replica (skipping that leaves the replica mapping the freed frame, and a core uses it).
// - Up to 20 pages are invalidated page by page, more by a full flush.
// - A node with no running core does not stall the log.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Machine } from '../src/machine/machine.js';
import type { CoreResult } from '../src/machine/executor.js';
import type { Cpu } from '../src/hw/cpu.js';
import { IPI_STOP, WAIT_OK } from '../src/hw/apic.js';
import { OK } from '../src/kernel/ops.js';
import { R_USER, R_WRITE } from '../src/kernel/ops.js';
import { findEntry } from '../src/hw/pagetable.js';
import { PTE_P } from '../src/hw/pte.js';
import type { Op } from '../src/machine/program.js';
import * as procs from '../src/kernel/proc.js';
import * as refs from '../src/kernel/refs.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as spaces from '../src/kernel/space.js';
import * as vm from '../src/kernel/vm.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';

const RW = R_WRITE | R_USER;
const X = 0x40_0000;

interface Bench {
  m: Machine;
  a: number;
  b: number;
  cpu0: Cpu;
}

async function setup(inject: string[] = []): Promise<Bench> {
  const m = await Machine.boot({ cores: 4, nodes: 2, memory: '32MiB', inject });
  const a = spaces.createSpace(m.kernel);
  const b = spaces.createSpace(m.kernel);
  for (let c = 0; c < 4; c++) m.setRegisters(c, { cpl: 3 });
  const cpu0 = m.attachHere(0);
  shootdowns.installHandlers(m.kernel, cpu0);
  shootdowns.switchTo(m.kernel, cpu0, a);
  return { m, a, b, cpu0 };
}

/** Maps `pages` fresh frames at va in space s through core 0, recording them as owned by s. */
function mapOwned(x: Bench, s: number, va: number, pages: number): number {
  assert.is(vm.mapAnon(x.m.kernel, 0, s, vaHi(va), vaLo(va), pages, RW, x.cpu0), OK);
  return x.m.kernel.anonFrame;
}

/** Unmaps through core 0; once it returned, the frames are free for anyone (owner cleared). */
function unmapOwned(x: Bench, s: number, va: number): void {
  const r = vm.unmap(x.m.kernel, x.cpu0, s, vaHi(va), vaLo(va));
  assert.is(r.code, OK);
  for (let p = 0; p < r.pages; p++) refs.ownerRemove(x.m.kernel, r.pfn + p, s);
}

/** Starts cores on loops of loads at `va` in their spaces; resolves once all are in their masks. */
/**
 * Starts cores on loops that store to va + 8 * core in their spaces (a word per core); resolves
 * once each core is in its mask and, when `pfn` is given, once each core's store has landed in
 * that frame: its TLB then holds the translation.
 */
async function startLoops(x: Bench, cores: [number, number][], va: number, pfn?: number): Promise<{ done: Promise<CoreResult[]> }> {
  const ops = (c: number, s: number) => [{ op: 'switch' as const, space: s }, { op: 'store' as const, va: va + 8 * c, value: 0x5ca1ab1en }];
  const running = x.m.run(cores.map(([c, s]) => ({ core: c, program: { kind: 'ops', ops: ops(c, s), repeat: 1e9, checkOwner: true } })));
  const deadline = Date.now() + 20_000;
  while (!cores.every(([c, s]) => shootdowns.activeCores(x.m.kernel, s).includes(c))) {
    if (Date.now() > deadline) throw new Error('cores did not join their address spaces');
    await new Promise((r) => setImmediate(r));
  }
  // One more handshake: a ping answered means the core is past its switch and looping.
  if (pfn !== undefined) for (const [c, s] of cores) if (s === x.a) await awaitStoreInto(x, pfn, c);
  return { done: running };
}

/** Handshake on memory: clears core c's word of frame pfn and waits until c's store lands there again. */
async function awaitStoreInto(x: Bench, pfn: number, c: number): Promise<void> {
  const word = pfn * 1024 + 2 * c;
  Atomics.store(x.m.mem, word, 0);
  const deadline = Date.now() + 20_000;
  while (Atomics.load(x.m.mem, word) === 0) {
    if (Date.now() > deadline) throw new Error(`no store of core ${c} reached frame ${pfn}`);
    await new Promise((r) => setImmediate(r));
  }
}

async function stop(x: Bench, cores: number[], running: { done: Promise<CoreResult[]> }): Promise<CoreResult[]> {
  for (const c of cores) x.cpu0.apic.sendIpi(c, IPI_STOP);
  assert.is(x.cpu0.apic.waitAcks(), WAIT_OK);
  const res = await running.done;
  for (const r of res) assert.ok(r.ok, r.error);
  x.cpu0.detach();
  await x.m.shutdown();
  return res;
}

const S = suite('shootdown');

S('MapFrame never shoots down; after Unmap returns no core uses the old translation (NRK 4)', async () => {
  const x = await setup();
  const f = mapOwned(x, x.a, X, 1);
  const running = await startLoops(x, [[1, x.a], [2, x.a], [3, x.a]], X, f); // every core caches X
  for (let i = 1; i <= 20; i++) mapOwned(x, x.a, X + i * 0x1000, 1);
  assert.is(x.m.kernel.stats.shootdowns, 0, 'no shootdown for 20 maps');
  unmapOwned(x, x.a, X);
  assert.is(x.m.kernel.stats.shootdowns, 1);
  // Keep the loops going a little after the unmap: handshake once more with each core.
  for (const c of [1, 2, 3]) {
    x.cpu0.apic.sendIpi(c, 1);
    assert.is(x.cpu0.apic.waitAcks(), WAIT_OK);
  }
  const res = await stop(x, [1, 2, 3], running);
  for (const r of res) assert.is(r.staleAccesses, 0, `core ${r.core}: ${JSON.stringify(r.staleExamples[0])}`);
  for (const r of res) assert.is(r.kernel.shootdownsReceived, 1, `core ${r.core} received the one shootdown`);
});

S('with the shootdown skipped, a core completes accesses through the stale translation (inject skip-shootdown)', async () => {
  const x = await setup(['skip-shootdown']);
  const f = mapOwned(x, x.a, X, 1);
  const running = await startLoops(x, [[1, x.a]], X, f);
  unmapOwned(x, x.a, X);
  await awaitStoreInto(x, f, 1); // core 1 wrote the freed frame through its stale TLB entry
  const res = await stop(x, [1], running);
  assert.ok(res[0].staleAccesses > 0, 'core 1 kept using the freed frame');
});

S('IPIs go to exactly the active cores minus the initiator; receivers sync their replica (NRK 5)', async () => {
  const x = await setup();
  const f = mapOwned(x, x.a, X, 1);
  const running = await startLoops(x, [[1, x.a], [2, x.a], [3, x.b]], X, f);
  assert.equal(shootdowns.activeCores(x.m.kernel, x.a), [0, 1, 2]);
  unmapOwned(x, x.a, X);
  assert.is(x.m.kernel.stats.shootdownIpis, 2, 'cores 1 and 2, not 0 (the initiator) nor 3 (space b)');
  // Core 2 (node 1) synced replica 1 in its handler: replica 1 no longer maps X.
  for (const c of [1, 2]) {
    x.cpu0.apic.sendIpi(c, 1);
    assert.is(x.cpu0.apic.waitAcks(), WAIT_OK);
  }
  const w = findEntry(x.m.mem, x.m.kernel.vspace(x.a).root(1), false, 0, X, 12);
  assert.ok(w < 0 || (x.m.mem[w] & PTE_P) === 0, 'replica 1 applied the unmap');
  const res = await stop(x, [1, 2, 3], running);
  assert.equal(res.map((r) => r.kernel.shootdownsReceived), [1, 1, 0]);
  for (const r of res) assert.is(r.staleAccesses, 0);
});

S('a receiver that invalidates without syncing refills from its stale replica (inject skip-replica-sync)', async () => {
  const x = await setup(['skip-replica-sync']);
  const f = mapOwned(x, x.a, X, 1);
  const running = await startLoops(x, [[2, x.a]], X, f); // core 2 is on node 1: replica 1 maps X
  unmapOwned(x, x.a, X); // applied to replica 0 only; core 2 acks, invalidates, does not sync
  await awaitStoreInto(x, f, 2); // core 2 refilled from replica 1 and wrote the freed frame
  const res = await stop(x, [2], running);
  assert.ok(res[0].staleAccesses > 0, 'core 2 refilled its TLB from replica 1 and reached the freed frame');
});

S('up to 20 pages are invalidated page by page, more by a full flush (NRK 6)', async () => {
  const x = await setup();
  const f = mapOwned(x, x.a, X, 5);
  mapOwned(x, x.a, 0x80_0000, 30);
  const running = await startLoops(x, [[1, x.a]], X, f);
  unmapOwned(x, x.a, X);
  unmapOwned(x, x.a, 0x80_0000);
  const res = await stop(x, [1], running);
  assert.is(res[0].kernel.pageInvalidations, 5);
  assert.is(res[0].kernel.fullFlushes, 1);
});

S('a node with no running core does not stall the log: writers advance its replica (NRK 8)', async () => {
  const m = await Machine.boot({ cores: 4, nodes: 2, memory: '32MiB', kernel: { logEntries: 32, maxBatch: 8 } });
  try {
    const s = spaces.createSpace(m.kernel);
    procs.spawn(m.kernel, s, -1);
    const jobs = [0, 1].map((c) => ({
      core: c,
      program: {
        kind: 'vm-mix', seed: 9, count: 3000, cores: 2, slots: 32, regionBase: 0x10_0000_0000,
        mix: { map: 50, unmap: 50 }, checkOwner: true,
      },
    }));
    const res = await m.run(jobs); // cores 2 and 3 (node 1) never run
    for (const r of res) assert.ok(r.ok, r.error);
    assert.ok(res.reduce((a, r) => a + r.kernel.nrLaggardAdvances, 0) > 0, 'writers applied the log to replica 1');
    const n = m.kernel.nr(s);
    assert.ok(((n.tail() - n.ltail(1)) | 0) <= 32, 'replica 1 is at most one log behind');
    assert.equal(n.checkInvariants(), []);
  } finally {
    await m.shutdown();
  }
});

S('a replica-advance IPI reaches an idle (halted) core of the lagging node', async () => {
  const m = await Machine.boot({ cores: 4, nodes: 2, memory: '32MiB', kernel: { logEntries: 32, maxBatch: 8 } });
  try {
    const s = spaces.createSpace(m.kernel);
    for (let c = 0; c < 4; c++) m.setRegisters(c, { cpl: 3 });
    const writer = (c: number) => {
      const ops: Op[] = [{ op: 'switch', space: s }];
      for (let i = 0; i < 600; i++) {
        const va = 0x1000_0000 + (c * 64 + (i % 64)) * 4096;
        ops.push(i % 2 === 0 ? { op: 'map', space: s, va, pages: 1, rights: RW } : { op: 'unmap', space: s, va: 0x1000_0000 + (c * 64 + ((i - 1) % 64)) * 4096 });
      }
      ops.push({ op: 'ping', target: 2 }); // in case no advance was needed: core 2 must not halt forever
      return ops;
    };
    const res = await m.run([
      { core: 0, program: { kind: 'ops', ops: writer(0) } },
      { core: 1, program: { kind: 'ops', ops: writer(1) } },
      { core: 2, program: { kind: 'ops', ops: [{ op: 'halt' }] } }, // node 1's only running core, idle
    ]);
    for (const r of res) assert.ok(r.ok, r.error);
    const sent = res[0].kernel.advanceIpis + res[1].kernel.advanceIpis;
    assert.ok(sent > 0, 'writers asked the idle core of node 1 to advance its replica');
    assert.is(res[2].kernel.advancesReceived, sent);
  } finally {
    await m.shutdown();
  }
});

S.run();
