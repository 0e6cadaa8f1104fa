// The stress run's address-space sharing (issue 12; cli/vmstress.ts --share, machine/shareops.ts):
// short seeded runs of RPAL (threads, shares, key changes, calls, grants) and mshare (attach,
// detach, region changes, both flush policies) clean, each RPAL injection caught by the oracle
// that exists for it, and mshare's lifetime oracle failing on a host that went too early.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Machine } from '../src/machine/machine.js';
import { DEFAULT_MSHARE_MIX, DEFAULT_RPAL_MIX, runVmStress } from '../src/cli/vmstress.js';
import type { VmMix } from '../src/workloads/sources.js';
import { detachAllAndCheck } from '../src/check/share.js';
import { S_MSHARE_HOST } from '../src/kernel/layout.js';
import { OK } from '../src/kernel/ops.js';
import * as ms from '../src/kernel/mshare.js';
import { SLOT_BYTES } from '../src/kernel/slots.js';
import * as spaces from '../src/kernel/space.js';

const S = suite('share-stress');

const run = (share: 'rpal' | 'mshare', inject: string[], seconds: number, mix: VmMix, extra: { mshareFlush?: 'attached' | 'all' } = {}) => runVmStress({
  machine: { cores: 2, nodes: 2, memory: '32MiB', inject, kernel: { mshareFlush: extra.mshareFlush ?? 'attached' } },
  seconds, seed: 21, processes: 3, opsPerRound: 20_000, slots: 16, mix, share, threads: 3,
}, 'test');

const kinds = (r: Awaited<ReturnType<typeof run>>): string[] => r.violations.map((v) => `${v.kind}: ${v.detail}`);

S('--share rpal runs clean: thread switches, shares and unshares, key changes, calls with their lazy switch, grants', async () => {
  const r = await run('rpal', [], 2, DEFAULT_RPAL_MIX);
  assert.equal(kinds(r), []);
  const sh = r.share!;
  for (const k of ['switches', 'shares', 'unshares', 'pkeys', 'calls', 'lazySwitches', 'grants', 'ownLoads', 'deniedLoads'] as const) assert.ok(sh[k] > 0, `${k}: ${JSON.stringify(sh)}`);
  assert.is(sh.otherLoads, 0, "no load in another process's slot succeeded");
  assert.ok(sh.strayWrites > 0 && sh.strayWritesDone === 0, `no stray write landed (${sh.strayWritesDone} of ${sh.strayWrites})`);
  assert.ok(sh.lazySwitches < sh.calls, 'a call whose callee never entered the kernel made no switch');
});

S('--share rpal: pkru-not-switched is caught by key-isolation, fault-in-wrong-space by cross-fault, owner-only-shootdown by stale-tlb', async () => {
  const pkru = await run('rpal', ['pkru-not-switched'], 2, DEFAULT_RPAL_MIX);
  assert.ok(pkru.violations.some((v) => v.kind === 'key-isolation'), kinds(pkru).slice(0, 3).join('\n'));
  assert.ok(pkru.violations.some((v) => v.kind === 'foreign-write'), 'stray writes landed, and a later read found them: ' + kinds(pkru).filter((k) => !k.startsWith('key-')).slice(0, 3).join('\n'));
  const wrong = await run('rpal', ['fault-in-wrong-space'], 2, DEFAULT_RPAL_MIX);
  assert.ok(wrong.violations.some((v) => v.kind === 'cross-fault'), kinds(wrong).slice(0, 3).join('\n'));
  // Calls often (their callees' reads leave the owner's pages in the callers' TLBs), unmaps too.
  const callHeavy: VmMix = { ...DEFAULT_RPAL_MIX, map: 12, unmap: 10, adjust: 0, access: 20, resolve: 0, switch: 2, call: 30, check: 4, share: 0, unshare: 0, pkey: 0, grant: 0 };
  const clean = await run('rpal', [], 2, callHeavy);
  assert.equal(kinds(clean), [], 'the same mix is clean without the injection');
  const owner = await run('rpal', ['owner-only-shootdown'], 2, callHeavy);
  assert.ok(owner.violations.some((v) => v.kind === 'stale-tlb'), kinds(owner).slice(0, 3).join('\n'));
});

S('--share mshare runs clean with either flush policy', async () => {
  const attached = await run('mshare', [], 2, DEFAULT_MSHARE_MIX);
  assert.equal(kinds(attached), []);
  const sh = attached.share!;
  assert.ok(sh.shares > 0 && sh.unshares > 0 && sh.otherLoads > 0 && sh.regions === 2, JSON.stringify(sh));
  const all = await run('mshare', [], 2, DEFAULT_MSHARE_MIX, { mshareFlush: 'all' });
  assert.equal(kinds(all), []);
});

S('--threads without --share: cores switch threads of any process; a fork\'s child gets the forking thread and as many more; clean', async () => {
  const r = await runVmStress({
    machine: { cores: 2, nodes: 2, memory: '32MiB' }, seconds: 2, seed: 5, processes: 3, opsPerRound: 20_000, slots: 16, threads: 3,
    mix: { ...DEFAULT_RPAL_MIX, share: 0, unshare: 0, pkey: 0, call: 0, grant: 0, fork: 0.5, exit: 0.3, switch: 6 },
  }, 'test');
  assert.equal(kinds(r), []);
  assert.ok((r.outcomes['switch:Ok'] ?? 0) > 0 && (r.outcomes['fork:Ok'] ?? 0) > 0 && (r.outcomes['exit:Ok'] ?? 0) > 0, JSON.stringify(r.outcomes));
});

S("mshare-lifetime: the last detach destroys the host, and a host gone before its processes detached is reported", async () => {
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '32MiB', kernel: { maxSpaces: 8 } }, { pool: false });
  try {
    const k = m.kernel;
    const a = spaces.createSpace(k);
    const b = spaces.createSpace(k);
    const h = ms.mshareCreate(k, 7);
    assert.is(ms.mshareAttach(k, a, h, 7 * SLOT_BYTES), OK);
    assert.is(ms.mshareAttach(k, b, h, 7 * SLOT_BYTES), OK);
    assert.is(ms.mshareDetach(k, a, h, undefined, true), OK, 'not the last: detached');
    assert.is(ms.mshareDetach(k, b, h, undefined, true) !== OK, true, 'keepHost: the last detach is refused');
    assert.equal(detachAllAndCheck(m, [h]), [], 'the end of a run: the last detach destroys the host');
    assert.not.ok(k.isLive(h), 'the host is gone');
    // A bug that lets the host go early (its host word cleared with a process attached) is found.
    const h2 = ms.mshareCreate(k, 8);
    assert.is(ms.mshareAttach(k, a, h2, 8 * SLOT_BYTES), OK);
    Atomics.store(k.v.k, k.v.klayout.spaceBase(h2) + S_MSHARE_HOST, 0);
    const found = detachAllAndCheck(m, [h2]);
    assert.ok(found.some((v) => v.kind === 'mshare-lifetime' && /gone before/.test(v.detail)), JSON.stringify(found));
  } finally {
    await m.shutdown();
  }
});

S.run();
