// Race scenarios of address-space sharing (issue 12): RPAL's union shootdown, a call whose callee's
// process exits, another core trying to run a caller blocked in a call, and mshare's fault rerouted
// to the host. Deterministic as those of races.ts: handshakes and breakpoints.

import type { CoreResult } from '../machine/executor.js';
import { BP_RPAL_CALL_SAVED, BP_RPAL_RETURN_SAVED } from '../kernel/context.js';
import { OK, R_USER, R_WRITE } from '../kernel/ops.js';
import * as rpal from '../kernel/rpal.js';
import * as ms from '../kernel/mshare.js';
import { IPI_OK, IPI_PING } from '../hw/apic.js';
import * as procs from '../kernel/proc.js';
import * as threads from '../kernel/thread.js';
import { THREAD_BLOCKED, THREAD_EXITED, THREAD_RUNNING } from '../kernel/layout.js';
import * as vm from '../kernel/vm.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import { RaceApi, type RaceOutcome, type Scenario } from './raceapi.js';

/**
 * union-shootdown — RPAL (behaviour 29): process B's slot is shared into A. Core 1, running A,
 * reads B's page, so its TLB caches it under A's PCID; core 0, running B, unmaps the page. The
 * shootdown reaches the cores of every space sharing B's slot: core 1's next read of the page
 * faults. With --inject owner-only-shootdown only B's cores are reached, and core 1 reads the
 * freed frame through its stale translation: the stale-tlb oracle reports it.
 */
export function unionShootdownRace(inject: boolean): Promise<RaceOutcome> {
  return RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB', inject: inject ? ['owner-only-shootdown'] : [] }, async (r) => {
    const k = r.m.kernel;
    const a = r.space();
    const b = r.space();
    r.expect(rpal.enterSlot(k, a, 1) === OK && rpal.enterSlot(k, b, 2) === OK, 'A takes slot 1, B slot 2');
    r.expect(rpal.share(k, a, b) === OK, "B's slot is shared into A");
    const X = 2 * rpal.SLOT_BYTES + 0x40_0000;
    r.mapPage(0, b, X);
    const done = r.run({
      1: [{ op: 'switch', space: a }, { op: 'load', va: X }, { op: 'ping', target: 0 }, { op: 'awaitPings', count: 1 }, { op: 'load', va: X }],
      0: [{ op: 'switch', space: b }, { op: 'awaitPings', count: 1 }, { op: 'unmap', space: b, va: X }, { op: 'ping', target: 1 }],
    });
    r.step("core 1 (running A) reads B's page through the shared slot and tells core 0; core 0 (running B) unmaps it");
    const res = await done;
    r.expect(res.every((x) => x.ok), 'both cores finished');
    const c1 = res.find((x) => x.core === 1) as CoreResult;
    if (inject) {
      r.expect(c1.staleAccesses >= 1, `core 1 read the freed frame through its stale translation: the stale-tlb oracle reports it (${c1.staleAccesses})`);
    } else {
      r.expect(c1.faults === 1 && c1.staleAccesses === 0, `core 1's second read faulted: the shootdown reached A's cores too (faults ${c1.faults}, stale ${c1.staleAccesses})`);
    }
  });
}

const unionShootdown: Scenario = {
  name: 'union-shootdown',
  models: "RPAL: an unmap in a shared slot shoots down the cores of every sharer (inject owner-only-shootdown: the owner's only)",
  run: () => unionShootdownRace(false),
};

/**
 * mshare-fault-reroute — an mshare region (a host address space of its own) attached by A and B:
 * core 0, running A, writes a demand-zero page of the region; the fault is handled in the host's
 * space, so core 1, running B, reads the value; then core 0 unmaps the page from the host, and
 * the shootdown reaches every attached process's cores: core 1's next read faults.
 */
