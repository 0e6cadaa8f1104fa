// Properties of race reproduction: every built-in scenario reproduces its documented outcome
// on every repetition (real worker cores, driven by IPI handshakes and named breakpoints, no
// sleeps); waiting for a breakpoint that is never reached fails with a message naming the core
// and breakpoint; the command lists scenarios and refuses unknown ones.

import { suite } from 'uvu';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SCENARIOS_RACE } from '../src/workloads/races.js';
import { Machine, MachineError } from '../src/machine/machine.js';

const R = suite('race reproduction');

for (const sc of SCENARIOS_RACE) {
  R(`${sc.name} reproduces its outcome 3 times out of 3`, async () => {
    for (let i = 0; i < 3; i++) {
      const o = await sc.run();
      assert.ok(o.ok, o.steps.join('\n'));
    }
  });
}

R('waiting for a breakpoint no core reaches fails naming the core and breakpoint', async () => {
  const m = await Machine.boot({ cores: 1, nodes: 1, memory: '4MiB' }, { pool: false });
  try {
    await m.waitParked(0, 3, 50);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, MachineError);
    assert.match((e as Error).message, /core 0 did not reach breakpoint 3 within 50 ms/);
  }
});

R('nrvm race lists its scenarios and refuses unknown ones', () => {
  const bin = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const list = spawnSync(process.execPath, [bin, 'race', '--list'], { encoding: 'utf8' });
  assert.is(list.status, 0);
  for (const sc of SCENARIOS_RACE) assert.match(list.stdout, new RegExp(`^${sc.name} `, 'm'));
  const bad = spawnSync(process.execPath, [bin, 'race', 'heisenbug'], { encoding: 'utf8' });
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /race: unknown scenario 'heisenbug'/);
});

R('a race script in TypeScript runs through the same API (nrvm race FILE, loaded with tsx)', () => {
  const bin = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const script = fileURLToPath(new URL('../../test/fixtures/race-script.ts', import.meta.url));
  const r = spawnSync(process.execPath, [bin, 'race', script, '--repeat', '2', '--json'], { encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr + r.stdout);
  const j = JSON.parse(r.stdout);
  assert.is(j.scenario, 'user-stale-replica');
  assert.is(j.reproduced, 2);
  const missing = spawnSync(process.execPath, [bin, 'race', './nowhere.ts'], { encoding: 'utf8' });
  assert.is(missing.status, 2);
  assert.match(missing.stderr, /race script \.\/nowhere\.ts does not exist/);
});

R('a script copied out of the repository runs; a script that throws or does not parse is named with its file and line, exit 2', () => {
  const bin = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'nrvm-race-'));
  const copy = join(dir, 'mine.ts');
  copyFileSync(fileURLToPath(new URL('../../test/fixtures/race-script.ts', import.meta.url)), copy);
  const ok = spawnSync(process.execPath, [bin, 'race', copy], { encoding: 'utf8', timeout: 60_000 });
  assert.is(ok.status, 0, ok.stderr + ok.stdout);
  assert.match(ok.stdout, /reproduced 1 of 1/);

  const throws = join(dir, 'throws.ts');
  writeFileSync(throws, "export default async function race(): Promise<never> {\n  throw new Error('my script is wrong');\n}\n");
  const t = spawnSync(process.execPath, [bin, 'race', throws], { encoding: 'utf8', timeout: 60_000 });
  assert.is(t.status, 2, t.stderr);
  assert.match(t.stderr, /race script .*throws\.ts failed: my script is wrong/);
  assert.not.match(t.stderr, /internal error|\n\s+at /);

  const broken = join(dir, 'broken.ts');
  writeFileSync(broken, 'export default async function race( {\n');
  const b = spawnSync(process.execPath, [bin, 'race', broken], { encoding: 'utf8', timeout: 60_000 });
  assert.is(b.status, 2, b.stderr);
  assert.match(b.stderr, /race script .*broken\.ts does not load: .*broken\.ts:\d+:\d+/);
});

// Each way a script can wait for something that never comes: its own bounded message, never a hang
// or a raw stack. A wait of the script's own (waitParked, until, a core that is not there) is the
// script's error, exit 2; a core program that cannot finish (left parked, awaiting pings nobody
// sends) is a failed step and the outcome not reproduced, exit 1.
const WAITS: [string, string, number, RegExp][] = [
  ['waitParked for a breakpoint the core never reaches',
    "r.m.arm(1, nrvm.BREAKPOINTS['before-resolve']); const d = r.run({ 1: [{ op: 'switch', space: s }, { op: 'store', va: 0x1000, value: 1 }] }); await r.m.waitParked(1, nrvm.BREAKPOINTS['before-cow-copy'], 300); await d;",
    2, /failed: core 1 did not reach breakpoint \d+ within 300 ms/],
  ['until a condition that never holds', "await r.until(() => false, 'the moon', 200);", 2, /failed: race: waited 200 ms for the moon/],
  ['waitParked on a core the machine lacks', 'await r.m.waitParked(9, 1);', 2, /failed: no core 9: this machine has cores 0\.\.1/],
  ['a core left parked (never resumed)',
    "r.m.arm(1, nrvm.BREAKPOINTS['before-resolve']); const d = r.run({ 1: [{ op: 'switch', space: s }, { op: 'load', va: 0x500000 }] }); await r.m.waitParked(1, nrvm.BREAKPOINTS['before-resolve']); const res = await d; r.expect(res[0].ok, 'ran');",
    1, /failed: core 1: stayed parked at breakpoint before-resolve for 500 ms: nothing resumed it/],
  ['a core awaiting pings nobody sends', "const res = await r.run({ 1: [{ op: 'switch', space: s }, { op: 'awaitPings', count: 1 }] }); r.expect(res[0].ok, 'ran');",
    1, /failed: core 1: no answer within 500 ms while waiting for an interrupt/],
];

R('every wait in a race script that never ends is bounded and named (the script\'s own: exit 2; a core\'s: exit 1)', () => {
  const bin = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'nrvm-race-wait-'));
  WAITS.forEach(([what, body, code, message], i) => {
    const file = join(dir, `wait${i}.ts`);
    writeFileSync(file, `export default function race(nrvm: any) {\n  return nrvm.RaceApi.session({ cores: 2, nodes: 1, memory: '16MiB', waitLimitMs: 500 }, async (r: any) => {\n    const s = r.space();\n    ${body}\n  });\n}\n`);
    const r = spawnSync(process.execPath, [bin, 'race', file], { encoding: 'utf8', timeout: 60_000 });
    assert.is(r.status, code, `${what}: ${r.stderr}${r.stdout}`);
    assert.match(r.stderr + r.stdout, message, what);
    assert.not.match(r.stderr + r.stdout, /internal error|\n\s+at /, what);
  });
});

R.run();
