#!/usr/bin/env node
// The nrvm command. Arguments are parsed with node:util parseArgs; every mistake is a message that
// names it and exit code 2, never a stack trace. Exit codes: 0 success, 1 violations (or a failed
// run), 2 bad usage or a machine that cannot be built, 70 an internal error.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { randomInt } from 'node:crypto';
import { ConfigError, Machine, MachineError } from '../machine/machine.js';
import { HW_INJECTIONS, DEFAULTS, MAX_CORES, parseSize } from '../hw/config.js';
import { DEFAULT_KERNEL } from '../kernel/options.js';
import { ALL_INJECTIONS, MACHINE_INJECTIONS, type MachineOptions } from '../machine/config.js';
import { writeDump } from '../machine/dump.js';
import { SCENARIOS, ScenarioError, findScenario } from '../workloads/scenarios.js';
import { DEFAULT_STRESS_MIX, STRESS_MIX_KINDS, SetupError, type StressMix } from '../workloads/hwstress.js';
import { formatReport, runStress } from './stress.js';
import { DEFAULT_VM_MIX, formatVmReport, runVmStress } from './vmstress.js';
import { VM_MIX_KINDS, type VmMix } from '../workloads/sources.js';
import { formatMicro, runMicro } from '../bench/micro.js';
import { formatFork, runForkBench } from '../bench/fork.js';
import { formatShootdown, runShootdownBench } from '../bench/shootdown.js';
import { seedExample } from '../machine/simulator.js';
import { SCALE_WORKLOADS, formatScale, runScale, type ScaleWorkload } from '../bench/scale.js';
import { scalePlotSvg } from '../bench/plot.js';
import { writeChromeTrace } from '../trace/chrome.js';
import { RaceApi, RaceScriptError, SCENARIOS_RACE, findRace, loadRaceScript, type RaceOutcome } from '../workloads/races.js';
import { writeFile } from 'node:fs/promises';
import { accessSync, constants as fsConstants, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { CampaignError, formatCampaign, parseMatrix, parseShard, runCampaign } from './campaign.js';

export const HELP = `nrvm — a hardware-faithful emulator of a multi-core NUMA x86-64 memory system

Usage: nrvm <command> [options]

Commands:
  stress              stress run: every core runs seeded programs of map/unmap/adjust/resolve and
                      accesses against node-replicated address spaces, with oracles (npm start);
                      --hw runs the hardware-level stress instead
  campaign            many seeded stress runs as child processes, results as JSON lines,
                      resumable and shardable (Slurm, Kubernetes, GNU parallel); failing seeds shrunk
  dump                write a scenario's physical memory (phys.bin) and machine.json
  bench micro|fork|scale|shootdown
                      micro-benchmarks of the hot paths; fork against a byte copy;
                      throughput across core counts, NR against a lock baseline;
                      shootdown round trips to 1..N target cores
  example seed        the seed's Simulator program (3 forks, 1024 writes) on the emulator
  race NAME|FILE      replay a race deterministically (breakpoints and handshakes); --list
  help [command]      this text, or one command's options

Run 'nrvm help <command>' for its options. Exit codes: 0 ok, 1 violations found (or a race
not reproduced, a campaign with a failing run), 2 bad usage, a machine that cannot be built or an
output that could not be written, 70 an internal error (a bug: please report it).
`;

const EXAMPLE_HELP = `Usage: nrvm example seed

Runs the seed's Simulator program (seeds/jiceberg-vmem-processes.txt) on the emulator: three
forks, then 1024 round-robin writes over four processes, printing the seed's transcript
("Value of x: 0", each write's value before and after, and one PGZERO per process).

Example: nrvm example seed
`;

const MACHINE_HELP = `Machine options:
  --cores N           simulated cores, one worker thread each (default ${DEFAULTS.cores}; may exceed real cores)
  --nodes N           NUMA nodes, each a contiguous range of frames (default ${DEFAULTS.nodes})
  --memory SIZE       physical memory, e.g. 64MiB, 1GiB (default ${DEFAULTS.memoryBytes / 2 ** 20}MiB)
  --ipi-slots N       IPI queue slots per core, a power of two >= 2 (default ${DEFAULTS.ipiQueueSlots})
  --wait-limit MS     bound on any single wait before a core reports what it waited for (default ${DEFAULTS.waitLimitMs})
  --log-entries N     entries of each address space's NR log, a power of two (default ${DEFAULT_KERNEL.logEntries})
  --max-batch N       most operations one combiner appends at once (default ${DEFAULT_KERNEL.maxBatch})
  --cow POLICY        copy-on-write policy: default (the last sharer's write reuses the frame) or
                      mh (MH: it becomes private read-only, the retried write faults once more)
`;

const STRESS_HELP = `Usage: nrvm stress [options]

Every core runs a seeded random program against --processes node-replicated address spaces:
MapFrame, Unmap (with TLB shootdown), Adjust and Resolve on its own slots, context switches, and
8-byte loads and stores anywhere in the spaces' shared region (so other cores' TLBs hold
translations that shootdowns must remove). Page faults go through the kernel: Resolve syncs the
local replica; a mapping found then means a spurious fault (retried), none an invalid access.

Checked mode runs the oracles: stale-tlb (an access reached a frame its space no longer owns),
replica-divergence (replicas differ once synced), nr-invariant (head <= ltail <= tail,
ctail <= tail), isolation (a core reads back something other than what it wrote to its own
slot in its own space), frame-conservation and frame-leak (after every space is destroyed),
core-failure (a wait past its bound, a panic, or a worker that died).

${MACHINE_HELP}
Run options:
  --processes N       address spaces (default 2)
  --seconds S         how long to run (default 10); a round ends after --ops operations per
                      core or at the deadline
  --seed N            seed of every program (default: random; printed for replay)
  --ops N             operations per core per round (default 20000; --hw: 200000)
  --mix K=W,...       weights of ${VM_MIX_KINDS.join(', ')} (kinds not named get 0;
                      default ${Object.entries(DEFAULT_VM_MIX).map(([k, v]) => `${k}=${v}`).join(',')})
  --inject NAME       inject a fault to see an oracle catch it: ${ALL_INJECTIONS.join(', ')}
  --json              print the report as one JSON object instead of text
  --dump DIR          at the end, write DIR/phys.bin and DIR/machine.json (a root per replica)
  --trace FILE        record per-core events and write Chrome trace JSON (Perfetto, chrome://tracing)
  --hw                the hardware-level stress instead: accesses, INVLPG, IPIs, entry rewrites
                      by break-before-make and A/D races over shared tables; its --mix kinds are
                      ${STRESS_MIX_KINDS.join(', ')}
                      (default ${Object.entries(DEFAULT_STRESS_MIX).map(([k, v]) => `${k}=${v}`).join(',')})

Examples:
  nrvm stress --cores 4 --nodes 2 --seconds 20 --seed 7
  nrvm stress --seconds 5 --inject skip-replica-sync
  nrvm stress --hw --cores 8 --seconds 10
`;

const CAMPAIGN_HELP = `Usage: nrvm campaign --runs N [--jobs J] [--seconds S] [--out FILE] [--seed N]
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

const DUMP_HELP = `Usage: nrvm dump --out DIR [--scenario NAME] [machine options]

Builds a scenario's page tables directly in physical memory and writes DIR/phys.bin (the raw
image, physical address 0 at byte 0) and DIR/machine.json (memoryBytes, cores, nodes, and the
roots with their mappings, read without touching A/D bits).

  --out DIR           where to write (created if missing)
  --scenario NAME     one of: ${SCENARIOS.map((s) => s.name).join(', ')} (default varied)
  --list              list the scenarios

