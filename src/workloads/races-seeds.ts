// Race scenarios of the seeds' later mechanisms: MH's DMA against an unmap and its user-level
// copy-on-write (kernel personality 'mh'), and os5's kernel half (the lazy method's hazard, an
// eager update racing a fork). Deterministic as those of races.ts: handshakes and breakpoints.

import type { CoreResult } from '../machine/executor.js';
import { BP_BEFORE_USER_MOVE, BP_KHALF_PUBLISH } from '../kernel/context.js';
import { EINVAL, OK } from '../kernel/ops.js';
import * as khalf from '../kernel/khalf.js';
import { R_USER, R_WRITE } from '../kernel/ops.js';
import { IPI_OK, IPI_PING } from '../hw/apic.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';
import * as vm from '../kernel/vm.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import { RaceApi, type RaceOutcome, type Scenario } from './raceapi.js';
import { findEntry } from '../hw/pagetable.js';

const X = 0x40_0000;

/**
 * dma-vs-unmap — MH: a process exports a page to the device and starts a DMA write; while the
 * transfer is in flight (the engine parked after its first page) the process unmaps the page.
 * The page is wired: the unmap returns EBUSY and the DMA completes into the frame the process
 * still owns. (With --inject unwired-dma the same steps free the frame under the transfer.)
 */
const dmaVsUnmap: Scenario = {
  name: 'dma-vs-unmap',
  models: 'MH: an unmap of a page exported to a device while a DMA to it is in flight (wiring makes it EBUSY)',
  async run() {
    return RaceApi.session({ cores: 3, nodes: 1, memory: '16MiB', kernel: { personality: 'mh' } }, async (r) => {
      const s = r.space();
      const k = r.m.kernel;
      const dev = r.m.device;
      if (!dev) throw new Error('race: the MH machine has no device');
      const frame = r.mapPage(0, s, X);
      const driver = r.m.attachHere(2); // the script's own core: it tells core 1 when to unmap and hears back
      let heard = 0;
      driver.apic.handlers[IPI_PING] = (c, sender) => {
        heard++;
        c.apic.ack(sender);
      };
      try {
        dev.armBreakpoint();
        const done = r.run({
          0: [{ op: 'switch', space: s }, { op: 'export', space: s, va: X }, { op: 'dma', write: true, value: 0x5a5a }],
          1: [{ op: 'switch', space: s }, { op: 'awaitPings', count: 1 }, { op: 'unmap', space: s, va: X }, { op: 'ping', target: 2 }],
        });
        r.step('core 0 exports 0x400000 to the device and starts a DMA write of 0x5a5a into it');
        await r.until(() => dev.parked(), 'the DMA engine to park mid-transfer');
        r.step('the engine wrote the first page and is parked: the transfer is in flight');
        r.expect(dev.inFlight() === 1, 'one request in flight');
        while (driver.apic.sendIpi(1, IPI_PING) !== IPI_OK) driver.apic.poll();
        driver.apic.waitAcks();
        await r.until(() => {
          driver.apic.poll();
          return heard > 0;
        }, 'core 1 to unmap the page and report back');
        r.step('core 1 tried to unmap the page meanwhile');
        r.expect(r.replicaMaps(s, 0, X), 'the page is still mapped');
        r.expect((refs.ownerMask(k, frame) & (1 << s)) !== 0, 'and its frame still belongs to the process');
        dev.resume();
        const res = await done;
        r.expect(res.every((x) => x.ok), 'both cores finished');
        const c1 = res.find((x) => x.core === 1) as CoreResult;
        r.expect(c1.outcomes['unmap:EBUSY'] === 1, `the unmap returned EBUSY (${JSON.stringify(c1.outcomes)})`);
        const words = r.m.mem.subarray(frame * 1024, frame * 1024 + 1024);
        r.expect(words.every((w) => w === 0x5a5a), 'the DMA completed into the still-owned frame (every word 0x5a5a)');
        r.expect(dev.violations().count === 0, 'the frame-owner oracle saw no DMA into a frame the process did not own');
      } finally {
        driver.detach();
      }
    });
  },
};

