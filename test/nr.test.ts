// Properties of node replication, each against a sequential model, with concurrent writer
// threads (fixture workers, seeded, started on a barrier):
// - a replicated counter: every add returns a distinct value 1..N (linearizable), reads never go
//   backwards on a thread nor behind its own last write, every replica ends equal;
// - a replicated stack: replaying the log's order through the sequential model gives exactly the
//   responses the threads saw, and every replica ends equal to the model;
// - the log wraps around thousands of times;
// - with one node idle, writers still complete: they advance the idle replica themselves;
// - head <= every ltail <= tail and ctail <= tail hold afterwards.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Worker } from 'node:worker_threads';
import { Nr } from '../src/nr/nr.js';
import { NrLayout, type NrConfig } from '../src/nr/layout.js';
import { Model, OP_ADD, STATE_WORDS, TRACE_CAP, TestStructure } from './fixtures/structures.js';
import type { NrReport, NrTask } from './fixtures/nr-worker.js';

interface Run {
  reports: NrReport[];
  state: Int32Array;
  trace: Int32Array;
  nr: Nr;
  ds: TestStructure;
  config: NrConfig;
  replicaOf: number[];
}

async function run(o: { kind: 'counter' | 'stack'; replicaOf: number[]; active: number[]; count: number; logEntries: number; readEvery?: number; seed?: number }): Promise<Run> {
  const config: NrConfig = { logEntries: o.logEntries, replicas: Math.max(...o.replicaOf) + 1, threads: o.replicaOf.length, instances: 1, maxBatch: 8 };
  const layout = new NrLayout(config);
  const nrBuf = new SharedArrayBuffer(layout.totalWords * 4);
  const stateBuf = new SharedArrayBuffer(config.replicas * STATE_WORDS * 4);
  const traceBuf = new SharedArrayBuffer((1 + 3 * TRACE_CAP) * 4);
  const barrierBuf = new SharedArrayBuffer(4);
  const reports = await Promise.all(o.active.map((thread) => new Promise<NrReport>((resolve, reject) => {
    const task: NrTask = {
      nrBuf, stateBuf, traceBuf, barrierBuf, config, thread, replicaOf: o.replicaOf, kind: o.kind, count: o.count,
      seed: o.seed ?? 11, readEvery: o.readEvery ?? 0, participants: o.active.length,
    };
    const w = new Worker(new URL('./fixtures/nr-worker.js', import.meta.url), { workerData: task });
    w.once('message', (r: NrReport) => {
      void w.terminate();
      resolve(r);
    });
    w.once('error', reject);
  })));
  for (const r of reports) assert.is(r.error, undefined, `thread ${r.thread}: ${r.error}`);
  const state = new Int32Array(stateBuf);
  const trace = new Int32Array(traceBuf);
  const ds = new TestStructure(state, trace);
  const nr = new Nr(layout, new Int32Array(nrBuf), 0, ds, o.replicaOf, 10_000);
  return { reports, state, trace, nr, ds, config, replicaOf: o.replicaOf };
}

/** Syncs every replica from the main thread, acting as one thread of each replica. */
function syncAll(x: Run): void {
  for (let r = 0; r < x.config.replicas; r++) {
    const t = x.replicaOf.indexOf(r);
    x.nr.sync({ id: t, replica: r, poll: () => {}, combining: 0 });
  }
}

const N = suite('node replication');

N('counter: adds are linearizable, reads never go backwards nor overlap an apply, replicas converge (log wraps)', async () => {
  const x = await run({ kind: 'counter', replicaOf: [0, 0, 0, 1, 1, 1], active: [0, 1, 2, 3, 4, 5], count: 4000, logEntries: 16, readEvery: 2 });
  const values = x.reports.flatMap((r) => r.writes.map((w) => w[3])).sort((a, b) => a - b);
  assert.is(values.length, 24000);
  values.forEach((v, i) => assert.is(v, i + 1, 'each add returns a distinct count'));
  for (const r of x.reports) {
    assert.is(r.tornReads, 0, `thread ${r.thread} read during an apply ${r.tornReads} times`);
    let prev = 0;
    for (const [v, lastAdd] of r.reads) {
      assert.ok(v >= prev, `thread ${r.thread} read ${v} after ${prev}`);
      assert.ok(v >= lastAdd, `thread ${r.thread} read ${v} after its own add returned ${lastAdd}`);
      prev = v;
    }
  }
  syncAll(x);
  for (let r = 0; r < x.config.replicas; r++) assert.is(x.state[r * STATE_WORDS], 24000, `replica ${r}`);
  assert.ok(x.nr.tail() > 16 * 1000, 'the log wrapped a thousand times');
  assert.equal(x.nr.checkInvariants(), []);
});

N('stack: the log order replayed through the sequential model gives every observed response', async () => {
  const x = await run({ kind: 'stack', replicaOf: [0, 1, 0, 1, 2], active: [0, 1, 2, 3, 4], count: 3000, logEntries: 64, seed: 5 });
  const seen = new Map<number, number>();
  for (const r of x.reports) for (const [id, , , resp] of r.writes) seen.set(id, resp);
  syncAll(x); // replica 0 (which keeps the trace) applies the last entries
  const model = new Model();
  const n = x.trace[0];
  assert.is(n, 15000, `trace ${n}; tail ${x.nr.tail()} ctail ${x.nr.ctail()} head ${x.nr.head()} ltails ${[0, 1, 2].map((r) => x.nr.ltail(r))}`);
  for (let i = 0; i < n; i++) {
    const op = x.trace[1 + 3 * i];
    const arg = x.trace[2 + 3 * i];
    const id = x.trace[3 + 3 * i];
    assert.is(seen.get(id), model.apply(op, arg), `op ${id} (${op === OP_ADD ? 'add' : op}) at log position ${i}`);
  }
  for (let r = 0; r < x.config.replicas; r++) {
    const b = r * STATE_WORDS;
    assert.is(x.state[b + 1], model.stack.length, `replica ${r} size`);
    assert.equal(Array.from(x.state.subarray(b + 16, b + 16 + model.stack.length)), model.stack, `replica ${r} contents`);
  }
  assert.equal(x.nr.checkInvariants(), []);
});

N('a full log with one node idle: writers advance the idle replica themselves', async () => {
  // Threads 2 and 3 belong to replica 1 and never run.
  const x = await run({ kind: 'counter', replicaOf: [0, 0, 1, 1], active: [0, 1], count: 3000, logEntries: 16 });
  const advances = x.reports.reduce((a, r) => a + r.stats.laggardAdvances, 0);
  assert.ok(advances > 0, 'some writer applied the log to replica 1');
  assert.ok(((x.nr.tail() - x.nr.ltail(1)) | 0) <= 16, 'replica 1 is at most one log behind');
  syncAll(x);
  assert.is(x.state[STATE_WORDS], 6000);
  assert.equal(x.nr.checkInvariants(), []);
});

N('the invariant check reports a broken log', async () => {
  const x = await run({ kind: 'counter', replicaOf: [0, 1], active: [0, 1], count: 100, logEntries: 16 });
  const w = x.nr.w;
  Atomics.store(w, x.nr.base + x.nr.layout.replica(1), x.nr.tail() + 5); // ltail[1] past tail
  const v = x.nr.checkInvariants();
  assert.ok(v.some((s) => /ltail\[1\] \d+ is past tail/.test(s)), v.join('; '));
});

N.run();