export function mshareRerouteRace(): Promise<RaceOutcome> {
  return RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB' }, async (r) => {
    const k = r.m.kernel;
    const a = r.space();
    const b = r.space();
    const h = ms.mshareCreate(k, 5);
    r.expect(h >= 0, 'a region over slot 5, hosted by an address space of its own');
    const base = 5 * rpal.SLOT_BYTES;
    const Z = base + 0x40_0000;
    r.expect(vm.mapZero(k, 0, h, vaHi(Z), vaLo(Z), R_USER | R_WRITE).code === OK, 'the host maps a demand-zero page');
    r.expect(ms.mshareAttach(k, a, h, base) === OK && ms.mshareAttach(k, b, h, base) === OK, 'A and B attach the region');
    const done = r.run({
      0: [{ op: 'switch', space: a }, { op: 'store', va: Z, value: 0x77n }, { op: 'ping', target: 1 }, { op: 'awaitPings', count: 1 }, { op: 'unmap', space: h, va: Z }, { op: 'ping', target: 1 }],
      1: [{ op: 'switch', space: b }, { op: 'awaitPings', count: 1 }, { op: 'load', va: Z }, { op: 'ping', target: 0 }, { op: 'awaitPings', count: 2 }, { op: 'load', va: Z }],
    }, { record: true });
    r.step('core 0 (A) writes the page; core 1 (B) reads it; core 0 unmaps it from the host; core 1 reads again');
    const res = await done;
    r.expect(res.every((x) => x.ok), 'both cores finished');
    const c1 = res.find((x) => x.core === 1) as CoreResult;
    r.expect(c1.values?.[0] === '0x77', `B read A's write (${c1.values?.[0]}): the fault was filled in the host's space, which both see`);
    r.expect(c1.faults === 1 && c1.staleAccesses === 0, `B's read after the unmap faulted: the host's shootdown reached B's core (faults ${c1.faults}, stale ${c1.staleAccesses})`);
    r.expect(vm.resolve(k, 0, h, vaHi(Z), vaLo(Z)).code !== OK, 'the host maps the page no more');
    r.expect(vm.entries(k, 0, a).length === 0 && vm.entries(k, 0, b).length === 0, 'A and B never mapped it themselves');
  });
}

const mshareReroute: Scenario = {
  name: 'mshare-fault-reroute',
  models: "mshare: a fault in a region is handled in its host's address space; the host's changes shoot down every attached process",
  run: () => mshareRerouteRace(),
};

/**
 * callee-exits — behaviour 30: core 0 runs a thread of A, which calls a thread of B (whose slot A
 * shares; keys: A 1, B 2, each thread's PKRU denying the other's); the callee reads its own page
 * through A's tables; then B exits on core 1, which takes B's slot out of A (a shootdown of A's
 * cores). The callee's next read faults, and instead of faulting forever the call ends at the
 * caller's recovery point: the caller's thread runs again, with its own PKRU, and reads A's page.
 */