/**
 * user-cow-race — MH: after a fork, parent and child write the same RO-Shared page at once. The
 * kernel forwards each fault to the process's user-level handler; both copy the page into their
 * scratch pages and are stopped before the move; then one moves, then the other. Each write
 * lands in its own private copy, and the shared frame, left with no sharer, is freed.
 */
const userCowRace: Scenario = {
  name: 'user-cow-race',
  models: 'MH: fork, then parent and child write the same page at once; each user-level handler copies and moves',
  async run() {
    return RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB', kernel: { personality: 'mh', maxSpaces: 4 } }, async (r) => {
      const p = r.space();
      const k = r.m.kernel;
      const f = r.mapPage(0, p, X);
      r.m.mem[f * 1024] = 7;
      const forked = await r.run({ 0: [{ op: 'switch', space: p }, { op: 'fork' }] });
      r.expect(forked[0].ok && forked[0].outcomes['fork:Ok'] === 1, 'core 0 forked the process');
      const c = procs.liveSpaces(k).find((x) => x !== p) as number;
      r.expect(c !== undefined && refs.refcount(k, f) === 2, `space ${c} shares frame ${f} RO-Shared (2 references)`);
      const data0 = dataFrames(r);
      r.m.arm(0, BP_BEFORE_USER_MOVE);
      r.m.arm(1, BP_BEFORE_USER_MOVE);
      const done = r.run({
        0: [{ op: 'switch', space: p }, { op: 'store', va: X + 8, value: 100n }, { op: 'load', va: X }, { op: 'load', va: X + 8 }],
        1: [{ op: 'switch', space: c }, { op: 'store', va: X + 8, value: 200n }, { op: 'load', va: X }, { op: 'load', va: X + 8 }],
      }, { record: true });
      await r.m.waitParked(0, BP_BEFORE_USER_MOVE);
      await r.m.waitParked(1, BP_BEFORE_USER_MOVE);
      r.step('parent (core 0) and child (core 1) faulted on the shared page; both handlers copied it and are parked before the move');
      r.expect(refs.refcount(k, f) === 2, 'the shared frame still has both references');
      r.m.disarm(1, BP_BEFORE_USER_MOVE);
      r.m.resume(1);
      await r.until(() => refs.refcount(k, f) === 1, "the child's move to drop its reference");
      r.step("the child moved its copy over the shared mapping first");
      r.m.disarm(0, BP_BEFORE_USER_MOVE);
      r.m.resume(0);
      const res = await done;
      r.expect(res.every((x) => x.ok), 'both cores finished');
      const copies = res.reduce((a, x) => a + (x.kernel.userCopies ?? 0), 0);
      r.expect(copies === 2, `each handler copied and moved (${copies} copies)`);
      const v0 = res.find((x) => x.core === 0)?.values;
      const v1 = res.find((x) => x.core === 1)?.values;
      r.expect(v0?.join() === '0x7,0x64' && v1?.join() === '0x7,0xc8', `no lost write: the parent reads 0x7, 0x64; the child 0x7, 0xc8 (got ${v0}, ${v1})`);
      r.expect(refs.refcount(k, f) === 0, 'the shared frame has no sharer left and is freed');
      r.expect(!r.m.frames.isAllocated(f), 'the allocator has it back');
      r.expect(dataFrames(r) === data0 + 1, `no frame leaked: one more data frame than before the writes (two private copies for one shared; ${dataFrames(r)} vs ${data0})`);
      const data = (sp: number): number[] => vm.entries(k, 0, sp).filter((e) => e.va === X).map((e) => refs.refcount(k, e.pfn));
      r.expect(data(p).join() === '1' && data(c).join() === '1', 'parent and child each hold a private copy (one reference each)');
    });
  },
};

/**
 * lazy-kernel-removal — os5's lazy method cannot propagate a removal: a process copies a
 * top-level kernel entry in on a kernel fault; the kernel then removes the entry from the master
 * and frees its tables; another process gets one of those frames as an ordinary user page and
 * writes into it; the first process's next kernel access walks through its stale entry into that
 * user page as if it were a kernel table, and reaches a frame that is not its own. The stale-tlb
 * oracle (extended to kernel frames) reports the access.
 */
