// Properties of processes on the emulator (reference/seed-behaviours.md 9-18, 20 and 23), through
// the seed's Simulator API and the kernel: the zero page and lazy allocation, the seed's
// transcript line by line, fork with copy-on-write (isolation, no copy at fork, exactly one copy
// per first write, the last sharer reusing its frame), kill and frame accounting, refused
// accesses, out of memory as a message, fork's treatment of wired and I/O mappings, and MH's
// copy-on-write policy.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DataType, Pointer, Simulator, ValueType, seedExample } from '../src/machine/simulator.js';
import { R_COW, R_IO, R_USER, R_WIRED, R_WRITE } from '../src/kernel/ops.js';
import * as procs from '../src/kernel/proc.js';
import * as refs from '../src/kernel/refs.js';
import * as vm from '../src/kernel/vm.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';

async function sim(opts: { memory?: string; cow?: 'default' | 'mh'; devicePages?: number } = {}): Promise<{ s: Simulator; lines: string[] }> {
  const lines: string[] = [];
  const s = await Simulator.begin(true, { ...opts, out: (l) => lines.push(l) });
  return { s, lines };
}

const read = (s: Simulator, p: Pointer): number | undefined => s.read(p, DataType.UnsignedInt)?.getValue();

/** Registers 200 variables and writes i + 1 to the i-th: more frames than a 512 KiB machine has. */
function fillPast(s: Simulator): Pointer[] {
  const ptrs: Pointer[] = [];
  for (let i = 0; i < 200; i++) {
    const p = new Pointer();
    s.register(p);
    ptrs.push(p);
  }
  for (let i = 0; i < 200; i++) s.write(ptrs[i], ValueType.UnsignedInt(i + 1));
  return ptrs;
}

const P = suite('processes');

P('reading a registered, never-written page returns 0, allocates nothing, faults nothing (9)', async () => {
  const { s, lines } = await sim();
  const x = new Pointer();
  s.register(x);
  const free = s.machine.frames.freeCount();
  const faults = s.machine.kernel.stats.zeroFills;
  assert.is(read(s, x), 0);
  assert.is(s.machine.frames.freeCount(), free);
  assert.is(s.machine.kernel.stats.zeroFills, faults);
  assert.equal(lines, []);
  await s.end();
});

P('the first write takes one zero-page fault and one frame; later writes do not fault (10)', async () => {
  const { s, lines } = await sim();
  const x = new Pointer();
  s.register(x);
  const free = s.machine.frames.freeCount();
  s.write(x, ValueType.UnsignedInt(5));
  assert.equal(lines, ['PGZERO: 0x0']);
  assert.is(s.machine.frames.freeCount(), free - 1);
  s.write(x, ValueType.UnsignedInt(6));
  s.write(x, ValueType.UnsignedInt(7));
  assert.equal(lines, ['PGZERO: 0x0']);
  assert.is(s.machine.frames.freeCount(), free - 1);
  assert.is(read(s, x), 7);
  await s.end();
});

P("the seed's program prints the seed's transcript, line by line (11)", async () => {
  const lines: string[] = [];
  const s = await seedExample((l) => lines.push(l));
  const want = ['Value of x: 0'];
  for (let i = 0; i < 1024; i++) {
    want.push(`Value of x before write for pid ${i % 4}: ${i < 4 ? 0 : i - 4}`);
    if (i < 4) want.push('PGZERO: 0x0');
    want.push(`Value of x after write for pid ${i % 4}: ${i}`);
  }
  assert.is(lines.length, want.length);
  lines.forEach((l, i) => assert.is(l, want[i], `line ${i + 1}`));
  assert.is(lines.filter((l) => l.startsWith('PGZERO')).length, 4);
  await s.end();
});

