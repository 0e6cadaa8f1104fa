// Race-reproduction scenarios: deterministic interleavings of real worker cores, driven by IPI
// handshakes inside the programs and by named breakpoints the script arms, waits on and resumes.
// No sleeps: a script waits for a core to park (Atomics.waitAsync) or for the run to end.
//
// The script API (RaceApi, raceapi.ts) is small: boot, a space with a process, run programs on
// cores, arm a breakpoint, wait until a core is parked there, look at the machine, resume, expect.
// This file holds the scenarios of NR, shootdowns, copy-on-write and exits, the list of all of
// them (the seeds' later mechanisms, MH and the kernel half, are races-seeds.ts) and the loader of
// a user's script: a TypeScript module (loaded with tsx) whose default export receives
// { RaceApi, BREAKPOINTS } and returns api.outcome(); see test/fixtures/race-script.ts.

import type { CoreResult } from '../machine/executor.js';
import type { Op } from '../machine/program.js';
import { BP_BEFORE_EXIT_LEAVE, BP_BEFORE_RECEIVER_SYNC, BP_BEFORE_RESOLVE, BP_BEFORE_SHOOTDOWN_IPIS, BREAKPOINTS } from '../kernel/context.js';
import { PROC_TERMINATED } from '../kernel/layout.js';
import { tsImport } from 'tsx/esm/api';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { R_USER, R_WRITE } from '../kernel/ops.js';
import { findEntry } from '../hw/pagetable.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';

import { RaceApi, type RaceOutcome, type Scenario } from './raceapi.js';
import { SEED_RACES } from './races-seeds.js';
import { SHARE_RACES } from './races-share.js';

export { RaceApi, type RaceOutcome, type Scenario };

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

export const SCENARIOS_RACE: Scenario[] = [staleReplicaFault, missingShootdown, receiverWithoutSync, concurrentShootdowns, cowWriteRace, dirtyBitRace, exitWhileRunning, ...SEED_RACES, ...SHARE_RACES];

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