const lazyKernelRemoval: Scenario = {
  name: 'lazy-kernel-removal',
  models: "os5's lazy kernel-half method: a removed top-level kernel entry stays in a process that copied it",
  async run() {
    return RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB', kernel: { khalf: 'lazy', maxSpaces: 4 } }, async (r) => {
      const k = r.m.kernel;
      const p = r.space();
      const q = r.space();
      const top = 300;
      const x = khalf.topBase(top);
      const first = await r.run({ 0: [{ op: 'switch', space: p }, { op: 'kmap', va: kva(x) }, { op: 'kstore', va: kva(x), value: 0x4b }, { op: 'kload', va: kva(x) }] }, { record: true });
      r.expect(first[0].ok && first[0].values?.at(-1) === '0x4b', 'core 0 kmapped a page under a new top-level entry and read it back in process P');
      r.expect(first[0].kernel.kernelFaults === 1, "P's first kernel access faulted once and copied the entry from the master (lazy)");
      const rootP = k.vspace(p).root(0);
      const entryP = r.m.mem[rootP * 1024 + top * 2];
      const table = (entryP >>> 12) + r.m.mem[rootP * 1024 + top * 2 + 1] * 2 ** 20;
      const driver = r.m.attachHere(1);
      try {
        r.expect(khalf.kunmap(k, driver, vaHi(x), vaLo(x)) === EINVAL, 'kunmap of the last mapping under the entry is refused under lazy (EINVAL)...');
        r.expect(khalf.kunmap(k, driver, vaHi(x), vaLo(x), true) === OK, '...unless asked for: the entry is removed from the master and its tables freed');
      } finally {
        driver.detach();
      }
      r.expect((r.m.mem[khalf.masterRoot(k, 0) * 1024 + top * 2] & 1) === 0, 'the master no longer has the entry');
      r.expect((r.m.mem[rootP * 1024 + top * 2] & 1) === 1, 'P still has it (lazy never removes)');
      r.expect(!r.m.frames.isAllocated(table), `the table it points at (frame ${table}) is free`);
      // Q gets that frame as an ordinary user page and writes a 1 GiB "entry" into it (PS, present,
      // physical 0): for P's walk it is now the table under its stale entry.
      const QVA = 0x50_0000;
      reuseAsUserPage(r, table, q, QVA, 0);
      const victim = r.mapPage(0, q, QVA + 0x10_0000);
      const done = await r.run({ 0: [
        { op: 'switch', space: q }, { op: 'store', va: QVA, value: 0x83n }, { op: 'store', va: QVA + 0x10_0000, value: 0x5ec2e7n },
        { op: 'switch', space: p }, { op: 'kload', va: kva(x + victim * 4096) },
      ] }, { record: true });
      r.step("Q wrote into its page; P loads from the kernel address the removed entry covered");
      const c0 = done[0];
      r.expect(c0.ok && c0.values?.at(-1) === '0x5ec2e7', `P's kernel load read Q's data (${c0.values?.at(-1)}): it walked through Q's page as a kernel table`);
      r.expect(c0.staleAccesses >= 1, `the stale-tlb oracle reports the access (frame ${c0.staleExamples[0]?.pfn} is not P's)`);
      r.expect(!khalf.matchesMaster(k, p, 0, top), "P's entry differs from the master's: the kernel-half oracle's finding");
    });
  },
};

/**
 * free-table-without-flush — paging-structure caches (tlb.psc on; SDM 4.10.3): core 0 reads a
 * kernel page in process P, so its PDE cache holds, under P's PCID, the page table of that page's
 * 2 MiB region; it switches to Q. The kernel removes the last mapping under that top-level entry
 * and frees its tables. Its shootdown reaches core 0 running Q: an INVLPG there drops Q's
 * paging-structure-cache entries only (4.10.4.1), so the kernel must invalidate every PCID
 * (INVPCID type 2) when it frees tables — with --inject free-table-without-flush it does not.
 * The freed page table becomes Q's user page holding an entry that points at Q's data; core 0
 * switches back to P (no flush: nothing of P changed, and it took part in the kernel shootdown)
 * and reads an address in the removed range. With the injection the walk starts at the cached,
 * freed table and reads Q's data (the stale-tlb oracle reports it); without it the read faults.
 * The scenario runs the injected kernel; test/psc.test.ts runs the right one, and the injected
 * one on a machine without paging-structure caches (where the bug cannot show).
 */