P('after fork a write is invisible to the other process; fork copies no data (12)', async () => {
  const { s } = await sim();
  const x = new Pointer();
  s.register(x);
  s.write(x, ValueType.UnsignedInt(1));
  const k = s.machine.kernel;
  const pa0 = vm.resolve(k, 0, 0, vaHi(x.va), vaLo(x.va));
  assert.ok(pa0.code === 0);
  const pfn = pa0.code === 0 ? pa0.pa / 4096 : -1;
  assert.is(refs.refcount(k, pfn), 1);
  const child = s.fork();
  assert.is(refs.refcount(k, pfn), 2, 'refcount 1 -> 2');
  const rc = vm.resolve(k, 0, 1, vaHi(x.va), vaLo(x.va));
  assert.is(rc.code === 0 ? rc.pa / 4096 : -1, pfn, 'the child maps the same frame: nothing copied');
  assert.is(k.stats.cowCopies, 0);
  for (const space of [0, 1]) {
    const r = vm.resolve(k, 0, space, vaHi(x.va), vaLo(x.va));
    assert.ok(r.code === 0 && (r.rights & R_COW) !== 0, `space ${space} maps it copy-on-write (read-only)`);
  }
  s.write(x, ValueType.UnsignedInt(50)); // the parent writes at once: its cached writable translation was shot down
  s.switch(child);
  assert.is(read(s, x), 1, 'the child does not see the parent\'s write');
  s.write(x, ValueType.UnsignedInt(99));
  s.switch(0);
  assert.is(read(s, x), 50, 'the parent does not see the child\'s write');
  s.switch(child);
  assert.is(read(s, x), 99);
  await s.end();
});

P('processes live in the shared process table; a switch back does not flush the TLB unless a shootdown happened (PCIDs, TLB generations)', async () => {
  const { s } = await sim();
  const x = new Pointer();
  s.register(x);
  s.write(x, ValueType.UnsignedInt(1));
  const child = s.fork(); // shoots down process 0's writable translations: a new generation
  assert.equal([s.state(0), s.state(child)], ['running', 'sleeping']);
  assert.is(procs.processOf(s.machine.kernel, child).parent, 0);
  s.switch(child);
  assert.equal([s.state(0), s.state(child)], ['sleeping', 'running']);
  read(s, x);
  const k = s.machine.kernel;
  const flushes = k.stats.generationFlushes;
  s.switch(0);
  assert.is(k.stats.generationFlushes, flushes + 1, 'process 0 changed since this core last ran it: its PCID is flushed');
  read(s, x);
  s.switch(child);
  s.switch(0);
  assert.is(k.stats.generationFlushes, flushes + 1, 'no change since: no flush');
  const cpu = (s as unknown as { cpu: { ctr: Float64Array } }).cpu;
  const walks = cpu.ctr[5];
  assert.is(read(s, x), 1);
  assert.is(cpu.ctr[5], walks, 'process 0 still had its translation cached under its PCID');
  s.kill(child);
  assert.is(s.state(child), 'terminated');
  await s.end();
});

P('the first write after fork copies once (PGCOPY) and drops a reference; the other still reads the old value (13)', async () => {
  const { s, lines } = await sim();
  const x = new Pointer();
  s.register(x);
  s.write(x, ValueType.UnsignedInt(1));
  const k = s.machine.kernel;
  const r0 = vm.resolve(k, 0, 0, vaHi(x.va), vaLo(x.va));
  const old = r0.code === 0 ? r0.pa / 4096 : -1;
  const child = s.fork();
  s.switch(child);
  lines.length = 0;
  s.write(x, ValueType.UnsignedInt(2));
  assert.equal(lines, ['PGCOPY: 0x0']);
  assert.is(refs.refcount(k, old), 1);
  assert.is(k.stats.cowCopies, 1);
  s.write(x, ValueType.UnsignedInt(3));
  assert.equal(lines, ['PGCOPY: 0x0'], 'no second copy');
  s.switch(0);
  assert.is(read(s, x), 1);
  await s.end();
});

P('Adjust to writable keeps a copy-on-write page copy-on-write: the next write still copies', async () => {
  const { s, lines } = await sim();
  const x = new Pointer();
  s.register(x);
  s.write(x, ValueType.UnsignedInt(1));
  const child = s.fork();
  const k = s.machine.kernel;
  const cpu = (s as unknown as { cpu: import('../src/hw/cpu.js').Cpu }).cpu;
  assert.is(vm.adjust(k, cpu, 0, vaHi(x.va), vaLo(x.va), R_USER | R_WRITE).code, 0);
  const r = vm.resolve(k, 0, 0, vaHi(x.va), vaLo(x.va));
  assert.ok(r.code === 0 && (r.rights & R_COW) !== 0, 'still copy-on-write');
  lines.length = 0;
  s.write(x, ValueType.UnsignedInt(2));
  assert.equal(lines, ['PGCOPY: 0x0']);
  s.switch(child);
  assert.is(read(s, x), 1, 'the child kept its value');
  await s.end();
});

