// RPAL's address-space sharing (issue 12; reference/seed-behaviours.md 25, 26, 28, 29; kernel/rpal.ts):
// slots confine a process's mappings; B's slot shared into A by one top-level entry in every
// replica shows A B's writes and later mappings, on another node too; a fault by A in B's slot is
// handled in B's space (and, injected, in A's: caught); a shootdown in B's slot reaches A's cores
// (and, injected, only B's: caught by the stale-tlb oracle); fork and destroy leave other
// processes' slots alone; bad input is an error value that changes nothing.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Machine } from '../src/machine/machine.js';
import type { Cpu } from '../src/hw/cpu.js';
import { ACC_READ, ACC_WRITE } from '../src/hw/fault.js';
import { keyOf, EINVAL, INVALID_BASE, NOT_MAPPED, OK, OUT_OF_MEMORY, R_USER, R_WRITE } from '../src/kernel/ops.js';
import { CR4_PAE, CR4_PKE } from '../src/hw/regs.js';
import { PF_PK, faultError } from '../src/hw/fault.js';
import { enumerateMappings } from '../src/hw/pagetable.js';
import * as faults from '../src/kernel/fault.js';
import * as forks from '../src/kernel/fork.js';
import * as refs from '../src/kernel/refs.js';
import * as rpal from '../src/kernel/rpal.js';
import * as shootdowns from '../src/kernel/shootdown.js';
import * as spaces from '../src/kernel/space.js';
import * as vm from '../src/kernel/vm.js';
import * as threads from '../src/kernel/thread.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';
import { unionShootdownRace } from '../src/workloads/races-share.js';
import { describe } from '../src/machine/dump.js';

const RW = R_USER | R_WRITE;
const SLOT = rpal.SLOT_BYTES;

async function boot(inject: string[] = []): Promise<{ m: Machine; a: number; b: number; c0: Cpu; c1: Cpu }> {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '32MiB', inject, kernel: { maxSpaces: 8 } }, { pool: false });
  const k = m.kernel;
  const a = spaces.createSpace(k);
  const b = spaces.createSpace(k);
  m.setRegisters(0, { cpl: 3 });
  m.setRegisters(1, { cpl: 3 });
  const c0 = m.attachHere(0);
  const c1 = m.attachHere(1);
  assert.is(rpal.enterSlot(k, a, 1), OK);
  assert.is(rpal.enterSlot(k, b, 2), OK);
  return { m, a, b, c0, c1 };
}

/** A read (or write of `value`) by cpu through the fault path (retried after repairs): the value read, or 'fault'. */
function access(m: Machine, cpu: Cpu, va: number, value?: number): number | 'fault' {
  const r = faults.access(m.kernel, cpu, value === undefined ? ACC_READ : ACC_WRITE, vaHi(va), vaLo(va), 0, value ?? 0);
  return r === 0 ? (value ?? cpu.mmu.valLo) : 'fault';
}

const R = suite('RPAL sharing');

R('behaviour 25: a process in a slot maps inside it only', async () => {
  const { m, a } = await boot();
  const k = m.kernel;
  const f = m.frames.allocZeroed(0) * 4096;
  assert.is(vm.map(k, 0, a, vaHi(SLOT + 0x1000), vaLo(SLOT + 0x1000), f, 4096, RW).code, OK);
  assert.is(vm.map(k, 0, a, 0, 0x40_0000, f, 4096, RW).code, INVALID_BASE, 'below the slot');
  assert.is(vm.map(k, 0, a, vaHi(2 * SLOT), vaLo(2 * SLOT), f, 4096, RW).code, INVALID_BASE, 'in the next slot');
  assert.is(vm.map(k, 0, a, vaHi(2 * SLOT - 4096), vaLo(2 * SLOT - 4096), f, 8192, RW).code, INVALID_BASE, 'across its end');
});