export function freeTableRace(inject: boolean, psc = true): Promise<RaceOutcome> {
  const opts = { cores: 2, nodes: 1, memory: '16MiB', tlb: { psc }, kernel: { khalf: 'eager' as const, maxSpaces: 4 }, inject: inject ? ['free-table-without-flush'] : [] };
  return RaceApi.session(opts, async (r) => {
    const k = r.m.kernel;
    const p = r.space();
    const q = r.space();
    const top = 302;
    const x = khalf.topBase(top);
    const victim = 7; // the page of the removed range core 0 reads at the end
    const driver = r.m.attachHere(1);
    let heard = 0;
    driver.apic.handlers[IPI_PING] = (c, sender) => {
      heard++;
      c.apic.ack(sender);
    };
    try {
      const done = r.run({ 0: [
        { op: 'switch', space: p }, { op: 'kmap', va: kva(x) }, { op: 'kstore', va: kva(x), value: 0x4b }, { op: 'kload', va: kva(x) },
        { op: 'switch', space: q }, { op: 'ping', target: 1 }, { op: 'awaitPings', count: 1 },
        { op: 'switch', space: p }, { op: 'kload', va: kva(x + victim * 4096) },
      ] }, { record: true });
      await r.until(() => {
        driver.apic.poll();
        return heard > 0;
      }, 'core 0 to read the kernel page in P and switch to Q');
      r.step('core 0 read a page kmapped under a new top-level entry in process P, then switched to Q');
      const pde = findEntry(r.m.mem, khalf.masterRoot(k, 0), false, vaHi(x), vaLo(x), 21);
      const table = r.m.mem[pde] >>> 12;
      r.expect(khalf.kunmap(k, driver, vaHi(x), vaLo(x)) === OK, 'the kernel removes the mapping, the last under its entry: the entry goes and its tables are freed');
      r.expect(!r.m.frames.isAllocated(table), `the page table of the region (frame ${table}) is free`);
      // Q gets the freed table as a user page and (the script writing for it) puts a 4 KiB entry
      // at the victim's index pointing at a page of Q's holding a marker.
      const QVA = 0x50_0000;
      reuseAsUserPage(r, table, q, QVA, 1);
      const data = r.mapPage(1, q, QVA + 0x10_0000);
      r.m.mem[data * 1024] = 0x5ec2e7;
      r.m.mem[table * 1024 + victim * 2 + 1] = 0;
      r.m.mem[table * 1024 + victim * 2] = (data << 12) | 0x3; // present, writable, supervisor
      r.step("Q's page (the freed table) now holds an entry for the victim's index, pointing at Q's data");
      while (driver.apic.sendIpi(0, IPI_PING) !== IPI_OK) driver.apic.poll();
      driver.apic.waitAcks();
      const c0 = (await done)[0];
      r.step('core 0 switched back to P and read an address in the removed range');
      const got = c0.values?.at(-1);
      if (inject && psc) {
        r.expect(c0.ok && got === '0x5ec2e7', `the read returned Q's data (${got}): the walk began at the freed table P's PCID still cached`);
        r.expect(c0.staleAccesses >= 1, `the stale-tlb oracle reports it (frame ${c0.staleExamples[0]?.pfn} is not P's)`);
      } else {
        r.expect(got === 'fault', `the read faulted (${got}): ${psc ? "INVPCID type 2 had dropped every PCID's cached entries" : 'no paging-structure cache: the walk began at the root'}`);
        r.expect(c0.staleAccesses === 0, 'the stale-tlb oracle saw nothing');
      }
    } finally {
      driver.detach();
    }
  });
}

const freeTableWithoutFlush: Scenario = {
  name: 'free-table-without-flush',
  models: 'paging-structure caches: a kernel that frees page tables invalidating only the current PCID (inject free-table-without-flush)',
  run: () => freeTableRace(true),
};