P('A -> B -> C share a page: C copies, B copies, A reuses: 3 frames in all (14)', async () => {
  const { s, lines } = await sim();
  const x = new Pointer();
  s.register(x);
  s.write(x, ValueType.UnsignedInt(1)); // A's frame
  const b = s.fork(); // B from A
  s.switch(b);
  const c = s.fork(); // C from B
  const free = s.machine.frames.freeCount();
  lines.length = 0;
  s.switch(c);
  s.write(x, ValueType.UnsignedInt(3));
  s.switch(b);
  s.write(x, ValueType.UnsignedInt(2));
  s.switch(0);
  s.write(x, ValueType.UnsignedInt(4));
  assert.equal(lines, ['PGCOPY: 0x0', 'PGCOPY: 0x0'], 'two copies, then a reuse');
  assert.is(s.machine.kernel.stats.cowReuses, 1);
  assert.is(s.machine.frames.freeCount(), free - 2, 'three data frames in all');
  assert.equal([0, b, c].map((p) => (s.switch(p), read(s, x))), [4, 2, 3]);
  await s.end();
});

P('a zero-page mapping is inherited by fork; the child\'s first write is a zero fault, not a copy (15)', async () => {
  const { s, lines } = await sim();
  const x = new Pointer();
  s.register(x);
  const child = s.fork();
  s.switch(child);
  s.write(x, ValueType.UnsignedInt(8));
  assert.equal(lines, ['PGZERO: 0x0']);
  assert.is(s.machine.kernel.stats.cowCopies, 0);
  await s.end();
});

P('kill frees what only it used; killing a child that never wrote restores the free count (16)', async () => {
  const { s } = await sim();
  const x = new Pointer();
  s.register(x);
  s.write(x, ValueType.UnsignedInt(1));
  const before = s.machine.frames.freeCount();
  const child = s.fork();
  s.kill(child);
  assert.is(s.machine.frames.freeCount(), before, 'child tables freed, shared frame back to one reference');
  const r = vm.resolve(s.machine.kernel, 0, 0, vaHi(x.va), vaLo(x.va));
  assert.is(r.code === 0 ? refs.refcount(s.machine.kernel, r.pa / 4096) : -1, 1);
  // A child that wrote: its private frame is freed with it.
  const c2 = s.fork();
  s.switch(c2);
  s.write(x, ValueType.UnsignedInt(2));
  s.switch(0);
  s.kill(c2);
  assert.is(s.machine.frames.freeCount(), before);
  await s.end();
});

P('accesses in a dead process or at an unmapped address are refused with the seed\'s messages (17)', async () => {
  const { s, lines } = await sim();
  const x = new Pointer();
  s.register(x);
  const child = s.fork();
  s.kill(child);
  s.switch(child);
  assert.is(read(s, x), undefined);
  s.write(x, ValueType.UnsignedInt(1));
  s.switch(0);
  const nowhere = new Pointer();
  nowhere.va = 0x7000_0000;
  assert.is(read(s, nowhere), undefined);
  assert.equal(lines, [`ZOMBIE ${child}`, `ZOMBIE ${child}`, 'Invalid address 0x70000000']);
  await s.end();
});

