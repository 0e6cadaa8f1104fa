// Race-reproduction scenarios: deterministic interleavings of real worker cores, driven by IPI
// handshakes inside the programs and by named breakpoints the script arms, waits on and resumes.
// No sleeps: a script waits for a core to park (Atomics.waitAsync) or for the run to end.
//
// The script API (RaceApi) is small: boot, a space with a process, run programs on cores, arm a
// breakpoint, wait until a core is parked there, look at the machine, resume, expect. A user's
// script is a TypeScript module (loaded with tsx) whose default export receives { RaceApi,
// BREAKPOINTS } and returns api.outcome(); see test/fixtures/race-script.ts.

import { Machine } from '../machine/machine.js';
import type { CoreResult } from '../machine/executor.js';
import type { MachineOptions } from '../machine/config.js';
import type { Op, ProgramSpec } from '../machine/program.js';
import { BP_BEFORE_EXIT_LEAVE, BP_BEFORE_USER_MOVE, BP_KHALF_PUBLISH, BP_BEFORE_RECEIVER_SYNC, BP_BEFORE_RESOLVE, BP_BEFORE_SHOOTDOWN_IPIS, BREAKPOINTS } from '../kernel/context.js';
import { PROC_TERMINATED } from '../kernel/layout.js';
import { EINVAL, OK } from '../kernel/ops.js';
import * as khalf from '../kernel/khalf.js';
import { KERNEL_BASE } from '../kernel/khalf.js';
import { tsImport } from 'tsx/esm/api';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { R_USER, R_WRITE } from '../kernel/ops.js';
import { findEntry } from '../hw/pagetable.js';
import { IPI_OK, IPI_PING } from '../hw/apic.js';
import { PTE_P } from '../hw/pte.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';
import * as spaces from '../kernel/space.js';
import * as vm from '../kernel/vm.js';
import { vaHi, vaLo } from '../hw/vaddr.js';

/** What a scenario reports: whether the documented outcome was reproduced, and the steps. */
export interface RaceOutcome {
  ok: boolean;
  steps: string[];
}

/** The script API. */
export class RaceApi {
  readonly steps: string[] = [];
  private failed = '';
  constructor(readonly m: Machine) {}

  /** When set (nrvm race --trace), every run records trace events and close() hands the machine to it first. */
  static onClose: ((m: Machine) => Promise<void>) | undefined;

  static async boot(opts: MachineOptions): Promise<RaceApi> {
    return new RaceApi(await Machine.boot({ ...opts, trace: RaceApi.onClose !== undefined || opts.trace === true }));
  }

  /**
   * Boots a machine, runs `body` against it, and returns the outcome; the machine is closed
   * whatever happens. The usual shape of a scenario.
   */
  static async session(opts: MachineOptions, body: (r: RaceApi) => Promise<void>): Promise<RaceOutcome> {
    const r = await RaceApi.boot(opts);
    try {
      await body(r);
      return r.outcome();
    } finally {
      await r.close();
    }
  }

  /** Lets the onClose hook see the machine (the trace), then stops it. */
  async close(): Promise<void> {
    if (RaceApi.onClose) await RaceApi.onClose(this.m);
    await this.m.shutdown();
  }

  /** A new address space with a process, every core in user mode. Returns the space. */
  space(): number {
    const s = spaces.createSpace(this.m.kernel);
    if (s < 0 || procs.spawn(this.m.kernel, s, -1) < 0) throw new Error('race: no room for a process');
    for (let c = 0; c < this.m.config.cores; c++) this.m.setRegisters(c, { cpl: 3 });
    return s;
  }

  /** Maps one fresh page at va in space s, as core c, recorded as owned by s; returns its frame. */
  mapPage(c: number, s: number, va: number): number {
    if (vm.mapAnon(this.m.kernel, c, s, vaHi(va), vaLo(va), 1, R_USER | R_WRITE) !== OK) throw new Error(`race: cannot map 0x${va.toString(16)}`);
    return this.m.kernel.anonFrame;
  }