R('behaviour 26: once B is shared into A, A sees B\'s writes and B\'s later mappings, on either node', async () => {
  const { m, a, b, c0, c1 } = await boot();
  const k = m.kernel;
  const X = 2 * SLOT + 0x40_0000;
  assert.is(vm.mapAnon(k, 0, b, vaHi(X), vaLo(X), 1, RW), OK);
  shootdowns.switchTo(k, c0, b);
  assert.is(access(m, c0, X, 0x1234), 0x1234);
  assert.is(rpal.share(k, a, b), OK);
  shootdowns.switchTo(k, c1, a); // node 1: A's replica 1 links B's replica-1 PDPT
  assert.is(access(m, c1, X), 0x1234, "A reads B's write");
  const Y = X + 0x20_0000;
  assert.is(vm.mapAnon(k, 0, b, vaHi(Y), vaLo(Y), 1, RW), OK, 'B maps another page later');
  assert.is(access(m, c0, Y, 77), 77);
  assert.is(access(m, c1, Y), 77, "A sees B's later mapping");
  assert.is(vm.entries(k, 1, a).length, 0, "A's own mapping database holds none of B's pages");
  assert.is(access(m, c1, 3 * SLOT), 'fault', 'a slot not shared stays unmapped');
});

R("behaviour 28: A's fault in B's slot is handled in B's space (a zero fill of B's), then A's access is retried", async () => {
  for (const inject of [[], ['fault-in-wrong-space']]) {
    const { m, a, b, c1 } = await boot(inject);
    const k = m.kernel;
    const Z = 2 * SLOT + 0x80_0000;
    assert.is(vm.mapZero(k, 0, b, vaHi(Z), vaLo(Z), RW).code, OK);
    assert.is(rpal.share(k, a, b), OK);
    shootdowns.switchTo(k, c1, a);
    const fills = k.stats.zeroFills;
    const got = access(m, c1, Z, 99);
    if (inject.length === 0) {
      assert.is(got, 99, "A's write landed");
      assert.is(k.stats.zeroFills, fills + 1, "one zero fill, in B's space");
      const r = vm.resolve(k, 0, b, vaHi(Z), vaLo(Z));
      assert.ok(r.code === OK && r.pa / 4096 !== refs.zeroPage(k) && refs.refcount(k, r.pa / 4096) === 1, "B's page has its own frame now");
      assert.ok((refs.ownerMask(k, r.pa / 4096) & (1 << b)) !== 0, 'owned by B');
      assert.is(vm.entries(k, 1, a).length, 0, 'A maps nothing of it');
    } else {
      assert.is(got, 'fault', 'injected fault-in-wrong-space: A finds no mapping of its own and the write is delivered as a fault');
      assert.is(k.stats.zeroFills, fills, 'B was not filled');
    }
  }
});

R('behaviour 29: an unmap in B\'s slot shoots down A\'s cores; owner-only-shootdown is caught (race union-shootdown)', async () => {
  const ok = await unionShootdownRace(false);
  assert.ok(ok.ok, ok.steps.join('\n'));
  const caught = await unionShootdownRace(true);
  assert.ok(caught.ok, caught.steps.join('\n'));
});

R('fork copies none of the slots shared into the parent; destroying the owner unlinks its slot from every sharer, and frames are conserved', async () => {
  const { m, a, b, c0, c1 } = await boot();
  const k = m.kernel;
  const X = 2 * SLOT + 0x40_0000;
  const AX = SLOT + 0x40_0000;
  assert.is(vm.mapAnon(k, 0, b, vaHi(X), vaLo(X), 1, RW), OK);
  assert.is(vm.mapAnon(k, 0, a, vaHi(AX), vaLo(AX), 1, RW), OK);
  assert.is(rpal.share(k, a, b), OK);
  shootdowns.switchTo(k, c0, a);
  const child = forks.fork(k, c0, a);
  assert.ok(child >= 0);
  shootdowns.switchTo(k, c1, child);
  assert.is(access(m, c1, AX), 0, "the child has A's own page");
  assert.is(access(m, c1, X), 'fault', "but not B's slot");
  shootdowns.leave(k, c1);
  spaces.destroySpace(k, child, (pfn, n, r) => refs.releaseMapping(k, child, pfn, n, r), c1);
  shootdowns.leave(k, c0);
  const free = m.frames.freeCount();
  spaces.destroySpace(k, b, (pfn, n, r) => refs.releaseMapping(k, b, pfn, n, r), c0);
  assert.ok(m.frames.freeCount() > free, "B's frames and tables are back");
  assert.is(rpal.ownerIn(k, a, X), -1, 'A no longer links B\'s slot');
  for (let r = 0; r < 2; r++) assert.is(m.mem[k.vspace(a).root(r) * 1024 + 2 * 2] & 1, 0, `A's replica ${r}: the slot entry is clear`);
  spaces.destroySpace(k, a, (pfn, n, r) => refs.releaseMapping(k, a, pfn, n, r), c0);
});

