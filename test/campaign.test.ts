// nrvm campaign: seeded stress runs as child processes, one JSON line each; resumed from its
// results file, split by a scheduler's task index, failing seeds shrunk; options checked first.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CampaignError, parseMatrix, parseShard, runCampaign, type CampaignOptions, type RunRecord } from '../src/cli/campaign.js';

const C = suite('campaign');

const dir = mkdtempSync(join(tmpdir(), 'nrvm-campaign-'));
const base = (out: string, o: Partial<CampaignOptions> = {}): CampaignOptions => ({
  runs: 3, jobs: 2, seconds: 0.5, out, firstSeed: 1, stressArgs: ['--cores', '2', '--memory', '16MiB'], matrix: [], shard: { index: 0, count: 1 }, shrink: false, ...o,
});
const records = (out: string): RunRecord[] => readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as RunRecord);

C('--shard: I/N, or auto/N from Slurm or a Kubernetes Indexed Job; anything else is refused', () => {
  assert.equal(parseShard('1/4', {}), { index: 1, count: 4 });
  assert.equal(parseShard('auto/4', { SLURM_ARRAY_TASK_ID: '3' }), { index: 3, count: 4 });
  assert.equal(parseShard('auto/2', { JOB_COMPLETION_INDEX: '0' }), { index: 0, count: 2 });
  assert.throws(() => parseShard('auto/2', {}), (e: unknown) => e instanceof CampaignError && /SLURM_ARRAY_TASK_ID/.test(e.message));
  assert.throws(() => parseShard('4/4', {}), /not in 0..3/);
  assert.throws(() => parseShard('x', {}), /must be I\/N/);
});

C('--matrix: keys and values; a malformed part is named', () => {
  assert.equal(parseMatrix('cores=2,4;cow=default,mh'), [['cores', ['2', '4']], ['cow', ['default', 'mh']]]);
  assert.throws(() => parseMatrix('cores'), /'cores' is not KEY=V1,V2/);
});

C('runs are JSON lines; a second call resumes; shards split the runs; the matrix cycles', async () => {
  const out = join(dir, 'a.jsonl');
  const s1 = await runCampaign(base(out, { matrix: [['nodes', ['1', '2']]] }));
  assert.is(s1.ran, 3);
  assert.is(s1.clean, 3);
  const r1 = records(out);
  assert.equal(r1.map((r) => r.index).sort(), [0, 1, 2]);
  for (const r of r1) {
    assert.is(r.outcome, 'clean');
    assert.is(r.seed, 1 + r.index);
    assert.equal(r.args.slice(-2), ['--nodes', r.index % 2 === 0 ? '1' : '2']);
    assert.match(r.replay, new RegExp(`^nrvm stress .* --seed ${r.seed}$`));
  }
  const s2 = await runCampaign(base(out, { runs: 4, matrix: [['nodes', ['1', '2']]] }));
  assert.equal([s2.ran, s2.skipped], [1, 3], 'only the new run ran');
  assert.equal(records(out).map((r) => r.index).sort(), [0, 1, 2, 3]);

  const sharded = join(dir, 'b.jsonl');
  await runCampaign(base(sharded, { runs: 5, shard: { index: 1, count: 2 } }));
  assert.equal(records(sharded).map((r) => r.index).sort(), [1, 3]);
});

C('a failing seed is recorded and shrunk to a smaller configuration that still fails', async () => {
  const out = join(dir, 'c.jsonl');
  const s = await runCampaign(base(out, {
    runs: 1, seconds: 1, shrink: true, stressArgs: ['--cores', '2', '--nodes', '1', '--memory', '16MiB', '--ops', '400', '--inject', 'skip-shootdown'],
  }));
  assert.is(s.failing.length, 1);
  const r = records(out)[0];
  assert.is(r.outcome, 'violations');
  assert.ok((r.kinds['stale-tlb'] ?? 0) > 0, JSON.stringify(r.kinds));
  assert.ok(r.shrunk !== undefined && r.shrunk.tries > 0);
  assert.match(r.shrunk?.replay ?? '', /--ops (100|200) /, 'fewer operations still fail');
});

C('wrong stress options stop the campaign with the reason; a results file that is not one is refused', async () => {
  const out = join(dir, 'd.jsonl');
  try {
    await runCampaign(base(out, { stressArgs: ['--memroy', '16MiB'] }));
    assert.unreachable('the campaign ran');
  } catch (e) {
    assert.ok(e instanceof CampaignError);
    assert.match((e as Error).message, /Unknown option '--memroy'/);
  }
  const bad = join(dir, 'e.jsonl');
  writeFileSync(bad, 'not json\n');
  try {
    await runCampaign(base(bad));
    assert.unreachable('the campaign ran');
  } catch (e) {
    assert.match((e as Error).message, /line 1 is not a campaign record/);
  }
});

C.run();