  /** Starts programs on cores (all at once); the promise settles when every one has ended. */
  run(programs: Record<number, Op[]>, extra: Partial<ProgramSpec> = {}): Promise<CoreResult[]> {
    return this.m.run(Object.entries(programs).map(([c, ops]) => ({ core: Number(c), program: { kind: 'ops', ops, checkOwner: true, ...extra } })));
  }

  /** Whether replica r of space s maps va (a present leaf). */
  replicaMaps(s: number, r: number, va: number): boolean {
    const w = findEntry(this.m.mem, this.m.kernel.vspace(s).root(r), false, vaHi(va), vaLo(va), 12);
    return w >= 0 && (Atomics.load(this.m.mem, w) & PTE_P) !== 0;
  }

  /** Whether core c's TLB holds a translation of the page at va. */
  tlbHolds(c: number, va: number): boolean {
    return this.m.tlb(c).some((e) => e.va === BigInt(va - (va % 4096)));
  }

  /** Waits (bounded, no timer-driven polling of time) until cond holds: a handshake on shared state. */
  async until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`race: waited ${timeoutMs} ms for ${what}`);
      await new Promise((done) => setImmediate(done));
    }
  }

  step(text: string): void {
    this.steps.push(text);
  }

  /** Records a check; the scenario fails if any check fails. */
  expect(cond: boolean, what: string): void {
    this.steps.push(`${cond ? 'ok  ' : 'FAIL'} ${what}`);
    if (!cond && !this.failed) this.failed = what;
  }

  outcome(): RaceOutcome {
    return { ok: !this.failed, steps: this.steps };
  }
}

export interface Scenario {
  name: string;
  models: string;
  run(): Promise<RaceOutcome>;
}

const X = 0x40_0000;

/**
 * stale-replica-fault — NRK's documented race (seeds/nrk-process-structure.txt): a map done
 * through replica A is not yet in replica B when a core of B accesses the page; the access
 * faults, the handler's Resolve applies the log to B, and the access resumes (a spurious fault).
 */
const staleReplicaFault: Scenario = {
  name: 'stale-replica-fault',
  models: 'NRK: a map on node 0 and an access on node 1 before node 1\'s replica applied it',
  async run() {
    return RaceApi.session({ cores: 2, nodes: 2, memory: '16MiB' }, async (r) => {
      const s = r.space();
      r.m.arm(1, BP_BEFORE_RESOLVE);
      const done = r.run({
        1: [{ op: 'switch', space: s }, { op: 'ping', target: 0 }, { op: 'awaitPings', count: 1 }, { op: 'load', va: X }],
        0: [{ op: 'awaitPings', count: 1 }, { op: 'map', space: s, va: X, pages: 1, rights: R_USER | R_WRITE }, { op: 'ping', target: 1 }],
      });
      r.step('core 1 (node 1) runs the space; core 0 (node 0) maps 0x400000 through replica 0, then tells core 1');
      await r.m.waitParked(1, BP_BEFORE_RESOLVE);
      r.step('core 1 faulted on 0x400000 and is parked before Resolve');
      r.expect(r.replicaMaps(s, 0, X), 'replica 0 maps the page');
      r.expect(!r.replicaMaps(s, 1, X), 'replica 1 does not yet: it has not applied the log');
      r.m.disarm(1, BP_BEFORE_RESOLVE);
      r.m.resume(1);
      const res = await done;
      r.expect(res.every((x) => x.ok), 'both cores finished');
      const c1 = res.find((x) => x.core === 1) as CoreResult;
      r.expect(c1.kernel.spuriousFaults === 1 && c1.faults === 0, `Resolve repaired it: 1 spurious fault, 0 delivered (got ${c1.kernel.spuriousFaults}, ${c1.faults})`);
      r.expect(r.replicaMaps(s, 1, X), 'replica 1 maps the page now');
    });
  },
};