${MACHINE_HELP}(dump's own defaults: --cores 2 --nodes 1 --memory 16MiB)

Example: nrvm dump --out /tmp/nrvm-dump --scenario varied
`;

const BENCH_HELP = `Usage: nrvm bench micro [--json] [--time MS]
       nrvm bench fork [--json] [--pages N,N] [--iterations K]
       nrvm bench scale [--cores 1,2,4] [--nodes N] [--workload NAME] [--seconds S] [--baseline lock] [--json] [--plot FILE.svg] [--trace FILE.json]
       nrvm bench shootdown [--targets 1,2,3] [--samples N] [--json] [--trace FILE.json]

Measures, with tinybench, on this machine:
  a load through a TLB hit vs a plain typed-array load, same addresses (4 KiB and 2 MiB pages)
  a 4-level walk on a TLB miss (A/D already set) vs four dependent plain loads
  an IPI round trip to a polling core and to a halted core vs a raw Atomics ping-pong
  floors, on the same patterns: a direct-mapped one-compare lookup, and a walk that only
  indexes, loads, tests P and follows (the least any software translation does)

  --json              print one JSON object (figures, ratios, Node version, machine)
  --time MS           time per task (default 500)

fork: a copy-on-write fork of an address space of N mapped pages (default 10000 and 100000),
against a plain byte copy of the same page tables, measured in the same run.

scale: address-space operations per second at each core count, node replication and (with
--baseline lock) one copy of the page tables behind one reader/writer lock, same workloads,
same run: maponly (a fresh frame at a fresh address every time, a new space each round),
unmap, resolve, access, mixed (default). Latencies of map and unmap (with its shootdown; one
in 16 timed) at p50 and p99, TLB hit rate, mean combining batch, heap bytes the workers
allocated per operation (B/op), and the share of maps that failed when above 1%; --plot draws throughput
against cores, one line per mode, as SVG; --trace writes a Chrome trace per point
(FILE-<cores>-<mode>.json). Every point is booted first; then 100 ms rounds (every core runs
for the same time) alternate between the points until each has run S seconds, and ops/s is
the median of a point's rounds. A plain loop of loads on as many threads, in the same passes,
shows the speed-up the machine itself gave ("machine"). Above the machine's real CPU count,
figures measure contention, not speed-up.

shootdown: the round trip of one page's shootdown from one initiator to 1..N target cores that
run the space (median and p99); --trace writes a Chrome trace per target count
(FILE-<targets>.json). micro and fork time loops on one thread and take no --trace.

Examples:
  nrvm bench micro --json
  nrvm bench fork --pages 10000
  nrvm bench scale --cores 1,2,4 --nodes 2 --workload resolve --seconds 2 --baseline lock --plot scale.svg
`;

const RACE_HELP = `Usage: nrvm race --list
       nrvm race NAME|FILE [--repeat N] [--json] [--trace FILE.json]

Replays a known race with real worker cores, every time the same way: the cores' programs
handshake with IPIs, and the scenario arms named breakpoints, waits until a core is parked
there, looks at the machine, and resumes it. Prints what happened step by step; exits 0 if the
documented outcome was reproduced every time.

Breakpoints: after-log-append, before-log-apply, before-resolve, before-shootdown-ipis,
before-receiver-sync, before-cow-copy, before-exit-leave.

FILE is a race script, a TypeScript (or JavaScript) module: its default export is
async (nrvm) => outcome, where nrvm.RaceApi.session(options, async (r) => ...) boots a machine,
gives the API (space, mapPage, run, m.arm, m.waitParked, m.resume, replicaMaps, tlbHolds, until,
step, expect) and returns the outcome; nrvm.BREAKPOINTS maps the names above to ids. See test/fixtures/race-script.ts.

Examples:
  nrvm race stale-replica-fault --repeat 100
  nrvm race test/fixtures/race-script.ts
`;

const HELPS: Record<string, string> = { stress: STRESS_HELP, campaign: CAMPAIGN_HELP, dump: DUMP_HELP, bench: BENCH_HELP, race: RACE_HELP, example: EXAMPLE_HELP };

/** A usage mistake: printed as "nrvm: message" with exit code 2. */
export class UsageError extends Error {}

const machineOptions = {
  cores: { type: 'string' },
  nodes: { type: 'string' },
  memory: { type: 'string' },
  'ipi-slots': { type: 'string' },
  'wait-limit': { type: 'string' },
  'log-entries': { type: 'string' },
  'max-batch': { type: 'string' },
  cow: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, command: string) {
  try {
    return parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (e) {
    const msg = (e as Error).message;
    // parseArgs reads "--cores -1" as an option followed by another: say what to write instead.
    const amb = /Option '(--[a-z-]+)[^']*' argument is ambiguous/.exec(msg);
    if (amb) throw new UsageError(`${command}: ${amb[1]} needs a value; a value that starts with '-' is written ${amb[1]}=VALUE (see 'nrvm help ${command}')`);
    throw new UsageError(`${command}: ${msg.replace(/\. To specify a positional.*$/, '')} (see 'nrvm help ${command}')`);
  }
}

function int(v: string | undefined, name: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (v.trim() === '') throw new UsageError(`--${name} needs a value (got an empty one)`);
  if (!/^-?\d+$/.test(v)) throw new UsageError(`--${name} must be a whole number, got '${v}'`);
  const n = Number(v);
  if (n < min || n > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function machineFrom(values: Record<string, unknown>): MachineOptions {
  const o: MachineOptions = {};
  const cores = int(values.cores as string | undefined, 'cores', 1, MAX_CORES);
  const nodes = int(values.nodes as string | undefined, 'nodes', 1, MAX_CORES);
  if (cores !== undefined) o.cores = cores;
  if (nodes !== undefined) o.nodes = nodes;
  if (values.memory !== undefined) {
    const s = parseSize(values.memory as string);
    if (s === null) throw new UsageError(`--memory must be a size such as 64MiB or 1GiB (units B, KiB, MiB, GiB, or K, M, G; MB and GB are ambiguous), got '${String(values.memory)}'`);
    o.memory = s;
  }
  const slots = int(values['ipi-slots'] as string | undefined, 'ipi-slots', -1e9, 1e9);
  if (slots !== undefined) o.ipiQueueSlots = slots;
  const wait = int(values['wait-limit'] as string | undefined, 'wait-limit', -1e9, 1e9);
  if (wait !== undefined) o.waitLimitMs = wait;
  const log = int(values['log-entries'] as string | undefined, 'log-entries', -1e9, 1e9);
  const batch = int(values['max-batch'] as string | undefined, 'max-batch', -1e9, 1e9);
  if (log !== undefined || batch !== undefined) o.kernel = { ...(log !== undefined ? { logEntries: log } : {}), ...(batch !== undefined ? { maxBatch: batch } : {}) };
  if (values.cow !== undefined) {
    if (values.cow !== 'default' && values.cow !== 'mh') throw new UsageError(`--cow must be default or mh, got '${String(values.cow)}'`);
    o.kernel = { ...(o.kernel ?? {}), cow: values.cow };
  }
  return o;
}

/**
 * Checks, before any work, that an output can be written: a file (its directory exists and is
 * writable; not a directory itself) or a directory (exists and is writable, or can be made in a
 * writable directory). /proc and /sys are refused (results do not belong there, and a recursive
 * mkdir under /proc does not end).
 */
function checkOutput(flag: string, path: string | undefined, kind: 'file' | 'dir'): void {
  if (path === undefined) return;
  if (path.trim() === '') throw new UsageError(`${flag} needs a path (got an empty one)`);
  const abs = resolve(path);
  if (/^\/(proc|sys)(\/|$)/.test(abs)) throw new UsageError(`${flag} ${path}: /proc and /sys are not places to write results`);
  const here = statOrNull(abs);
  if (here) {
    if (kind === 'file' && here.isDirectory()) throw new UsageError(`${flag} ${path} is a directory; give a file name`);
    if (kind === 'dir' && !here.isDirectory()) throw new UsageError(`${flag} ${path} exists and is not a directory`);
    if (!writable(abs)) throw new UsageError(`${flag} ${path} cannot be written (permission)`);
    return;
  }
  const parent = dirname(abs);
  const up = statOrNull(parent);
  if (!up || !up.isDirectory()) throw new UsageError(`${flag} ${path}: the directory ${parent} does not exist`);
  if (!writable(parent)) throw new UsageError(`${flag} ${path}: the directory ${parent} cannot be written (permission)`);
}

function statOrNull(p: string): Stats | null {
  try {
    return statSync(p);
  } catch {
    return null;
  }
}

function writable(p: string): boolean {
  try {
    accessSync(p, fsConstants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Prints the outputs a finished run could not write; exit code 2 if there were any (the report is out already). */
function outputFailures(errors: string[]): boolean {
  for (const e of errors) process.stderr.write(`nrvm: could not write ${e}\n`);
  return errors.length > 0;
}

/** Parses "load=60,store=30" over `kinds`: named kinds get their weight, the others 0. */
export function parseMix<K extends string>(text: string, kinds: readonly K[]): Record<K, number> {
  const mix = Object.fromEntries(kinds.map((k) => [k, 0])) as Record<K, number>;
  const seen = new Set<string>();
  for (const part of text.split(',')) {
    const m = /^\s*([a-z]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*$/.exec(part);
    if (!m) throw new UsageError(`--mix: '${part}' is not KIND=WEIGHT (kinds: ${kinds.join(', ')})`);
    if (!(kinds as readonly string[]).includes(m[1])) throw new UsageError(`--mix: unknown kind '${m[1]}' (kinds: ${kinds.join(', ')})`);
    if (seen.has(m[1])) throw new UsageError(`--mix: '${m[1]}' is given twice`);
    if (Number(m[2]) < 0) throw new UsageError(`--mix: the weight of '${m[1]}' must be 0 or more, got ${m[2]}`);
    seen.add(m[1]);
    mix[m[1] as K] = Number(m[2]);
  }
  if (Object.values<number>(mix).every((w) => w === 0)) throw new UsageError('--mix: at least one weight must be above 0');
  return mix;
}

function replayCommand(argv: string[], seed: number): string {
  const rest = argv.filter((a, i) => !(a === '--seed' || a.startsWith('--seed=') || (i > 0 && argv[i - 1] === '--seed')) && a !== '--json');
  // A negative seed must be written --seed=-5: "--seed -5" reads as two options.
  return ['nrvm', ...rest, seed < 0 ? `--seed=${seed}` : `--seed ${seed}`].join(' ');
}

async function stress(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...machineOptions,
    seconds: { type: 'string' },
    seed: { type: 'string' },
    ops: { type: 'string' },
    mix: { type: 'string' },
    inject: { type: 'string', multiple: true },
    json: { type: 'boolean' },
    dump: { type: 'string' },
    processes: { type: 'string' },
    hw: { type: 'boolean' },
    trace: { type: 'string' },
  }, 'stress');
  if (values.help) {
    process.stdout.write(STRESS_HELP);
    return 0;
  }
  const machine = machineFrom(values);
  const known: readonly string[] = values.hw ? [...HW_INJECTIONS, ...MACHINE_INJECTIONS] : ALL_INJECTIONS;
  if ((values.inject ?? []).some((x) => x.trim() === '')) throw new UsageError('--inject needs a fault name (got an empty one)');
  const inject = (values.inject ?? []).flatMap((x) => x.split(',')).filter(Boolean);
  for (const i of inject) {
    if (!known.includes(i)) throw new UsageError(`--inject: unknown fault '${i}' (known${values.hw ? ' with --hw' : ''}: ${known.join(', ')})`);
  }
  machine.inject = inject;
  const seconds = values.seconds === undefined ? 10 : Number(values.seconds);
  if (values.seconds?.trim() === '' || !Number.isFinite(seconds) || seconds < 0 || seconds > 86_400) {
    throw new UsageError(`--seconds must be a number of seconds from 0 to 86400, got '${values.seconds}'`);
  }
  checkOutput('--dump', values.dump, 'dir');
  checkOutput('--trace', values.trace, 'file');
  const seed = int(values.seed, 'seed', -(2 ** 31), 2 ** 32 - 1) ?? randomInt(2 ** 31);
  // Progress goes to stderr (stdout keeps the report or the JSON): a line rewritten in place on a
  // terminal, a plain line every 10 s otherwise (logs of batch jobs).
  const tty = process.stderr.isTTY === true;
  let lastPlain = performance.now();
  const progress = (line: string): void => {
    if (tty) process.stderr.write(`\r\x1b[2K${line}`);
    else if (performance.now() - lastPlain >= 10_000) {
      lastPlain = performance.now();
      process.stderr.write(line + '\n');
    }
  };
  const replay = replayCommand(['stress', ...args], seed);
  let violations: number;
  if (values.hw) {
    if (values.processes !== undefined) throw new UsageError('--processes does not apply to --hw');
    const opsPerRound = int(values.ops, 'ops', 1, 1e9) ?? 200_000;
    const mix: StressMix = values.mix === undefined ? DEFAULT_STRESS_MIX : parseMix(values.mix, STRESS_MIX_KINDS);
    const report = await runStress({ machine, seconds, seed, opsPerRound, mix, dump: values.dump, trace: values.trace, progress }, replay);
    if (tty) process.stderr.write('\n');
    process.stdout.write(values.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report) + '\n');
    if (outputFailures(report.outputErrors)) return 2;
    violations = report.violations.length;
  } else {
    const opsPerRound = int(values.ops, 'ops', 1, 1e9) ?? 20_000;
    const processes = int(values.processes, 'processes', 1, 4096) ?? 2;
    const mix: VmMix = values.mix === undefined ? DEFAULT_VM_MIX : parseMix(values.mix, VM_MIX_KINDS);
    const report = await runVmStress({ machine, seconds, seed, processes, opsPerRound, slots: 64, mix, dump: values.dump, trace: values.trace, progress }, replay);
    if (tty) process.stderr.write('\n');
    process.stdout.write(values.json ? JSON.stringify(report, null, 2) + '\n' : formatVmReport(report) + '\n');
    if (outputFailures(report.outputErrors)) return 2;
    violations = report.violations.length;
  }
  return violations === 0 ? 0 : 1;
}

/** The campaign's own options (with a value unless boolean); every other option goes to each stress run. */
const CAMPAIGN_OPTIONS: Record<string, 'value' | 'flag'> = {
  runs: 'value', jobs: 'value', seconds: 'value', out: 'value', seed: 'value', shard: 'value', matrix: 'value', 'no-shrink': 'flag', help: 'flag',
};
/** Stress options that take no value (so the next argument is not theirs). */
const STRESS_FLAGS = new Set(['hw', 'json']);

async function campaign(args: string[]): Promise<number> {
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
  const seconds = str('seconds') === undefined ? 5 : Number(str('seconds'));
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 86_400) throw new UsageError(`--seconds must be a number of seconds above 0, got '${str('seconds')}'`);
  const firstSeed = int(str('seed'), 'seed', -(2 ** 31), 2 ** 31 - 1 - runs) ?? 1;
  const shard = str('shard') === undefined ? { index: 0, count: 1 } : parseShard(str('shard') as string, process.env);
  const matrix = str('matrix') === undefined ? [] : parseMatrix(str('matrix') as string);
  const out = str('out') ?? 'campaign.jsonl';
  const tty = process.stderr.isTTY === true;
  const summary = await runCampaign({
    runs, jobs, seconds, out, firstSeed, stressArgs, matrix, shard, shrink: own['no-shrink'] !== true,
    progress: (line) => process.stderr.write(tty ? `\r\x1b[2K${line}` : `${line}\n`),
  });
  if (tty) process.stderr.write('\n');
  process.stdout.write(formatCampaign(summary, out) + '\n');
  return summary.failing.length === 0 && summary.errors.length === 0 ? 0 : 1;
}

async function dump(args: string[]): Promise<number> {
  const { values } = parse(args, { ...machineOptions, out: { type: 'string' }, scenario: { type: 'string' }, list: { type: 'boolean' } }, 'dump');
  if (values.help) {
    process.stdout.write(DUMP_HELP);
    return 0;
  }
  if (values.list) {
    for (const s of SCENARIOS) process.stdout.write(`${s.name.padEnd(12)} ${s.summary} (needs ${s.memory})\n`);
    return 0;
  }
  if (values.out === undefined) throw new UsageError("dump: --out DIR is required (see 'nrvm help dump')");
  checkOutput('--out', values.out, 'dir');
  const name = values.scenario ?? 'varied';
  const sc = findScenario(name);
  if (!sc) throw new UsageError(`dump: unknown scenario '${name}' (known: ${SCENARIOS.map((s) => s.name).join(', ')})`);
  const opts = { cores: 2, nodes: 1, memory: '16MiB', ...machineFrom(values) };
  const m = await Machine.boot(opts, { pool: false });
  try {
    const roots = sc.build(m);
    const w = await writeDump(m, values.out, roots);
    const n = w.content.roots.map((r) => `${r.label}: ${r.mappings.length} mappings`).join(', ');
    process.stdout.write(`wrote ${w.phys} (${m.config.memoryBytes} bytes) and ${w.json} (${n})\n`);
  } finally {
    await m.shutdown();
  }
  return 0;
}

async function bench(args: string[]): Promise<number> {
  const [which, ...rest] = args;
  if (which === undefined || which === '--help' || which === '-h') {
    process.stdout.write(BENCH_HELP);
    return which === undefined ? 2 : 0;
  }
  if (which === 'fork') {
    const { values } = parse(rest, { json: { type: 'boolean' }, pages: { type: 'string' }, iterations: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, 'bench');
    if (values.help) {
      process.stdout.write(BENCH_HELP);
      return 0;
    }
    const sizes = (values.pages ?? '10000,100000').split(',').map((x) => int(x.trim(), 'pages', 1, 1_000_000) as number);
    const iterations = int(values.iterations, 'iterations', 1, 1000) ?? 3;
    const r = await runForkBench({ sizes, iterations, log: values.json ? undefined : (s) => process.stderr.write(s + '\n') });
    process.stdout.write(values.json ? JSON.stringify(r, null, 2) + '\n' : formatFork(r) + '\n');
    return 0;
  }
  if (which === 'scale') {
    const { values } = parse(rest, {
      json: { type: 'boolean' }, cores: { type: 'string' }, nodes: { type: 'string' }, workload: { type: 'string' },
      seconds: { type: 'string' }, baseline: { type: 'string' }, plot: { type: 'string' }, trace: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    }, 'bench');
    if (values.help) {
      process.stdout.write(BENCH_HELP);
      return 0;
    }
    const cores = (values.cores ?? '1,2,4').split(',').map((x) => int(x.trim(), 'cores', 1, 256) as number);
    if (new Set(cores).size !== cores.length) throw new UsageError(`--cores: each core count once, got '${values.cores}'`);
    const nodes = int(values.nodes, 'nodes', 1, 64) ?? 2;
    if (values.plot !== undefined && !/\.svg$/i.test(values.plot)) throw new UsageError(`--plot writes SVG: give a file name ending in .svg, got '${values.plot}'`);
    checkOutput('--plot', values.plot, 'file');
    checkOutput('--trace', values.trace, 'file');
    const workload = (values.workload ?? 'mixed') as ScaleWorkload;
    if (!(SCALE_WORKLOADS as readonly string[]).includes(workload)) throw new UsageError(`bench scale: unknown workload '${workload}' (known: ${SCALE_WORKLOADS.join(', ')})`);
    const seconds = values.seconds === undefined ? 2 : Number(values.seconds);
    if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 3600) throw new UsageError(`--seconds must be a number of seconds above 0, got '${values.seconds}'`);
    if (values.baseline !== undefined && values.baseline !== 'lock') throw new UsageError(`--baseline: the one baseline is 'lock', got '${values.baseline}'`);
    const r = await runScale({ cores, nodes, workload, seconds, baseline: values.baseline === 'lock', trace: values.trace, log: values.json ? undefined : (x) => process.stderr.write(x + '\n') });
    process.stdout.write(values.json ? JSON.stringify(r, null, 2) + '\n' : formatScale(r) + '\n');
    if (values.plot) {
      await writeFile(values.plot, await scalePlotSvg(r));
      if (!values.json) process.stdout.write(`plot: ${values.plot}\n`);
    }
    return 0;
  }
  if (which === 'shootdown') {
    const { values } = parse(rest, { json: { type: 'boolean' }, targets: { type: 'string' }, samples: { type: 'string' }, trace: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, 'bench');
    if (values.help) {
      process.stdout.write(BENCH_HELP);
      return 0;
    }
    const targets = (values.targets ?? '1,2,3').split(',').map((x) => int(x.trim(), 'targets', 1, 64) as number);
    const samples = int(values.samples, 'samples', 10, 1_000_000) ?? 2000;
    const r = await runShootdownBench({ targets, samples, trace: values.trace, log: values.json ? undefined : (x) => process.stderr.write(x + '\n') });
    process.stdout.write(values.json ? JSON.stringify(r, null, 2) + '\n' : formatShootdown(r) + '\n');
    return 0;
  }
  if (which !== 'micro') throw new UsageError(`bench: unknown benchmark '${which}' (known: micro, fork, scale, shootdown)`);
  const { values } = parse(rest, { json: { type: 'boolean' }, time: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, 'bench');
  if (values.help) {
    process.stdout.write(BENCH_HELP);
    return 0;
  }
  const time = int(values.time, 'time', 10, 60_000) ?? 500;
  const r = await runMicro({ timeMs: time, log: values.json ? undefined : (s) => process.stderr.write(s + '\n') });
  process.stdout.write(values.json ? JSON.stringify(r, null, 2) + '\n' : formatMicro(r) + '\n');
  return 0;
}

async function race(args: string[]): Promise<number> {
  const { values, positionals } = (() => {
    try {
      return parseArgs({ args, options: { list: { type: 'boolean' }, repeat: { type: 'string' }, json: { type: 'boolean' }, trace: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    } catch (e) {
      throw new UsageError(`race: ${(e as Error).message} (see 'nrvm help race')`);
    }
  })();
  if (values.help) {
    process.stdout.write(RACE_HELP);
    return 0;
  }
  if (values.list) {
    for (const s of SCENARIOS_RACE) process.stdout.write(`${s.name.padEnd(22)} ${s.models}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError("race: name one scenario or script file (nrvm race --list)");
  const arg = positionals[0];
  const isFile = /[\\/]|\.(c|m)?[jt]s$/.test(arg);
  const sc = isFile ? await loadRaceScript(arg) : findRace(arg);
  if (!sc) throw new UsageError(`race: unknown scenario '${arg}' (known: ${SCENARIOS_RACE.map((x) => x.name).join(', ')}; or a script file)`);
  const repeat = int(values.repeat, 'repeat', 1, 100_000) ?? 1;
  const traceFile = values.trace;
  RaceApi.onClose = traceFile ? async (m) => void (await writeChromeTrace(m, traceFile)) : undefined;
  let reproduced = 0;
  let first: RaceOutcome | undefined;
  let failure: RaceOutcome | undefined;
  for (let i = 0; i < repeat; i++) {
    const o = await sc.run();
    first ??= o;
    if (o.ok) reproduced++;
    else failure ??= o;
  }
  const shown = failure ?? first;
  if (values.json) process.stdout.write(JSON.stringify({ scenario: sc.name, models: sc.models, repeat, reproduced, steps: shown?.steps ?? [], trace: traceFile }, null, 2) + '\n');
  else {
    process.stdout.write(`race ${sc.name}: ${sc.models}\n`);
    for (const st of shown?.steps ?? []) process.stdout.write(`  ${st}\n`);
    process.stdout.write(`reproduced ${reproduced} of ${repeat}\n`);
    if (traceFile) process.stdout.write(`trace of the last run: ${traceFile}\n`);
  }
  return reproduced === repeat ? 0 : 1;
}

/** Runs the command line; returns the exit code. Never throws for bad input. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  try {
    switch (cmd) {
      case undefined:
      case '--help':
      case '-h':
        process.stdout.write(HELP);
        return cmd === undefined ? 2 : 0;
      case 'help':
        process.stdout.write(args[0] && HELPS[args[0]] ? HELPS[args[0]] : HELP);
        return args[0] && !HELPS[args[0]] ? 2 : 0;
      case '--version':
        process.stdout.write('nrvm 0.1.0\n');
        return 0;
      case 'stress':
        return await stress(args);
      case 'campaign':
        return await campaign(args);
      case 'dump':
        return await dump(args);
      case 'bench':
        return await bench(args);
      case 'race':
        return await race(args);
      case 'example': {
        if (args.length === 1 && (args[0] === '--help' || args[0] === '-h')) {
          process.stdout.write(EXAMPLE_HELP);
          return 0;
        }
        if (args[0] !== 'seed' || args.length > 1) throw new UsageError("example: the one example is 'seed' (nrvm example seed; it takes no options)");
        const sim = await seedExample((l) => process.stdout.write(l + '\n'));
        await sim.end();
        return 0;
      }
      default:
        throw new UsageError(`unknown command '${cmd}' (commands: stress, campaign, dump, bench, race, example, help)`);
    }
  } catch (e) {
    if (
      e instanceof UsageError || e instanceof ConfigError || e instanceof MachineError || e instanceof ScenarioError || e instanceof SetupError ||
      e instanceof RaceScriptError || e instanceof CampaignError
    ) {
      process.stderr.write(`nrvm: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`nrvm: internal error: ${(e as Error).message}\n`);
    if (process.env.NRVM_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    else process.stderr.write('(set NRVM_DEBUG=1 to see where)\n');
    return 70;
  }
}

const isEntry = process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isEntry || process.argv[1]?.endsWith('/nrvm')) {
  // A reader that closes the pipe early (nrvm ... | head) ends the output, not with a stack trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    // A full disk or a closed descriptor: say so, as for any output that cannot be written.
    process.stderr.write(`nrvm: could not write to standard output: ${e.message}\n`);
    process.exit(2);
  });
  // Whatever escapes main (an error in a callback, a rejected promise nobody awaited) is a bug:
  // exit 70 with the message, never 1, which means "a violation was found".
  const crash = (e: unknown): void => {
    process.stderr.write(`nrvm: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.NRVM_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    process.exit(70);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
