// `nrvm campaign`: its options (its own, and the ones it hands to every stress run) and its report.

import { availableParallelism } from 'node:os';
import { UsageError, checkOutput, int, secondsArg } from './args.js';
import { formatCampaign, parseMatrix, parseShard, runCampaign } from './campaign.js';

export const CAMPAIGN_HELP = `Usage: nrvm campaign --runs N [--jobs J] [--seconds S] [--out FILE] [--seed N]
                     [--shard I/N] [--matrix SPEC] [--no-shrink] [stress options]

Runs N seeded stress runs (seeds N0, N0+1, ...) as independent child processes, J at a time, and
appends one JSON line per run to FILE: index, seed, options, outcome (clean, violations, error),
violations by kind, seconds, accesses/s, and the replay command. A campaign resumes: runs already
in FILE are skipped. Every failing seed is shrunk — fewer cores, nodes, processes, operations and
seconds, one at a time, kept while the same seed still fails — and its smallest failing command
is printed. Exit code 0 when every run was clean, 1 otherwise.

  --runs N            runs in the campaign (default 10)
  --jobs J            runs at a time (default: the CPUs of this machine)
  --seconds S         length of each run (default 5)
  --out FILE          results, one JSON line per run (default campaign.jsonl)
  --seed N            seed of run 0; run i uses N + i (default 1)
  --shard I/N         run only the runs whose index is I modulo N: one task of N (Slurm job array:
                      --shard auto/N reads SLURM_ARRAY_TASK_ID; Kubernetes Indexed Job: reads
                      JOB_COMPLETION_INDEX; GNU parallel: --shard {}/N)
  --matrix SPEC       configurations to cycle through, e.g. cores=2,4;nodes=1,2;cow=default,mh
  --no-shrink         record failing runs without shrinking them
  stress options      every other option goes to each run (see 'nrvm help stress')

Examples:
  nrvm campaign --runs 200 --seconds 5 --matrix 'cores=2,4;nodes=1,2;cow=default,mh' --out soak.jsonl
  nrvm campaign --runs 50 --seconds 2 --inject skip-shootdown --out /tmp/c.jsonl
`;

/** The campaign's own options (with a value unless boolean); every other option goes to each stress run. */
const CAMPAIGN_OPTIONS: Record<string, 'value' | 'flag'> = {
  runs: 'value', jobs: 'value', seconds: 'value', out: 'value', seed: 'value', shard: 'value', matrix: 'value', 'no-shrink': 'flag', help: 'flag',
};
/** Stress options that take no value (so the next argument is not theirs). */
const STRESS_FLAGS = new Set(['hw', 'json']);

export async function campaign(args: string[]): Promise<number> {
  const own: Record<string, string | true> = {};
  const stressArgs: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(args[i]);
    if (!m && args[i] !== '-h') throw new UsageError(`campaign: '${args[i]}' is not an option (see 'nrvm help campaign')`);
    const name = m ? m[1] : 'help';
    const kind = CAMPAIGN_OPTIONS[name];
    if (kind === 'flag') own[name] = true;
    else if (kind === 'value') {
      const v = m?.[2] ?? args[++i];
      if (v === undefined) throw new UsageError(`campaign: --${name} needs a value`);
      own[name] = v;
    } else {
      if (name === 'json' || name === 'dump' || name === 'trace') throw new UsageError(`campaign: --${name} does not apply (each run's report is a line of --out)`);
      stressArgs.push(`--${name}`);
      if (m?.[2] !== undefined) stressArgs.push(m[2]);
      else if (!STRESS_FLAGS.has(name)) {
        if (args[i + 1] === undefined) throw new UsageError(`campaign: --${name} needs a value`);
        stressArgs.push(args[++i]);
      }
    }
  }
  if (own.help) {
    process.stdout.write(CAMPAIGN_HELP);
    return 0;
  }
  const str = (k: string): string | undefined => (typeof own[k] === 'string' ? (own[k] as string) : undefined);
  const runs = int(str('runs'), 'runs', 1, 1e7) ?? 10;
  const jobs = int(str('jobs'), 'jobs', 1, 1024) ?? availableParallelism();
  const seconds = secondsArg(str('seconds'), 5, 86_400, false);
  const firstSeed = int(str('seed'), 'seed', -(2 ** 31), 2 ** 31 - 1 - runs) ?? 1;
  const shard = str('shard') === undefined ? { index: 0, count: 1 } : parseShard(str('shard') as string, process.env);
  const matrix = str('matrix') === undefined ? [] : parseMatrix(str('matrix') as string);
  const out = str('out') ?? 'campaign.jsonl';
  checkOutput('--out', out, 'file');
  const tty = process.stderr.isTTY === true;
  const summary = await runCampaign({
    runs, jobs, seconds, out, firstSeed, stressArgs, matrix, shard, shrink: own['no-shrink'] !== true,
    progress: (line) => process.stderr.write(tty ? `\r\x1b[2K${line}` : `${line}\n`),
  });
  if (tty) process.stderr.write('\n');
  process.stdout.write(formatCampaign(summary, out) + '\n');
  return summary.failing.length === 0 && summary.errors.length === 0 ? 0 : 1;
}