/**
 * missing-shootdown — with the shootdown skipped, a core that cached a translation completes an
 * access through it after the unmap returned and the frame was freed: the stale-tlb oracle
 * reports it. (Any kernel that forgets to invalidate remote TLBs after changing page tables.)
 */
const missingShootdown: Scenario = {
  name: 'missing-shootdown',
  models: 'a kernel that unmaps without invalidating other cores\' TLBs (inject skip-shootdown)',
  async run() {
    return RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB', inject: ['skip-shootdown'] }, async (r) => {
      const s = r.space();
      r.mapPage(0, s, X);
      r.m.arm(0, BP_BEFORE_SHOOTDOWN_IPIS);
      const done = r.run({
        1: [{ op: 'switch', space: s }, { op: 'load', va: X }, { op: 'ping', target: 0 }, { op: 'awaitPings', count: 1 }, { op: 'load', va: X }],
        0: [{ op: 'switch', space: s }, { op: 'awaitPings', count: 1 }, { op: 'unmap', space: s, va: X }, { op: 'ping', target: 1 }],
      });
      r.step('core 1 loads 0x400000 (its TLB caches it) and tells core 0; core 0 unmaps it');
      await r.m.waitParked(0, BP_BEFORE_SHOOTDOWN_IPIS);
      r.step('core 0 applied the unmap and is parked where it would send the shootdown IPIs');
      r.expect(!r.replicaMaps(s, 0, X), 'the page tables no longer map the page');
      r.expect(r.tlbHolds(1, X), 'core 1\'s TLB still holds the translation');
      r.m.disarm(0, BP_BEFORE_SHOOTDOWN_IPIS);
      r.m.resume(0);
      const res = await done;
      r.expect(res.every((x) => x.ok), 'both cores finished');
      const c1 = res.find((x) => x.core === 1) as CoreResult;
      r.expect(c1.staleAccesses >= 1, `the oracle reports core 1's access through the stale translation (${c1.staleAccesses})`);
    });
  },
};

/**
 * receiver-without-sync — the gap between NRK's documentation and its code: a shootdown receiver
 * that invalidates without syncing its replica first refills its TLB from a replica that still
 * maps the freed frame, and reaches it (inject skip-replica-sync).
 */
const receiverWithoutSync: Scenario = {
  name: 'receiver-without-sync',
  models: 'NRK\'s code: the shootdown receiver invalidates without advancing its replica (inject skip-replica-sync)',
  async run() {
    return RaceApi.session({ cores: 2, nodes: 2, memory: '16MiB', inject: ['skip-replica-sync'] }, async (r) => {
      const s = r.space();
      r.mapPage(0, s, X);
      r.m.arm(1, BP_BEFORE_RECEIVER_SYNC);
      const done = r.run({
        1: [{ op: 'switch', space: s }, { op: 'load', va: X }, { op: 'ping', target: 0 }, { op: 'awaitPings', count: 1 }, { op: 'load', va: X }],
        0: [{ op: 'switch', space: s }, { op: 'awaitPings', count: 1 }, { op: 'unmap', space: s, va: X }, { op: 'ping', target: 1 }],
      });
      r.step('core 1 (node 1) caches 0x400000; core 0 (node 0) unmaps it and shoots core 1 down');
      await r.m.waitParked(1, BP_BEFORE_RECEIVER_SYNC);
      r.step('core 1 acknowledged the shootdown and is parked where it should sync its replica');
      r.expect(!r.replicaMaps(s, 0, X), 'replica 0 applied the unmap');
      r.expect(r.replicaMaps(s, 1, X), 'replica 1 still maps the page');
      r.m.disarm(1, BP_BEFORE_RECEIVER_SYNC);
      r.m.resume(1);
      const res = await done;
      r.expect(res.every((x) => x.ok), 'both cores finished');
      const c1 = res.find((x) => x.core === 1) as CoreResult;
      r.expect(c1.staleAccesses >= 1, `core 1 refilled its TLB from replica 1 and reached the freed frame (${c1.staleAccesses} stale access)`);
    });
  },
};