export function calleeExitsRace(): Promise<RaceOutcome> {
  return RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB' }, async (r) => {
    const k = r.m.kernel;
    const a = r.space();
    const b = r.space();
    r.expect(rpal.enterSlot(k, a, 1) === OK && rpal.enterSlot(k, b, 2) === OK, 'A takes slot 1, B slot 2');
    r.expect(rpal.pkeyAlloc(k, a, 1) === 1 && rpal.setSlotKey(k, a, 1) === OK && rpal.pkeyAlloc(k, b, 2) === 2 && rpal.setSlotKey(k, b, 2) === OK, "A's pages carry key 1, B's key 2");
    r.expect(rpal.share(k, a, b) === OK, "B's slot is shared into A");
    const X = 2 * rpal.SLOT_BYTES + 0x40_0000;
    const Y = 1 * rpal.SLOT_BYTES + 0x40_0000;
    r.mapPage(0, b, X);
    r.m.mem[k.anonFrame * 1024] = 0xb;
    r.mapPage(0, a, Y);
    r.m.mem[k.anonFrame * 1024] = 0xa;
    const ta = threads.spawnThread(k, procs.pidOf(k, a), undefined, 0b11 << 4); // denies key 2
    const tb = threads.spawnThread(k, procs.pidOf(k, b), undefined, 0b11 << 2); // denies key 1
    r.expect(ta >= 0 && tb >= 0, "a thread of A and one of B");
    const done = r.run({
      0: [{ op: 'thread', tid: ta }, { op: 'rpalCall', tid: tb }, { op: 'load', va: X }, { op: 'ping', target: 1 }, { op: 'awaitPings', count: 1 }, { op: 'load', va: X }, { op: 'load', va: Y }],
      1: [{ op: 'switch', space: b }, { op: 'awaitPings', count: 1 }, { op: 'exit' }, { op: 'ping', target: 0 }],
    }, { record: true });
    r.step("core 0: A's thread calls B's; the callee reads its page X; core 1 (running B) exits B; the callee reads X again, then the code after the call reads A's page Y");
    const res = await done;
    r.expect(res.every((x) => x.ok), 'both cores finished');
    const c0 = res.find((x) => x.core === 0) as CoreResult;
    r.expect(c0.outcomes['rpalCall:Ok'] === 1 && c0.values?.[0] === '0xb', `the callee read its page through A's tables (${c0.values?.[0]})`);
    r.expect(c0.values?.[1] === 'fault' && c0.outcomes['rpal:Recovered'] === 1, `its read after B's exit faulted once and the call ended at the recovery point (${c0.values?.[1]}, ${JSON.stringify(c0.outcomes)})`);
    r.expect(c0.values?.[2] === '0xa', `the caller ran again with its own PKRU: A's page (key 1) read ${c0.values?.[2]}`);
    r.expect(threads.threadOf(k, tb).state === THREAD_EXITED && threads.threadOf(k, ta).state !== THREAD_BLOCKED, "B's thread exited, A's is no longer blocked");
    r.expect(rpal.ownerIn(k, a, X) === -1, "B's slot is no longer in A");
  });
}

/**
 * The thread races' set-up: A in slot 1, B in slot 2, B's slot shared into A; two threads of A
 * and one of B.
 */
function callers(r: RaceApi): { a: number; x: number; w: number; y: number } {
  const k = r.m.kernel;
  const a = r.space();
  const b = r.space();
  r.expect(rpal.enterSlot(k, a, 1) === OK && rpal.enterSlot(k, b, 2) === OK && rpal.share(k, a, b) === OK, "A and B in slots, B's shared into A");
  const [x, w] = [threads.spawnThread(k, procs.pidOf(k, a)), threads.spawnThread(k, procs.pidOf(k, a))];
  const y = threads.spawnThread(k, procs.pidOf(k, b));
  r.expect(x >= 0 && w >= 0 && y >= 0, 'threads x and w of A, y of B');
  return { a, x, w, y };
}

/** Runs `steps` with the script's own core (core 2) attached, `ping()` telling core 1 to go on. */
async function withDriver(r: RaceApi, steps: (ping: () => void) => Promise<void>): Promise<void> {
  const driver = r.m.attachHere(2);
  const ping = (): void => {
    while (driver.apic.sendIpi(1, IPI_PING) !== IPI_OK) driver.apic.poll();
    driver.apic.waitAcks();
  };
  try {
    await steps(ping);
  } finally {
    driver.detach();
  }
}

/**
 * call-vs-switch — an RPAL call blocks its caller: core 0's thread of A calls B's thread and is
 * parked right after saving the caller; core 1 then tries to run the caller, which must be
 * refused (blocked, not runnable: the call takes it from running to blocked in one step), and
 * runs another thread of A instead; core 0's call and return then complete.
 */