P('the Simulator keeps its types: 32-bit words read as UnsignedInt or SignedInt; values that do not fit are refused, not cut', async () => {
  const { s, lines } = await sim();
  const x = new Pointer();
  s.register(x);
  s.write(x, ValueType.SignedInt(-1));
  assert.is(s.read(x, DataType.SignedInt)?.getValue(), -1);
  assert.is(s.read(x, DataType.UnsignedInt)?.getValue(), 4294967295);
  s.write(x, ValueType.UnsignedInt(2 ** 40 + 5));
  s.write(x, ValueType.UnsignedInt(Number.NaN));
  s.write(x, ValueType.SignedInt(2 ** 31));
  s.write(x, ValueType.UnsignedInt(1.5));
  assert.is(s.read(x, DataType.SignedInt)?.getValue(), -1, 'nothing was cut and written');
  assert.equal(lines.filter((l) => l.startsWith('Invalid value')), [
    'Invalid value 1099511627781 for UnsignedInt (a whole number from 0 to 4294967295)',
    'Invalid value NaN for UnsignedInt (a whole number from 0 to 4294967295)',
    'Invalid value 2147483648 for SignedInt (a whole number from -2147483648 to 2147483647)',
    'Invalid value 1.5 for UnsignedInt (a whole number from 0 to 4294967295)',
  ]);
  s.write(x, ValueType.Zero);
  assert.is(read(s, x), 0);
  await s.end();
});

P('an unregistered pointer, a fractional address, a killed child reaped by wait, and calls after end are each named', async () => {
  const { s, lines } = await sim();
  assert.is(read(s, new Pointer()), undefined);
  const odd = new Pointer();
  odd.va = 1.5;
  s.write(odd, ValueType.UnsignedInt(1));
  const child = s.fork();
  assert.not.ok(s.wait(child), 'a running child is not reaped');
  s.kill(child);
  assert.ok(s.wait(child), 'the parent reaps its terminated child');
  assert.not.ok(s.wait(child), 'once');
  await s.end();
  assert.is(read(s, odd), undefined);
  await s.end();
  assert.equal(lines, ['Unregistered pointer: register it first', 'Invalid address 1.5', 'The simulation has ended']);
});

P('what is not a Pointer, a DataType or a ValueType is named, and nothing is read or written; kill of no process says so', async () => {
  const { s, lines } = await sim();
  const x = new Pointer();
  s.register(x);
  s.write(x, ValueType.UnsignedInt(9));
  s.register(null as never);
  assert.is(s.read(undefined as never, DataType.UnsignedInt), undefined);
  assert.is(s.read(x, 'Int' as never), undefined);
  s.write(x, 5 as never);
  s.write(x, { kind: 'Float', value: 1 } as never);
  s.kill(42);
  assert.is(read(s, x), 9, 'the variable kept its value');
  assert.equal(lines, [
    'PGZERO: 0x0',
    'Invalid pointer null: a Pointer is needed (new Pointer())',
    'Invalid pointer undefined: a Pointer is needed (new Pointer())',
    'Invalid type Int (DataType.UnsignedInt, DataType.SignedInt, DataType.U8, DataType.I8, DataType.U16, DataType.I16, DataType.U64, DataType.I64)',
    'Invalid value 5: write takes ValueType.Zero or ValueType.UnsignedInt(n), ValueType.SignedInt(n), ValueType.U8(n), ValueType.I8(n), ValueType.U16(n), ValueType.I16(n), ValueType.U64(n), ValueType.I64(n)',
    'Invalid value {"kind":"Float","value":1}: write takes ValueType.Zero or ValueType.UnsignedInt(n), ValueType.SignedInt(n), ValueType.U8(n), ValueType.I8(n), ValueType.U16(n), ValueType.I16(n), ValueType.U64(n), ValueType.I64(n)',
    'No process 42',
  ]);
  await s.end();
});

P('a write that needs a frame when none is left says Out of memory', async () => {
  const { s, lines } = await sim({ memory: '512KiB' });
  fillPast(s);
  assert.ok(lines.some((l) => l.startsWith('Out of memory writing 0x')), lines.slice(-3).join(' | '));
  assert.not.ok(lines.some((l) => l.startsWith('Invalid address')), 'no write to a registered variable is called an invalid address');
  await s.end();
});

P('out of frames is a clean message, never corruption (18)', async () => {
  const { s, lines } = await sim({ memory: '512KiB' });
  const ptrs = fillPast(s);
  assert.ok(lines.some((l) => l.startsWith('Invalid address') || l.startsWith('Out of memory')), 'some writes were refused');
  const ok = ptrs.filter((p, i) => read(s, p) === i + 1).length;
  assert.ok(ok > 0 && ok < 200, `${ok} writes kept`);
  await s.end();
});