/**
 * concurrent-shootdowns — two cores unmap at the same moment and shoot each other down; each
 * services the other's request while it waits for its own ack, so neither deadlocks.
 */
const concurrentShootdowns: Scenario = {
  name: 'concurrent-shootdowns',
  models: 'two initiators shooting each other down (NRK: the initiator drains its own queue while it waits)',
  async run() {
    return RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB' }, async (r) => {
      const s = r.space();
      const A = X;
      const B = X + 0x1000;
      r.mapPage(0, s, A);
      r.mapPage(0, s, B);
      r.m.arm(0, BP_BEFORE_SHOOTDOWN_IPIS);
      r.m.arm(1, BP_BEFORE_SHOOTDOWN_IPIS);
      const prologue: Op[] = [{ op: 'switch', space: s }, { op: 'load', va: A }, { op: 'load', va: B }];
      const done = r.run({
        0: [...prologue, { op: 'ping', target: 1 }, { op: 'awaitPings', count: 1 }, { op: 'unmap', space: s, va: A }],
        1: [...prologue, { op: 'ping', target: 0 }, { op: 'awaitPings', count: 1 }, { op: 'unmap', space: s, va: B }],
      });
      await r.m.waitParked(0, BP_BEFORE_SHOOTDOWN_IPIS);
      await r.m.waitParked(1, BP_BEFORE_SHOOTDOWN_IPIS);
      r.step('both cores applied their unmap and are parked before sending their shootdowns');
      r.expect(!r.replicaMaps(s, 0, A) && !r.replicaMaps(s, 0, B), 'both pages are unmapped');
      r.m.disarm(0, BP_BEFORE_SHOOTDOWN_IPIS);
      r.m.disarm(1, BP_BEFORE_SHOOTDOWN_IPIS);
      r.m.resume(0);
      r.m.resume(1);
      r.step('both resumed at once: each sends to the other and waits for its ack');
      const res = await done;
      r.expect(res.every((x) => x.ok), 'both cores finished: no deadlock');
      r.expect(res.every((x) => x.kernel.shootdownsReceived === 1), 'each received and served the other\'s shootdown');
      r.expect(!r.tlbHolds(0, B) && !r.tlbHolds(1, A), 'neither TLB holds the other\'s page');
    });
  },
};

/**
 * cow-write-race — two processes write the same copy-on-write page at once. The first to reach
 * the frame's reference count copies; the second finds itself the last sharer and reuses the
 * frame: one copy, one reuse, and both writes survive, each in its own process.
 */
const cowWriteRace: Scenario = {
  name: 'cow-write-race',
  models: 'fork, then parent and child write the same page at once (copy-on-write, refcounts shared by processes)',
  async run() {
    return RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB', kernel: { maxSpaces: 4 } }, async (r) => {
      const p = r.space();
      const f = r.mapPage(0, p, X);
      r.m.mem[f * 1024] = 7;
      const forked = await r.run({ 0: [{ op: 'switch', space: p }, { op: 'fork' }] });
      r.expect(forked[0].ok && forked[0].outcomes['fork:Ok'] === 1, 'core 0 forked the process');
      const c = procs.liveSpaces(r.m.kernel).find((x) => x !== p) as number;
      r.expect(c !== undefined && refs.refcount(r.m.kernel, f) === 2, `forked: space ${c} shares frame ${f} (2 references)`);
      r.m.arm(0, BP_BEFORE_RESOLVE);
      r.m.arm(1, BP_BEFORE_RESOLVE);
      const done = r.run({
        0: [{ op: 'switch', space: p }, { op: 'store', va: X, value: 100n }, { op: 'load', va: X }],
        1: [{ op: 'switch', space: c }, { op: 'store', va: X, value: 200n }, { op: 'load', va: X }],
      }, { record: true });
      await r.m.waitParked(0, BP_BEFORE_RESOLVE);
      await r.m.waitParked(1, BP_BEFORE_RESOLVE);
      r.step('parent (core 0) and child (core 1) both took their copy-on-write fault on the shared page and are parked');
      r.m.disarm(1, BP_BEFORE_RESOLVE);
      r.m.resume(1);
      await r.until(() => refs.refcount(r.m.kernel, f) === 1, 'the child to copy and drop its reference');
      r.step('the child went first: it copied the page and dropped its reference');
      r.m.disarm(0, BP_BEFORE_RESOLVE);
      r.m.resume(0);
      r.step('then the parent: the last sharer');
      const res = await done;
      r.expect(res.every((x) => x.ok), 'both cores finished');
      const k = res.reduce((a, x) => ({ copies: a.copies + (x.kernel.cowCopies ?? 0), reuses: a.reuses + (x.kernel.cowReuses ?? 0) }), { copies: 0, reuses: 0 });
      r.expect(k.copies === 1 && k.reuses === 1, `one copy, one reuse (got ${k.copies}, ${k.reuses})`);
      const v0 = res.find((x) => x.core === 0)?.values?.at(-1);
      const v1 = res.find((x) => x.core === 1)?.values?.at(-1);
      r.expect(v0 === '0x64' && v1 === '0xc8', `no lost write: the parent reads 0x64, the child 0xc8 (got ${v0}, ${v1})`);
      r.expect(refs.refcount(r.m.kernel, f) === 1, 'the original frame has one reference left (the parent\'s)');
    });
  },
};

