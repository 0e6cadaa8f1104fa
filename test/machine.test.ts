// Properties: configuration is validated with messages that name the problem; boot lays out
// nodes as contiguous frame ranges; the frame allocator hands out each frame once, reports out of
// memory as a value and catches double frees; shutdown leaves no worker behind; controller calls
// on bad cores or busy cores fail clearly.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Machine, ConfigError, MachineError } from '../src/machine/machine.js';
import { kernelFrames } from '../src/check/kernel.js';
import { parseSize } from '../src/hw/config.js';
import { validateConfig } from '../src/machine/config.js';
import { NO_FRAME } from '../src/hw/frames.js';
import { bootLocal } from './helpers.js';

const C = suite('configuration');

const bad: [object, RegExp][] = [
  [{ cores: 0 }, /cores must be between 1 and 256, got 0/],
  [{ cores: 2.5 }, /cores must be a whole number/],
  [{ cores: 2, nodes: 4 }, /nodes \(4\) cannot exceed cores \(2\)/],
  [{ memory: 4097 }, /not a whole number of 4 KiB frames/],
  [{ memory: 'lots' }, /memory must be a size such as 64MiB/],
  [{ memory: '64KiB' }, /too small for the page tables/],
  [{ memory: '32GiB' }, /exceeds 16 GiB, the limit of an Int32Array view/],
  [{ tlb: { entries4k: 48, ways4k: 4 } }, /tlb.entries4k \/ tlb.ways4k must be a power of two/],
  [{ ipiQueueSlots: 3 }, /ipiQueueSlots must be a power of two/],
  [{ ipiQueueSlots: 1 }, /ipiQueueSlots must be between 2 and 1024/],
  [{ maxPhysAddr: 60 }, /maxPhysAddr must be between 36 and 52/],
  [{ kernel: { mode: 'rcu' } }, /kernel.mode must be 'nr' or 'lock', got 'rcu'/],
  [{ kernel: { cow: 'bsd' } }, /kernel.cow must be 'default' or 'mh', got 'bsd'/],
  [{ kernel: { khalf: 'never' as 'lazy' } }, /kernel.khalf must be 'eager', 'switch' or 'lazy', got 'never'/],
  [{ inject: ['nonsense'] }, /unknown injection 'nonsense' \(known: non-atomic-ad, torn-pte-update, skip-shootdown, skip-replica-sync, skip-cow-copy, skip-wire-check, unwired-dma, free-table-without-flush, owner-only-shootdown, fault-in-wrong-space, pkru-not-switched, core-crash\)/],
  // As the CLI does (issue 15): the wrong type named, unknown keys named, nothing ignored.
  [{ cores: '4' }, /cores must be a whole number, got the string '4'/],
  [{ core: 4 }, /unknown option 'core' \(known: cores, nodes, memory, tlb/],
  [{ kernel: { maxSpace: 2 } }, /unknown option 'kernel.maxSpace' \(known: kernel.maxSpaces/],
  [{ tlb: { entries: 64 } }, /unknown option 'tlb.entries'/],
  [{ inject: 'skip-shootdown' }, /inject must be an array of fault names/],
];

C('rejects null and non-objects with a message, not a TypeError', async () => {
  for (const o of [null, 4, 'cores=4', [1]]) {
    const v = validateConfig(o as never);
    assert.ok('error' in v && /machine options must be an object/.test(v.error), JSON.stringify(v));
    try {
      await Machine.boot(o as never, { pool: false });
      assert.unreachable('boot accepted it');
    } catch (e) {
      assert.instance(e, ConfigError);
    }
  }
});

for (const [opts, re] of bad) {
  C(`rejects ${JSON.stringify(opts)}`, async () => {
    const v = validateConfig(opts);
    assert.ok('error' in v && re.test(v.error), 'error' in v ? v.error : 'accepted');
    try {
      await Machine.boot(opts, { pool: false });
      assert.unreachable('boot accepted a bad configuration');
    } catch (e) {
      assert.instance(e, ConfigError);
      assert.match((e as Error).message, re);
    }
  });
}

C('sizes parse with binary units', () => {
  assert.is(parseSize('64MiB'), 64 * 2 ** 20);
  assert.is(parseSize('1g'), 2 ** 30);
  assert.is(parseSize('4096'), 4096);
  assert.is(parseSize('12 parsecs'), null);
});

const F = suite('frames');

F('each NUMA node owns a contiguous range; cores are grouped by node', async () => {
  const m = await Machine.boot({ cores: 4, nodes: 2, memory: '8MiB' }, { pool: false });
  assert.equal(m.layout.nodeFrameStart, [0, 1024, 2048]);
  assert.equal([0, 1, 2, 3].map((c) => m.nodeOf(c)), [0, 0, 1, 1]);
  const a = m.frames.alloc(1);
  assert.ok(a >= 1024 && a < 2048);
});

F('the zero page exists from boot, so that no run makes it out of a frame another core may still reach', async () => {
  const m = await bootLocal({ memory: '1MiB', nodes: 1 });
  const z = Atomics.load(m.kernel.v.k, m.kernel.v.klayout.zeroPageWord) - 1;
  assert.ok(z >= 0, 'allocated');
  assert.is(Atomics.load(m.kernel.v.k, m.kernel.v.klayout.ownerBase + z), -1, 'every space may read it');
});

F('allocation hands out every frame of a node once, then reports out of memory as a value', async () => {
  const m = await bootLocal({ memory: '1MiB', nodes: 1 });
  const seen = new Set<number>();
  for (;;) {
    const f = m.frames.alloc(0);
    if (f === NO_FRAME) break;
    assert.not.ok(seen.has(f), `frame ${f} handed out twice`);
    seen.add(f);
  }
  // Every frame but the zero page and the kernel half's, which the kernel takes at boot.
  const kf = kernelFrames(m);
  assert.ok(kf.tables > 0 && kf.data > 0, 'the kernel half holds tables and its heap');
  assert.is(seen.size, 255 - kf.tables - kf.pools - kf.data);
  assert.not.ok(seen.has(Atomics.load(m.kernel.v.k, m.kernel.v.klayout.zeroPageWord) - 1), 'the zero page is not handed out');
  assert.is(m.frames.freeCount(), 0);
  assert.is(m.frames.allocAny(0), NO_FRAME);
  for (const f of seen) m.frames.free(f);
  assert.is(m.frames.freeCount(), seen.size);
});

F('allocAny falls back to the other nodes when the preferred one is full', async () => {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '1MiB' }, { pool: false });
  while (m.frames.alloc(0) !== NO_FRAME);
  const f = m.frames.allocAny(0);
  assert.ok(f >= 128, `got ${f}`);
});

