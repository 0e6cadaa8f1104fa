// Properties of the lock baseline and the scaling benchmark: the baseline (one copy of each
// address space behind one reader/writer lock) passes the same oracles as node replication
// under a concurrent mix (no stale access, no isolation break, frames conserved), and
// `nrvm bench scale` reports, per core count, NR and baseline throughput with latencies.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Machine } from '../src/machine/machine.js';
import { checkConservation, checkIsolation, checkStale, destroyAllAndCheck } from '../src/check/kernel.js';
import * as procs from '../src/kernel/proc.js';
import * as spaces from '../src/kernel/space.js';

const T = suite('lock baseline and scaling');

T('the lock baseline passes the stress oracles under a concurrent mix with forks', async () => {
  const m = await Machine.boot({ cores: 3, nodes: 1, memory: '64MiB', kernel: { mode: 'lock', maxSpaces: 16 } });
  try {
    for (let i = 0; i < 2; i++) procs.spawn(m.kernel, spaces.createSpace(m.kernel), -1);
    for (let c = 0; c < 3; c++) m.setRegisters(c, { cpl: 3 });
    for (let round = 0; round < 3; round++) {
      const res = await m.run([0, 1, 2].map((c) => ({
        core: c,
        program: {
          kind: 'vm-mix', seed: 100 + round, count: 4000, cores: 3, slots: 32, regionBase: 0x10_0000_0000, checkOwner: true,
          mix: { map: 10, unmap: 8, adjust: 4, access: 60, resolve: 5, switch: 3, fork: 0.3, exit: 0.3, check: 8 },
        },
      })));
      for (const r of res) assert.ok(r.ok, r.error);
      assert.equal([...checkStale(res), ...checkIsolation(res)], []);
      procs.reapZombies(m.kernel);
    }
    assert.equal(checkConservation(m), []);
    assert.equal(destroyAllAndCheck(m), []);
  } finally {
    await m.shutdown();
  }
});

T('bench scale reports NR and the lock baseline per core count, as JSON', () => {
  const bin = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const plot = join(mkdtempSync(join(tmpdir(), 'nrvm-scale-')), 'scale.svg');
  const trace = plot.replace(/scale\.svg$/, 'trace.json');
  const r = spawnSync(process.execPath, [bin, 'bench', 'scale', '--cores', '1,2', '--workload', 'mixed', '--seconds', '0.3', '--baseline', 'lock', '--json', '--plot', plot, '--trace', trace], { encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.rows.map((x: { cores: number; mode: string }) => `${x.cores}${x.mode}`), ['1nr', '1lock', '2nr', '2lock']);
  for (const x of j.rows) {
    assert.ok(x.opsPerSec > 0 && x.workload === 'mixed');
    assert.ok(x.p50Ns.map > 0 && x.p99Ns.map >= x.p50Ns.map, JSON.stringify(x));
  }
  assert.is(j.ratios.length, 2);
  for (const x of j.rows) assert.ok(x.rounds >= 3, `${x.rounds} measured rounds`);
  assert.equal(j.reference.map((x: { cores: number }) => x.cores), [1, 2]);
  assert.ok(j.reference.every((x: { loadsPerSec: number }) => x.loadsPerSec > 0), 'the machine reference ran');
  assert.match(j.note, /contention, not speed-up/);
  const svg = readFileSync(plot, 'utf8');
  assert.match(svg, /^<svg/);
  assert.match(svg, /node replication/);
  assert.match(svg, /simulated cores/);
  const t = JSON.parse(readFileSync(trace.replace(/\.json$/, '-2-nr.json'), 'utf8'));
  assert.ok(t.traceEvents.some((e: { name: string }) => e.name === 'MapFrame'), 'a trace per point');
});

T.run();