/**
 * dirty-bit-race — one core writes a clean page while another removes its write right. The
 * writer's TLB caches a clean page without write permission, so its write walks again, sees
 * the entry already read-only and faults: D stays clear (SDM 4.8: D is set only by a write the
 * translation allows), even though the shootdown has not reached the writer yet.
 */
const dirtyBitRace: Scenario = {
  name: 'dirty-bit-race',
  models: 'a write to a clean page racing a permission decrease (SDM 4.8 and 4.10.4.3)',
  async run() {
    return RaceApi.session({ cores: 3, nodes: 1, memory: '16MiB' }, async (r) => {
      const s = r.space();
      r.mapPage(0, s, X);
      const driver = r.m.attachHere(2); // the script's own core, to send handshake IPIs
      try {
        r.m.arm(1, BP_BEFORE_SHOOTDOWN_IPIS);
        const done = r.run({
          0: [{ op: 'switch', space: s }, { op: 'load', va: X }, { op: 'ping', target: 1 }, { op: 'awaitPings', count: 1 }, { op: 'store', va: X, value: 5n }],
          1: [{ op: 'switch', space: s }, { op: 'awaitPings', count: 1 }, { op: 'adjust', space: s, va: X, rights: R_USER }],
        });
        await r.m.waitParked(1, BP_BEFORE_SHOOTDOWN_IPIS);
        const word = findEntry(r.m.mem, r.m.kernel.vspace(s).root(0), false, 0, X, 12);
        r.step('core 0 read the page (its TLB caches it clean); core 1 made it read-only and is parked before its shootdown');
        r.expect((r.m.mem[word] & 2) === 0, 'the entry is read-only already');
        r.expect(r.tlbHolds(0, X), 'core 0 still caches the translation (no shootdown yet)');
        while (driver.apic.sendIpi(0, 1) !== 0);
        driver.apic.waitAcks();
        r.m.disarm(1, BP_BEFORE_SHOOTDOWN_IPIS);
        r.m.resume(1);
        const res = await done;
        r.expect(res.every((x) => x.ok), 'both cores finished');
        const c0 = res.find((x) => x.core === 0) as CoreResult;
        r.expect(c0.faults === 1 && c0.faultLog[0]?.error === 7, `core 0's write walked again and faulted: #PF P|W|U (${JSON.stringify(c0.faultLog[0])})`);
        r.expect((r.m.mem[word] & 64) === 0, 'D stayed clear');
      } finally {
        driver.detach();
      }
    });
  },
};