F('contiguous aligned runs skip taken frames and count as allocated', async () => {
  const m = await bootLocal({ memory: '8MiB', nodes: 1 });
  const a = m.frames.alloc(0);
  const free = m.frames.freeCount();
  const run = m.frames.allocContiguous(0, 512);
  assert.is(run % 512, 0);
  assert.ok(run > a);
  assert.is(m.frames.freeCount(), free - 512);
  assert.ok(m.frames.isAllocated(run + 511));
  assert.is(m.frames.allocContiguous(0, 4096), NO_FRAME);
});

F('a double free is a panic naming the frame', async () => {
  const m = await bootLocal();
  const f = m.frames.alloc(0);
  m.frames.free(f);
  assert.throws(() => m.frames.free(f), /panic: Frames.free: frame \d+ was not allocated \(double free\)/);
});

F('frames are zeroed and copied whole', async () => {
  const m = await bootLocal();
  const a = m.frames.alloc(0);
  const b = m.frames.alloc(0);
  m.mem.fill(7, a * 1024, a * 1024 + 1024);
  m.frames.copy(b, a);
  assert.is(m.mem[b * 1024 + 1023], 7);
  m.frames.zero(b);
  assert.is(m.mem.subarray(b * 1024, b * 1024 + 1024).some((x) => x !== 0), false);
});

const K = suite('controller');