export function callVsSwitchRace(): Promise<RaceOutcome> {
  return RaceApi.session({ cores: 3, nodes: 1, memory: '16MiB' }, async (r) => {
    const k = r.m.kernel;
    const { a, x, w, y } = callers(r);
    r.m.arm(0, BP_RPAL_CALL_SAVED);
    const done = r.run({
      0: [{ op: 'thread', tid: x }, { op: 'rpalCall', tid: y }, { op: 'rpalReturn' }],
      1: [{ op: 'switch', space: a }, { op: 'awaitPings', count: 1 }, { op: 'thread', tid: x }, { op: 'thread', tid: w }, { op: 'awaitPings', count: 2 }],
    });
    await r.m.waitParked(0, BP_RPAL_CALL_SAVED);
    r.step("core 0 (A's thread x) called B's thread y and is parked after saving x");
    await withDriver(r, async (ping) => {
      ping();
      await r.until(() => threads.threadOf(k, w).state === THREAD_RUNNING, "core 1 to run A's other thread");
      r.step('core 1 tried to run x, then ran w');
      r.m.disarm(0, BP_RPAL_CALL_SAVED);
      r.m.resume(0);
      ping();
    });
    const res = await done;
    r.expect(res.every((c) => c.ok), 'every core finished');
    const [c0, c1] = [res.find((c) => c.core === 0) as CoreResult, res.find((c) => c.core === 1) as CoreResult];
    r.expect(c1.outcomes['thread:EINVAL'] === 1 && c1.outcomes['thread:Ok'] === 1, `x was refused to core 1 while blocked in the call (${JSON.stringify(c1.outcomes)})`);
    r.expect(c0.outcomes['rpalCall:Ok'] === 1 && c0.outcomes['rpalReturn:Ok'] === 1, `core 0's call and return completed (${JSON.stringify(c0.outcomes)})`);
  });
}

/**
 * return-vs-call — core 0's thread of A returns from a call into B's thread Y and is parked right
 * after Y became runnable again; core 1's other thread of A calls Y at once; core 0 then finishes
 * its return, and core 1 returns too: each return finds its own caller (Y's caller word was
 * cleared before Y became runnable, so the second call's word is not cleared by the first return).
 */
export function returnVsCallRace(): Promise<RaceOutcome> {
  return RaceApi.session({ cores: 3, nodes: 1, memory: '16MiB' }, async (r) => {
    const k = r.m.kernel;
    const { x, w, y } = callers(r);
    r.m.arm(0, BP_RPAL_RETURN_SAVED);
    const done = r.run({
      0: [{ op: 'thread', tid: x }, { op: 'rpalCall', tid: y }, { op: 'rpalReturn' }],
      1: [{ op: 'thread', tid: w }, { op: 'awaitPings', count: 1 }, { op: 'rpalCall', tid: y }, { op: 'awaitPings', count: 2 }, { op: 'rpalReturn' }],
    });
    await r.m.waitParked(0, BP_RPAL_RETURN_SAVED);
    r.step('core 0 (x) called y and is returning: parked with y runnable again, x not resumed yet');
    await withDriver(r, async (ping) => {
      ping();
      await r.until(() => threads.threadOf(k, y).core === 1, 'core 1 (w) to call y');
      r.step('core 1 (w) called y');
      r.m.disarm(0, BP_RPAL_RETURN_SAVED);
      r.m.resume(0);
      await r.until(() => threads.threadOf(k, x).state !== THREAD_BLOCKED, "core 0's return to resume x");
      r.step("core 0's return resumed x; core 1 returns now");
      ping();
    });
    const res = await done;
    r.expect(res.every((c) => c.ok), 'every core finished');
    const [c0, c1] = [res.find((c) => c.core === 0) as CoreResult, res.find((c) => c.core === 1) as CoreResult];
    r.expect(c0.outcomes['rpalReturn:Ok'] === 1, `core 0's return found x (${JSON.stringify(c0.outcomes)})`);
    r.expect(c1.outcomes['rpalCall:Ok'] === 1 && c1.outcomes['rpalReturn:Ok'] === 1, `core 1's return found w (${JSON.stringify(c1.outcomes)})`);
  });
}

const returnVsCall: Scenario = {
  name: 'return-vs-call',
  models: "RPAL threads: a callee called again by another core the moment it is returned from (its caller word must be the new call's)",
  run: () => returnVsCallRace(),
};

const callVsSwitch: Scenario = {
  name: 'call-vs-switch',
  models: 'RPAL threads: another core tries to run a caller blocked in a call (a runnable moment between saving and blocking it would let it)',
  run: () => callVsSwitchRace(),
};

const calleeExits: Scenario = {
  name: 'callee-exits',
  models: "RPAL: the callee's process exits during a call: the caller returns to its recovery point with an error, instead of faulting forever",
  run: () => calleeExitsRace(),
};

export const SHARE_RACES: Scenario[] = [unionShootdown, mshareReroute, calleeExits, callVsSwitch, returnVsCall];