/**
 * exit-while-running — a process exits on one core while another core still runs its address
 * space with a translation cached. The exit tells every core running the space to leave it and
 * waits for them; until the last has left, the zombie is not reaped (its frames stay), and once
 * it has, the other core's next access faults instead of reaching a freed frame (Linux's
 * exit_mmap after the mm's last user; issue 16's "space -1" stale accesses).
 */
const exitWhileRunning: Scenario = {
  name: 'exit-while-running',
  models: 'a process exits on core 0 while core 1 runs its space; reaping waits for core 1 to leave',
  async run() {
    return RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB' }, async (r) => {
      const s = r.space();
      const other = r.space();
      const k = r.m.kernel;
      const frame = r.mapPage(0, s, X);
      r.m.arm(1, BP_BEFORE_EXIT_LEAVE);
      const done = r.run({
        1: [{ op: 'switch', space: s }, { op: 'load', va: X }, { op: 'ping', target: 0 }, { op: 'awaitPings', count: 1 }, { op: 'load', va: X }],
        0: [{ op: 'switch', space: s }, { op: 'awaitPings', count: 1 }, { op: 'exit' }, { op: 'ping', target: 1 }],
      });
      r.step('core 1 runs the space and loads 0x400000 (its TLB caches it); core 0 runs it too and exits its process');
      await r.m.waitParked(1, BP_BEFORE_EXIT_LEAVE);
      r.step("core 1 got the exit's IPI and is parked before it leaves the space; core 0 waits for its ack");
      r.expect(procs.processOf(k, procs.pidOf(k, s)).state === PROC_TERMINATED, 'the process is a zombie');
      r.expect(r.tlbHolds(1, X), "core 1's TLB still holds the translation");
      r.expect(procs.reapZombies(k) === 0 && k.isLive(s), 'reaping now leaves the space alone: core 1 still runs it');
      r.expect(refs.refcount(k, frame) === 1, 'its frame is still held');
      r.m.disarm(1, BP_BEFORE_EXIT_LEAVE);
      r.m.resume(1);
      const res = await done;
      r.expect(res.every((x) => x.ok), 'both cores finished');
      const c0 = res.find((x) => x.core === 0) as CoreResult;
      const c1 = res.find((x) => x.core === 1) as CoreResult;
      r.expect(c0.outcomes['exit:Ok'] === 1, 'core 0 exited the process and switched to the other one');
      r.expect(c1.faults === 1 && c1.staleAccesses === 0, `core 1's load after the exit faulted, with no user space (faults ${c1.faults}, stale ${c1.staleAccesses})`);
      r.expect(procs.reapZombies(k) === 1 && !k.isLive(s) && k.isLive(other), 'then the zombie is reaped: its space is gone, the other stays');
      r.expect(refs.refcount(k, frame) === 0, 'and its frame is free');
    });
  },
};

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
      const x = KERNEL_BASE + (top - 256) * 2 ** 39;
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
      const taken: number[] = [];
      for (let g = r.m.frames.alloc(0); g >= 0 && g !== table; g = r.m.frames.alloc(0)) taken.push(g);
      for (const g of taken) r.m.frames.free(g);
      r.expect(r.m.frames.isAllocated(table), 'the freed table frame is handed out again');
      refs.holdNew(k, table, q);
      const QVA = 0x50_0000;
      r.expect(vm.map(k, 0, q, vaHi(QVA), vaLo(QVA), table * 4096, 4096, R_USER | R_WRITE).code === OK, "and Q maps it as a user page");
      const victim = r.mapPage(0, q, QVA + 0x10_0000);
      const done = await r.run({ 0: [
        { op: 'switch', space: q }, { op: 'store', va: QVA, value: 0x83n }, { op: 'store', va: QVA + 0x10_0000, value: 0x5ec2e7n },
        { op: 'switch', space: p }, { op: 'kload', va: kva(x + victim * 4096) },
      ] }, { record: true });
      r.step("Q wrote into its page; P loads from the kernel address the removed entry covered");
      const c0 = done[0];
      r.expect(c0.ok && c0.values?.at(-1) === '0x5ec2e7', `P's kernel load read Q's data (${c0.values?.at(-1)}): it walked through Q's page as a kernel table`);
      r.expect(c0.staleAccesses >= 1, `the stale-tlb oracle reports the access (frame ${c0.staleExamples[0]?.pfn} is not P's)`);
      r.expect(!khalf.sameEntry(r.m.mem, rootP * 1024 + top * 2, khalf.masterRoot(k, 0) * 1024 + top * 2), "P's entry differs from the master's: the kernel-half oracle's finding");
    });
  },
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
      const x = KERNEL_BASE + (top - 256) * 2 ** 39;
      const has = (s: number, q: number): boolean => khalf.sameEntry(r.m.mem, k.vspace(s).root(q) * 1024 + top * 2, khalf.masterRoot(k, q) * 1024 + top * 2);
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