/**
 * eager-vs-fork — the eager method writes a new top-level kernel entry into every address space;
 * a space created while that update is in flight (parked after the master changed, before the
 * spaces are written) still gets the entry: a new space copies the master after it became visible
 * to updates.
 */
const eagerVsFork: Scenario = {
  name: 'eager-vs-fork',
  models: "os5's eager method: a fork creates an address space in the middle of an update of every map",
  async run() {
    return RaceApi.session({ cores: 3, nodes: 2, memory: '16MiB', kernel: { khalf: 'eager', maxSpaces: 4 } }, async (r) => {
      const k = r.m.kernel;
      const p = r.space();
      const top = 301;
      const x = khalf.topBase(top);
      const has = (s: number, q: number): boolean => khalf.matchesMaster(k, s, q, top);
      r.m.arm(0, BP_KHALF_PUBLISH);
      const done = r.run({
        0: [{ op: 'switch', space: p }, { op: 'kmap', va: kva(x) }, { op: 'kload', va: kva(x) }],
        1: [{ op: 'switch', space: p }, { op: 'awaitPings', count: 1 }, { op: 'fork' }],
      });
      await r.m.waitParked(0, BP_KHALF_PUBLISH);
      r.step('core 0 kmapped under a new top-level entry: every master has it, and core 0 is parked before writing the spaces');
      r.expect(!has(p, 0) && !has(p, 1), 'P does not have the entry yet');
      const driver = r.m.attachHere(2); // the script's core: it tells core 1 to fork now
      try {
        while (driver.apic.sendIpi(1, IPI_PING) !== IPI_OK) driver.apic.poll();
        driver.apic.waitAcks();
      } finally {
        driver.detach();
      }
      await r.until(() => procs.liveSpaces(k).length === 2, 'core 1 to fork P');
      const child = procs.liveSpaces(k).find((s) => s !== p) as number;
      r.step(`core 1 forked P into space ${child} while the update is parked`);
      r.expect(has(child, 0) && has(child, 1), 'the new space has the entry in every replica: it copied the master after becoming visible');
      r.m.disarm(0, BP_KHALF_PUBLISH);
      r.m.resume(0);
      const res = await done;
      r.expect(res.every((c) => c.ok), 'every core finished');
      r.expect(has(p, 0) && has(p, 1), 'and the update reached P');
      r.expect(res[0].outcomes['kaccess:Ok'] === 1, "core 0's kernel load after the update succeeded");
    });
  },
};

/**
 * Hands the freed frame `table` out again (the allocator's frames before it are taken and given
 * back) as an ordinary user page of space q at va, mapped through core c's replica.
 */
function reuseAsUserPage(r: RaceApi, table: number, q: number, va: number, c: number): void {
  const taken: number[] = [];
  for (let g = r.m.frames.alloc(0); g >= 0 && g !== table; g = r.m.frames.alloc(0)) taken.push(g);
  for (const g of taken) r.m.frames.free(g);
  r.expect(r.m.frames.isAllocated(table), 'the freed table frame is handed out again');
  refs.holdNew(r.m.kernel, table, q);
  r.expect(vm.map(r.m.kernel, c, q, vaHi(va), vaLo(va), table * 4096, 4096, R_USER | R_WRITE).code === OK, 'and Q maps it as a user page');
}

/** A kernel address (a negative number: the sign-extended form) as the unsigned 64-bit value programs take. */
function kva(x: number): bigint {
  return BigInt.asUintN(64, BigInt(x));
}

/** Frames some mapping references (data frames). */
function dataFrames(r: RaceApi): number {
  let n = 0;
  for (let f = 0; f < r.m.layout.totalFrames; f++) if (refs.refcount(r.m.kernel, f) > 0) n++;
  return n;
}

/** The scenarios of this file, in the order `nrvm race --list` shows them. */
export const SEED_RACES: Scenario[] = [dmaVsUnmap, userCowRace, lazyKernelRemoval, freeTableWithoutFlush, eagerVsFork];