R('bad input is an error value that changes nothing', async () => {
  const { m, a, b } = await boot();
  const k = m.kernel;
  const c = spaces.createSpace(k);
  assert.is(rpal.enterSlot(k, c, 2), EINVAL, "B's slot is taken");
  assert.is(rpal.enterSlot(k, c, 0), EINVAL, 'slot 0');
  assert.is(rpal.enterSlot(k, c, 256), EINVAL, 'a kernel-half slot');
  assert.is(rpal.enterSlot(k, a, 3), EINVAL, 'already in RPAL mode');
  assert.is(vm.mapAnon(k, 0, c, 0, 0x40_0000, 1, RW), OK);
  assert.is(rpal.enterSlot(k, c, 3), EINVAL, 'a mapping outside the slot');
  assert.is(rpal.slotOf(k, c), -1);
  assert.is(rpal.share(k, a, a), EINVAL, 'into itself');
  assert.is(rpal.share(k, a, c), EINVAL, 'a space not in RPAL mode');
  assert.is(rpal.unshare(k, a, b), EINVAL, 'never shared');
  assert.is(rpal.share(k, a, b), OK);
  assert.is(rpal.share(k, a, b), EINVAL, 'twice');
  assert.is(rpal.unshare(k, a, b), OK);
  assert.is(rpal.ownerIn(k, a, 2 * SLOT), -1);
  // Keys asked for by number, and a slot's key.
  assert.is(rpal.pkeyAlloc(k, a, 5), 5);
  assert.is(rpal.pkeyAlloc(k, a, 5), -1 - EINVAL, 'a key taken');
  assert.is(rpal.pkeyAlloc(k, a, 16), -1 - EINVAL, 'key 16');
  assert.is(rpal.setSlotKey(k, a, 6), EINVAL, 'a key the space does not have');
  assert.is(rpal.setSlotKey(k, a, 0), EINVAL, 'key 0');
  assert.is(rpal.setSlotKey(k, c, 5), EINVAL, 'a space not in RPAL mode');
  assert.is(rpal.setSlotKey(k, a, 5), OK);
  const X = SLOT + 0x40_0000;
  assert.is(vm.mapAnon(k, 0, a, vaHi(X), vaLo(X), 1, RW), OK);
  const rx = vm.resolve(k, 0, a, vaHi(X), vaLo(X));
  assert.is(rx.code === OK ? keyOf(rx.rights) : -1, 5, "a later mapping in the slot takes the slot's key");
  assert.is(threads.forkThread(k, 999, 1), -1 - EINVAL, 'fork of a thread that does not exist');
});