P('fork shares RW and RO pages copy-on-write in both; wired and I/O mappings are absent in the child (20)', async () => {
  const { s } = await sim({ devicePages: 1 });
  const k = s.machine.kernel;
  const m = s.machine;
  const page = (rights: number, va: number): number => {
    const f = m.frames.allocZeroed(0);
    refs.setRefcount(k, f, 1);
    assert.is(vm.map(k, 0, 0, vaHi(va), vaLo(va), f * 4096, 4096, rights).code, 0);
    return f;
  };
  const rw = page(R_USER | R_WRITE, 0x10_0000);
  const ro = page(R_USER, 0x11_0000);
  page(R_USER | R_WRITE | R_WIRED, 0x12_0000);
  // An I/O mapping: the device's register page, above RAM.
  assert.is(vm.map(k, 0, 0, 0, 0x13_0000, m.layout.deviceFrame * 4096, 4096, R_USER | R_WRITE | R_IO).code, 0);
  assert.is(vm.map(k, 0, 0, 0, 0x14_0000, m.frames.allocZeroed(0) * 4096, 4096, R_USER | R_WRITE | R_IO).code, 2, 'an I/O mapping of RAM is an invalid frame');
  const child = s.fork();
  const cs = 1;
  assert.is(child, 1);
  for (const [va, f] of [[0x10_0000, rw], [0x11_0000, ro]]) {
    for (const space of [0, cs]) {
      const r = vm.resolve(k, 0, space, vaHi(va), vaLo(va));
      assert.ok(r.code === 0 && (r.rights & R_COW) !== 0, `0x${va.toString(16)} in space ${space} is copy-on-write`);
    }
    assert.is(refs.refcount(k, f), 2);
  }
  assert.is(vm.resolve(k, 0, cs, 0, 0x12_0000).code, 4, 'wired: absent in the child');
  assert.is(vm.resolve(k, 0, cs, 0, 0x13_0000).code, 4, 'I/O: absent in the child');
  await s.end();
});

P('MH policy: the last sharer\'s write makes the page private read-only, then the retried write faults again: 2 faults, 0 copies (23)', async () => {
  for (const [cow, faults] of [['mh', 2], ['default', 1]] as const) {
    const { s } = await sim({ cow });
    const x = new Pointer();
    s.register(x);
    s.write(x, ValueType.UnsignedInt(1));
    const child = s.fork();
    s.kill(child); // the other sharer is gone: the parent is the last one
    const k = s.machine.kernel;
    const c0 = k.stats.cowCopies;
    const pf0 = s.machine.kernel.stats.cowReuses + s.machine.kernel.stats.spuriousFaults;
    s.write(x, ValueType.UnsignedInt(2));
    assert.is(k.stats.cowCopies - c0, 0, `${cow}: no copy`);
    assert.is(s.machine.kernel.stats.cowReuses + s.machine.kernel.stats.spuriousFaults - pf0, faults, `${cow}: ${faults} fault(s)`);
    assert.is(read(s, x), 2);
    await s.end();
  }
});

P('frames are conserved through a fork storm with writes and kills: the free count returns', async () => {
  const { s } = await sim({ memory: '32MiB' });
  const xs = Array.from({ length: 8 }, () => new Pointer());
  for (const x of xs) s.register(x);
  xs.forEach((x, i) => s.write(x, ValueType.UnsignedInt(i)));
  const before = s.machine.frames.freeCount();
  const pids: number[] = [];
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 5; i++) {
      const p = s.fork();
      assert.ok(p >= 0);
      pids.push(p);
      s.switch(p);
      s.write(xs[(round + i) % xs.length], ValueType.UnsignedInt(1000 + i)); // a copy
      const q = s.fork(); // a grandchild sharing both
      if (q >= 0) pids.push(q);
      s.switch(0);
    }
    for (const p of pids.splice(0)) s.kill(p);
    assert.is(s.machine.frames.freeCount(), before, `round ${round}: every frame of the dead processes is back`);
  }
  assert.equal(xs.map((x) => read(s, x)), [0, 1, 2, 3, 4, 5, 6, 7], 'the parent kept its values');
  await s.end();
});

P.run();
