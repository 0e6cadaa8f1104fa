// `nrvm campaign`: many seeded stress runs as independent child processes, one JSON line per run
// in a results file, resumable, shardable by an existing scheduler's task index, with every
// failing seed shrunk to the smallest configuration that still fails (as syzkaller minimises a
// crashing program). Runs are independent jobs: a campaign past one machine is the same command
// on every task of a Slurm job array, a Kubernetes Indexed Job or GNU parallel, each with its own
// --shard, and the results files concatenated — there is no coordinator here.

import { spawn } from 'node:child_process';
import { appendFile, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

export class CampaignError extends Error {}

export interface CampaignOptions {
  runs: number;
  jobs: number;
  seconds: number;
  out: string;
  /** Run i uses seed firstSeed + i. */
  firstSeed: number;
  /** Options passed to every run (machine and stress options). */
  stressArgs: string[];
  /** Key -> values: run i takes cell i % cells of their product (e.g. cores -> [2, 4]). */
  matrix: [string, string[]][];
  shard: { index: number; count: number };
  shrink: boolean;
  progress?: (line: string) => void;
}

export interface RunRecord {
  index: number;
  seed: number;
  /** The stress options of this run (its matrix cell added). */
  args: string[];
  outcome: 'clean' | 'violations' | 'error';
  violations: number;
  /** Violations by kind. */
  kinds: Record<string, number>;
  seconds: number;
  accessesPerSec: number;
  /** Why the run is an error (bad options, a crash, a timeout). */
  error?: string;
  replay: string;
  /** For a failing run: the smallest configuration found that still fails, and its replay. */
  shrunk?: { args: string[]; replay: string; tries: number };
}

export interface CampaignSummary {
  ran: number;
  skipped: number;
  clean: number;
  failing: RunRecord[];
  errors: RunRecord[];
}

/** "i/n": this task's share of the runs, the runs whose index is i modulo n. */
export function parseShard(text: string, env: NodeJS.ProcessEnv): { index: number; count: number } {
  const m = /^(\w+)\/(\d+)$/.exec(text);
  if (!m) throw new CampaignError(`--shard must be I/N (e.g. 0/4, or auto/4 to read SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX), got '${text}'`);
  const count = Number(m[2]);
  let idx = m[1];
  if (idx === 'auto') {
    const fromEnv = env.SLURM_ARRAY_TASK_ID ?? env.JOB_COMPLETION_INDEX;
    if (fromEnv === undefined) throw new CampaignError('--shard auto/N: neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set');
    idx = fromEnv;
  }
  if (count < 1) throw new CampaignError(`--shard I/N: N is the number of shards, 1 or more, got ${count}`);
  const index = Number(idx);
  if (!Number.isInteger(index) || count < 1 || index < 0 || index >= count) throw new CampaignError(`--shard: index ${idx} is not in 0..${count - 1}`);
  return { index, count };
}

/** "cores=2,4;nodes=1,2;cow=default,mh": keys and their values. */
export function parseMatrix(text: string): [string, string[]][] {
  const out: [string, string[]][] = [];
  for (const part of text.split(';').filter((p) => p.trim() !== '')) {
    const m = /^\s*([a-z][a-z-]*)\s*=\s*([^=]+)$/.exec(part);
    if (!m) throw new CampaignError(`--matrix: '${part}' is not KEY=V1,V2,... (e.g. cores=2,4;nodes=1,2;cow=default,mh)`);
    const values = m[2].split(',').map((v) => v.trim()).filter(Boolean);
    if (values.length === 0) throw new CampaignError(`--matrix: '${m[1]}' has no values`);
    out.push([m[1], values]);
  }
  return out;
}

/** The matrix cell of run i, as stress options. */
function cellArgs(matrix: [string, string[]][], i: number): string[] {
  const args: string[] = [];
  let k = i;
  for (const [key, values] of matrix) {
    args.push(`--${key}`, values[k % values.length]);
    k = Math.floor(k / values.length);
  }
  return args;
}

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

interface ChildOutcome {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs `nrvm stress ARGS --seconds S --seed N --json` as a child process, killed past a generous bound. */
function runChild(args: string[], seconds: number, seed: number): Promise<ChildOutcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, 'stress', ...args, '--seconds', String(seconds), '--seed', String(seed), '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Boot, the workers' start and the end checks take time beyond --seconds; ten times it, and
    // two minutes, is a bound no sound run reaches.
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, seconds * 10_000 + 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

function replayOf(args: string[], seconds: number, seed: number): string {
  return ['nrvm', 'stress', ...args, '--seconds', String(seconds), '--seed', String(seed)].join(' ');
}

/** One run: its record (outcome, violations by kind, figures). */
async function oneRun(index: number, seed: number, args: string[], seconds: number): Promise<RunRecord> {
  const c = await runChild(args, seconds, seed);
  const base = { index, seed, args, violations: 0, kinds: {}, seconds: 0, accessesPerSec: 0, replay: replayOf(args, seconds, seed) };
  if (c.timedOut) return { ...base, outcome: 'error', error: 'the run did not end within its bound and was killed' };
  if (c.code === 0 || c.code === 1) {
    try {
      const r = JSON.parse(c.stdout) as { violations: { kind: string }[]; seconds: number; accessesPerSec: number };
      const kinds: Record<string, number> = {};
      for (const v of r.violations) kinds[v.kind] = (kinds[v.kind] ?? 0) + 1;
      return { ...base, outcome: r.violations.length === 0 ? 'clean' : 'violations', violations: r.violations.length, kinds, seconds: r.seconds, accessesPerSec: r.accessesPerSec };
    } catch {
      return { ...base, outcome: 'error', error: `unreadable report (exit ${c.code}): ${c.stdout.slice(0, 200)}` };
    }
  }
  const said = c.stderr.trim().split('\n').filter((l) => l.startsWith('nrvm: ')).pop() ?? `exit code ${c.code}`;
  // Exit 2 is bad usage or a machine that cannot be built: the options are wrong, not the run.
  return { ...base, outcome: 'error', error: c.code === 2 ? `usage: ${said.replace(/^nrvm: /, '')}` : said };
}

/** The value of `--key` in args, or undefined. */
function valueOf(args: string[], key: string): string | undefined {
  const i = args.lastIndexOf(`--${key}`);
  return i >= 0 ? args[i + 1] : undefined;
}

/** args with `--key value` set (replacing any). */
function withValue(args: string[], key: string, value: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${key}`) {
      i++;
      continue;
    }
    out.push(args[i]);
  }
  return [...out, `--${key}`, value];
}

/**
 * Shrinks a failing run: halves cores, nodes, processes, operations per round and seconds, one
 * at a time, keeping each reduction under which the same seed still fails, until none does.
 */
async function shrink(rec: RunRecord, seconds: number, log?: (s: string) => void): Promise<RunRecord['shrunk']> {
  let args = rec.args;
  let secs = seconds;
  let tries = 0;
  const stillFails = async (a: string[], s: number): Promise<boolean> => {
    tries++;
    const r = await oneRun(rec.index, rec.seed, a, s);
    return r.outcome === 'violations';
  };
  const dims: { key: string; from: number; min: number }[] = [
    { key: 'cores', from: Number(valueOf(args, 'cores') ?? 4), min: 1 },
    { key: 'nodes', from: Number(valueOf(args, 'nodes') ?? 2), min: 1 },
    { key: 'processes', from: Number(valueOf(args, 'processes') ?? 2), min: 1 },
    { key: 'ops', from: Number(valueOf(args, 'ops') ?? 20_000), min: 100 },
  ];
  for (let changed = true; changed && tries < 24;) {
    changed = false;
    for (const d of dims) {
      const cur = Number(valueOf(args, d.key) ?? d.from);
      const next = Math.max(d.min, Math.floor(cur / 2));
      if (next >= cur) continue;
      let cand = withValue(args, d.key, String(next));
      // A machine needs at least as many cores as nodes.
      if (d.key === 'cores' && Number(valueOf(cand, 'nodes') ?? 2) > next) cand = withValue(cand, 'nodes', String(next));
      if (await stillFails(cand, secs)) {
        args = cand;
        changed = true;
        log?.(`campaign: seed ${rec.seed} still fails with --${d.key} ${next}`);
      }
    }
    if (secs > 1 && (await stillFails(args, Math.max(1, Math.floor(secs / 2))))) {
      secs = Math.max(1, Math.floor(secs / 2));
      changed = true;
    }
  }
  return { args: [...args, '--seconds', String(secs)], replay: replayOf(args, secs, rec.seed), tries };
}

/** Indices already in the results file (a resumed campaign skips them). */
async function doneIndices(out: string): Promise<Set<number>> {
  let text = '';
  try {
    text = await readFile(out, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw new CampaignError(`cannot read ${out}: ${(e as Error).message}`);
  }
  const done = new Set<number>();
  for (const [n, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue;
    try {
      done.add((JSON.parse(line) as RunRecord).index);
    } catch {
      throw new CampaignError(`${out} line ${n + 1} is not a campaign record; give another --out or remove it`);
    }
  }
  return done;
}

/** Runs the campaign's share of runs, --jobs at a time; appends a record per run as it ends. */
export async function runCampaign(o: CampaignOptions): Promise<CampaignSummary> {
  const done = await doneIndices(o.out);
  const todo: number[] = [];
  let skipped = 0;
  for (let i = 0; i < o.runs; i++) {
    if (i % o.shard.count !== o.shard.index) continue;
    if (done.has(i)) skipped++;
    else todo.push(i);
  }
  const summary: CampaignSummary = { ran: 0, skipped, clean: 0, failing: [], errors: [] };
  let next = 0;
  let usage: string | undefined;
  const worker = async (): Promise<void> => {
    while (next < todo.length && usage === undefined) {
      const i = todo[next++];
      const seed = o.firstSeed + i;
      const rec = await oneRun(i, seed, [...o.stressArgs, ...cellArgs(o.matrix, i)], o.seconds);
      // Bad options fail every run alike: stop and say so instead of recording N errors.
      if (rec.outcome === 'error' && rec.error?.startsWith('usage: ')) {
        usage = rec.error.slice('usage: '.length);
        return;
      }
      if (rec.outcome === 'violations' && o.shrink) rec.shrunk = await shrink(rec, o.seconds, o.progress);
      await appendFile(o.out, JSON.stringify(rec) + '\n');
      summary.ran++;
      if (rec.outcome === 'clean') summary.clean++;
      else if (rec.outcome === 'violations') summary.failing.push(rec);
      else summary.errors.push(rec);
      o.progress?.(
        `campaign: ${summary.ran + skipped}/${todo.length + skipped} runs (run ${i}, seed ${seed}: ${rec.outcome}${rec.violations ? ` ${rec.violations}` : ''})  ` +
          `clean ${summary.clean}  failing ${summary.failing.length}  errors ${summary.errors.length}`,
      );
    }
  };
  await Promise.all([...Array(Math.max(1, Math.min(o.jobs, todo.length))).keys()].map(() => worker()));
  if (usage !== undefined) throw new CampaignError(`a run was refused (its options are wrong, so every run would be): ${usage}`);
  return summary;
}

/** The human summary. */
export function formatCampaign(s: CampaignSummary, out: string): string {
  const lines = [`nrvm campaign: ${s.ran} runs (${s.skipped} already in ${out}): ${s.clean} clean, ${s.failing.length} failing, ${s.errors.length} errors`];
  for (const r of s.failing) {
    lines.push(`  FAILING run ${r.index} seed ${r.seed}: ${Object.entries(r.kinds).map(([k, n]) => `${k} x${n}`).join(', ')}`);
    lines.push(`    replay   ${r.replay}`);
    if (r.shrunk) lines.push(`    smallest ${r.shrunk.replay}   (${r.shrunk.tries} shrinking runs)`);
  }
  for (const r of s.errors) lines.push(`  ERROR run ${r.index} seed ${r.seed}: ${r.error}\n    replay   ${r.replay}`);
  lines.push(`  results  ${out} (one JSON line per run)`);
  return lines.join('\n');
}