export const SCENARIOS_RACE: Scenario[] = [staleReplicaFault, missingShootdown, receiverWithoutSync, concurrentShootdowns, cowWriteRace, dirtyBitRace, exitWhileRunning, dmaVsUnmap, userCowRace, lazyKernelRemoval, eagerVsFork];

export function findRace(name: string): Scenario | undefined {
  return SCENARIOS_RACE.find((s) => s.name === name);
}

/** What a race script receives: the script API and the breakpoint names. */
export interface RaceKit {
  RaceApi: typeof RaceApi;
  BREAKPOINTS: Record<string, number>;
}

/** A race script file that cannot be used; the message names the problem. */
export class RaceScriptError extends Error {}

/**
 * Loads a race script: a TypeScript (through tsx) or JavaScript module whose default export is
 * `async (nrvm: RaceKit) => RaceOutcome`, with optional `name` and `models` exports.
 */
export async function loadRaceScript(file: string): Promise<Scenario> {
  const abs = resolve(file);
  if (!existsSync(abs)) throw new RaceScriptError(`race script ${file} does not exist`);
  const url = pathToFileURL(abs).href;
  let ns: Record<string, unknown>;
  try {
    ns = /\.(c|m)?ts$/.test(abs) ? await tsImport(url, import.meta.url) : await import(url);
  } catch (e) {
    // esbuild puts the file, line and column on the lines after the first: keep them.
    const lines = (e as Error).message.split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 3);
    throw new RaceScriptError(`race script ${file} does not load: ${lines.join(' ')}`);
  }
  // Outside a "type": "module" package tsx compiles a .ts script as CommonJS, and the module's
  // exports arrive as the namespace's default: look there too.
  const cjs = ns.default !== null && typeof ns.default === 'object' ? (ns.default as Record<string, unknown>) : undefined;
  const mod = typeof ns.default === 'function' ? ns : cjs ?? ns;
  const run = mod.default;
  if (typeof run !== 'function') throw new RaceScriptError(`race script ${file} must export a default async function (nrvm) => outcome`);
  return {
    name: typeof mod.name === 'string' ? mod.name : file,
    models: typeof mod.models === 'string' ? mod.models : '(a user script)',
    async run() {
      let o: RaceOutcome | undefined;
      try {
        o = (await run({ RaceApi, BREAKPOINTS })) as RaceOutcome | undefined;
      } catch (e) {
        // The user's error, shown as theirs: its message and the first place in their file.
        const err = e as Error;
        // A frame in their file, when the stack has one (tsx's CommonJS wrapper has none).
        const esc = (x: string): string => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        const frame = new RegExp(`(?:${esc(url)}|${esc(abs)}):(\\d+):(\\d+)`);
        const at = (err.stack ?? '').split('\n').map((l) => frame.exec(l)).find((m) => m !== null);
        const where = at ? ` (at ${abs}:${at[1]}:${at[2]})` : '';
        throw new RaceScriptError(`race script ${file} failed: ${err.message}${where}`);
      }
      if (!o || typeof o.ok !== 'boolean' || !Array.isArray(o.steps)) throw new RaceScriptError(`race script ${file} must return api.outcome()`);
      return o;
    },
  };
}