K('controller calls name the bad core; registers only change on an offline core', async () => {
  const m = await bootLocal();
  assert.throws(() => m.setRegisters(5, { cpl: 3 }), /no core 5: this machine has cores 0..1/);
  const cpu = m.attachHere(0);
  assert.throws(() => m.setRegisters(0, { cpl: 3 }), /core 0 is running/);
  assert.throws(() => m.attachHere(0), /already running/);
  cpu.detach();
  m.setRegisters(0, { cpl: 3, cr3: 0x5000n });
  assert.is(m.registers(0).cr3, 0x5000n);
  // Bad values are named and change nothing (cpl 7 was stored as given).
  const bad: [unknown, RegExp][] = [
    [{ cpl: 7 }, /cpl must be 0 or 3, got 7/], [{ cr3: 5 }, /cr3 must be a bigint/], [{ cr3: -1n }, /cr3 must be a bigint in \[0, 2\^64\)/],
    [{ cr4: 1.5 }, /cr4 must be a 32-bit integer, got 1.5/], [{ ac: 1 }, /ac must be true or false/], [{ rip: 0 }, /unknown register 'rip'/], [null, /takes an object/],
  ];
  for (const [v, msg] of bad) assert.throws(() => m.setRegisters(0, v as never), msg);
  assert.equal([m.registers(0).cpl, m.registers(0).cr3], [3, 0x5000n]);
  await assert.not.throws(async () => m.shutdown());
});

K('boot starts one worker per core; shutdown leaves none', async () => {
  const m = await Machine.boot({ cores: 3, nodes: 1, memory: '4MiB' });
  const r = await m.run([0, 1, 2].map((c) => ({ core: c, program: { kind: 'ops', ops: [] } })));
  assert.equal(r.map((x) => x.ok), [true, true, true]);
  assert.is(m.threads, 3);
  await m.shutdown();
  assert.is(m.threads, 0);
  try {
    await m.run([{ core: 0, program: { kind: 'ops', ops: [] } }]);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, MachineError);
  }
});

K('a bad program is an error naming the operation, before anything runs', async () => {
  const m = await Machine.boot({ cores: 1, nodes: 1, memory: '4MiB' });
  try {
    await m.run([{ core: 0, program: { kind: 'ops', ops: [{ op: 'fetch', va: '0x1003' }] } }]);
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, /op 0 \(fetch\): address 0x1003 is not 8-byte aligned/);
  }
  for (const [jobs, msg] of [
    [[{ core: 0, program: { kind: 'warp-drive' } }], /core 0: unknown program kind 'warp-drive' \(known: ops, random/],
    [[{ core: 0, program: { kind: 'ops', ops: [{ op: 'fetch', va: 2 ** 47 + 5 }] } }], /address 0x800000000005 is not 8-byte aligned/],
    [[{ core: 0, program: { kind: 'ops', ops: [{ op: 'load', va: 0x1000, size: 3 }] } }], /op 0 \(load\): size must be 1, 2, 4 or 8 bytes, got 3/],
    [[{ core: 0, program: { kind: 'ops', ops: [{ op: 'store', va: 0x1000, value: 256, size: 1 }] } }], /op 0 \(store\): value 256 does not fit 1 byte/],
    [null, /run takes an array of jobs/],
    [[{ core: 0 }], /a job is \{ core, program \}/],
  ] as [unknown, RegExp][]) {
    try {
      await m.run(jobs as never);
      assert.unreachable();
    } catch (e) {
      assert.match((e as Error).message, msg);
    }
  }
  assert.equal((await m.run([{ core: 0, program: { kind: 'ops', ops: [] } }]))[0].ok, true, 'the machine runs on after refused jobs');
  await m.shutdown();
});

K('durationMs ends a long program on every core of the run; a bad duration is named', async () => {
  const m = await Machine.boot({ cores: 2, nodes: 1, memory: '4MiB' });
  try {
    // 20 million INVLPGs take seconds; 30 ms of them far fewer.
    const long = { kind: 'ops', ops: [{ op: 'invlpg', va: '0x1000' }], repeat: 20_000_000, durationMs: 30 } as const;
    const r = await m.run([0, 1].map((c) => ({ core: c, program: { ...long, ops: [...long.ops] } })));
    for (const x of r) {
      assert.ok(x.ok, x.error);
      assert.ok(x.ops > 0 && x.ops < 20_000_000, `core ${x.core} ran ${x.ops} operations`);
    }
    const bad = await m.run([{ core: 0, program: { kind: 'ops', ops: [], durationMs: -5 } }]);
    assert.is(bad[0].ok, false);
    assert.match(bad[0].error ?? '', /durationMs must be a number of milliseconds > 0/);
  } finally {
    await m.shutdown();
  }
});

C.run();
F.run();
K.run();