R('behaviour 27: keys are allocated per process (1-15), put on a mapping in every replica, checked against the core\'s PKRU with no flush, and kept by copy-on-write', async () => {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '32MiB', kernel: { maxSpaces: 8 } }, { pool: false });
  const k = m.kernel;
  const a = spaces.createSpace(k);
  const b = spaces.createSpace(k);
  m.setRegisters(0, { cpl: 3, cr4: CR4_PAE | CR4_PKE });
  const c0 = m.attachHere(0);
  assert.is(rpal.enterSlot(k, a, 1), OK);
  const keys = Array.from({ length: 15 }, () => rpal.pkeyAlloc(k, a));
  assert.equal(keys, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  assert.is(rpal.pkeyAlloc(k, a), -1 - OUT_OF_MEMORY, 'a sixteenth key');
  const bk = rpal.pkeyAlloc(k, b);
  const X = SLOT + 0x40_0000;
  assert.is(vm.mapAnon(k, 0, a, vaHi(X), vaLo(X), 1, RW), OK);
  shootdowns.switchTo(k, c0, a);
  assert.is(access(m, c0, X, 5), 5, 'key 0 (the default): allowed');
  assert.is(rpal.pkeyMprotect(k, c0, a, vaHi(X), vaLo(X), 7), OK);
  for (let r = 0; r < 2; r++) {
    spaces.syncAll(k, a);
    const leaf = enumerateMappings(m.mem, m.layout.totalFrames, k.vspace(a).root(r), false).find((x) => x.va === BigInt(X));
    assert.is(leaf?.pkey, 7, `replica ${r}'s leaf carries key 7`);
  }
  c0.wrpkru(1 << (2 * 7)); // access-disable key 7
  const denied = c0.mmu.load64(vaHi(X), vaLo(X));
  assert.ok(denied < 0 && (faultError(denied) & PF_PK) !== 0, 'PKRU denies key 7: #PF with PK');
  const [sp0, inv0] = [k.stats.spuriousFaults, k.stats.invalidAccesses];
  assert.is(faultError(faults.access(k, c0, ACC_READ, vaHi(X), vaLo(X))) & PF_PK, PF_PK, 'through the kernel: delivered to the program');
  assert.equal([k.stats.spuriousFaults, k.stats.invalidAccesses], [sp0, inv0 + 1], 'at once, not retried as spurious (no mapping change repairs it)');
  c0.wrpkru(0);
  assert.is(c0.mmu.load64(vaHi(X), vaLo(X)), 0, 'WRPKRU grants it again, no flush');
  const child = forks.fork(k, c0, a);
  shootdowns.switchTo(k, c0, child);
  assert.is(access(m, c0, X, 6), 6, "the child's write copies the page");
  const copy = enumerateMappings(m.mem, m.layout.totalFrames, k.vspace(child).root(0), false).find((x) => x.va === BigInt(X));
  assert.ok(copy?.pkey === 7 && copy.write, 'the copy keeps key 7');
  assert.is(rpal.pkeyMprotect(k, c0, a, vaHi(X), vaLo(X), 0), EINVAL, 'key 0');
  assert.is(rpal.pkeyMprotect(k, c0, a, vaHi(X), vaLo(X), 16), EINVAL, 'key 16');
  assert.is(rpal.pkeyMprotect(k, c0, b, vaHi(X), vaLo(X), 3), EINVAL, 'a key B did not allocate (B has only key ' + bk + ')');
  assert.is(rpal.pkeyMprotect(k, c0, a, vaHi(X + 4096), vaLo(X + 4096), 7), NOT_MAPPED, 'no mapping based there');
});

R('a dump of a space lists the slots shared into it, and its root shows the owner\'s mappings there', async () => {
  const { m, a, b } = await boot();
  const k = m.kernel;
  const X = 2 * SLOT + 0x40_0000;
  assert.is(vm.mapAnon(k, 0, b, vaHi(X), vaLo(X), 1, RW), OK);
  assert.is(rpal.share(k, a, b), OK);
  spaces.syncAll(k, b);
  const roots = [0, 1].map((r) => ({ label: `a${r}`, cr3: BigInt(k.vspace(a).root(r)) * 4096n, la57: false, space: a }));
  const d = describe(m, [...roots, { label: 'b0', cr3: BigInt(k.vspace(b).root(0)) * 4096n, la57: false, space: b }]);
  for (const r of d.roots.slice(0, 2)) {
    assert.equal(r.shared, [{ slot: 2, owner: b }], `${r.label} lists B's slot`);
    assert.equal(r.mappings.filter((x) => BigInt(x.va) >= BigInt(2 * SLOT) && BigInt(x.va) < BigInt(3 * SLOT)).map((x) => [x.va, x.pa]),
      d.roots[2].mappings.filter((x) => BigInt(x.va) >= BigInt(2 * SLOT) && BigInt(x.va) < 0x8000_0000_0000n).map((x) => [x.va, x.pa]), "the same mappings as B's replica there");
  }
  assert.is(d.roots[2].shared, undefined, 'B has nothing shared into it');
});

R.run();
