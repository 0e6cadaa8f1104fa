#!/usr/bin/env node
// The nrvm command. Arguments are parsed with node:util parseArgs; every mistake is a message that
// names it and exit code 2, never a stack trace. Exit codes: 0 success, 1 violations (or a failed
// run), 2 bad usage or a machine that cannot be built, 70 an internal error.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { randomInt } from 'node:crypto';
import { ConfigError, Machine, MachineError } from '../machine/machine.js';
import { HW_INJECTIONS, DEFAULTS, parseSize, type MachineOptions } from '../hw/config.js';
import { writeDump } from '../machine/dump.js';
import { SCENARIOS, ScenarioError, findScenario } from '../workloads/scenarios.js';
import { DEFAULT_STRESS_MIX, STRESS_MIX_KINDS, SetupError, type StressMix } from '../workloads/hwstress.js';
import { formatReport, runStress } from './stress.js';
import { formatMicro, runMicro } from './bench.js';

export const HELP = `nrvm — a hardware-faithful emulator of a multi-core NUMA x86-64 memory system

Usage: nrvm <command> [options]

Commands:
  stress              stress run: every core runs seeded random programs over shared page
                      tables while oracles check each round (the default job: npm start)
  dump                write a scenario's physical memory (phys.bin) and machine.json
  bench micro         micro-benchmarks of the hot paths: TLB hit, walk, IPI round trip
  help [command]      this text, or one command's options

Run 'nrvm help <command>' for its options. Exit codes: 0 ok, 1 violations found,
2 bad usage or a machine that cannot be built.
`;

const MACHINE_HELP = `Machine options:
  --cores N           simulated cores, one worker thread each (default ${DEFAULTS.cores}; may exceed real cores)
  --nodes N           NUMA nodes, each a contiguous range of frames (default ${DEFAULTS.nodes})
  --memory SIZE       physical memory, e.g. 64MiB, 1GiB (default ${DEFAULTS.memoryBytes / 2 ** 20}MiB)
  --ipi-slots N       IPI queue slots per core, a power of two >= 2 (default ${DEFAULTS.ipiQueueSlots})
  --wait-limit MS     bound on any single wait before a core reports what it waited for (default ${DEFAULTS.waitLimitMs})
`;

const STRESS_HELP = `Usage: nrvm stress [options]

Every core runs a seeded random program of loads, stores, fetches, INVLPGs, IPIs, walks of a
page whose entry core 0 rewrites (break-before-make), and compareExchange flips of entry bits
racing the walkers' A/D updates. After each round the oracles check: IPIs delivered exactly
once, no torn translation, no lost entry update, no core failure.

${MACHINE_HELP}
Run options:
  --seconds S         how long to run, in rounds of --ops operations per core (default 10)
  --seed N            seed of every program (default: random; printed for replay)
  --ops N             operations per core per round (default 200000)
  --mix K=W,...       weights of ${STRESS_MIX_KINDS.join(', ')}
                      (kinds not named get 0; default ${Object.entries(DEFAULT_STRESS_MIX).map(([k, v]) => `${k}=${v}`).join(',')})
  --inject NAME       inject a fault to see an oracle catch it: ${HW_INJECTIONS.join(', ')}
  --json              print the report as one JSON object instead of text
  --dump DIR          at the end, write DIR/phys.bin and DIR/machine.json

Example: nrvm stress --cores 8 --nodes 2 --seconds 20 --seed 7
`;

const DUMP_HELP = `Usage: nrvm dump --out DIR [--scenario NAME] [machine options]

Builds a scenario's page tables directly in physical memory and writes DIR/phys.bin (the raw
image, physical address 0 at byte 0) and DIR/machine.json (memoryBytes, cores, nodes, and the
roots with their mappings, read without touching A/D bits).

  --out DIR           where to write (created if missing)
  --scenario NAME     one of: ${SCENARIOS.map((s) => s.name).join(', ')} (default varied)
  --list              list the scenarios

${MACHINE_HELP}
Example: nrvm dump --out /tmp/nrvm-dump --scenario varied
`;

const BENCH_HELP = `Usage: nrvm bench micro [--json] [--time MS]

Measures, with tinybench, on this machine:
  a load through a TLB hit vs a plain typed-array load, same addresses (4 KiB and 2 MiB pages)
  a 4-level walk on a TLB miss (A/D already set) vs four dependent plain loads
  an IPI round trip to a polling core and to a halted core vs a raw Atomics ping-pong

  --json              print one JSON object (figures, ratios, Node version, machine)
  --time MS           time per task (default 500)

Example: nrvm bench micro --json
`;

const HELPS: Record<string, string> = { stress: STRESS_HELP, dump: DUMP_HELP, bench: BENCH_HELP };

/** A usage mistake: printed as "nrvm: message" with exit code 2. */
export class UsageError extends Error {}

const machineOptions = {
  cores: { type: 'string' },
  nodes: { type: 'string' },
  memory: { type: 'string' },
  'ipi-slots': { type: 'string' },
  'wait-limit': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, command: string) {
  try {
    return parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message.replace(/\. To specify a positional.*$/, '')} (see 'nrvm help ${command}')`);
  }
}

function int(v: string | undefined, name: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v)) throw new UsageError(`--${name} must be a whole number, got '${v}'`);
  const n = Number(v);
  if (n < min || n > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function machineFrom(values: Record<string, unknown>): MachineOptions {
  const o: MachineOptions = {};
  const cores = int(values.cores as string | undefined, 'cores', -1e9, 1e9);
  const nodes = int(values.nodes as string | undefined, 'nodes', -1e9, 1e9);
  if (cores !== undefined) o.cores = cores;
  if (nodes !== undefined) o.nodes = nodes;
  if (values.memory !== undefined) {
    const s = parseSize(values.memory as string);
    if (s === null) throw new UsageError(`--memory must be a size such as 64MiB or 1GiB, got '${String(values.memory)}'`);
    o.memory = s;
  }
  const slots = int(values['ipi-slots'] as string | undefined, 'ipi-slots', -1e9, 1e9);
  if (slots !== undefined) o.ipiQueueSlots = slots;
  const wait = int(values['wait-limit'] as string | undefined, 'wait-limit', -1e9, 1e9);
  if (wait !== undefined) o.waitLimitMs = wait;
  return o;
}

/** Parses "load=60,store=30": named kinds get their weight, the others 0. */
export function parseMix(text: string): StressMix {
  const mix = Object.fromEntries(STRESS_MIX_KINDS.map((k) => [k, 0])) as StressMix;
  for (const part of text.split(',')) {
    const m = /^\s*([a-z]+)\s*=\s*(\d+(?:\.\d+)?)\s*$/.exec(part);
    if (!m) throw new UsageError(`--mix: '${part}' is not KIND=WEIGHT (kinds: ${STRESS_MIX_KINDS.join(', ')})`);
    if (!(STRESS_MIX_KINDS as readonly string[]).includes(m[1])) {
      throw new UsageError(`--mix: unknown kind '${m[1]}' (kinds: ${STRESS_MIX_KINDS.join(', ')})`);
    }
    mix[m[1] as keyof StressMix] = Number(m[2]);
  }
  if (Object.values(mix).every((w) => w === 0)) throw new UsageError('--mix: at least one weight must be above 0');
  return mix;
}

function replayCommand(argv: string[], seed: number): string {
  const rest = argv.filter((a, i) => !(a === '--seed' || a.startsWith('--seed=') || (i > 0 && argv[i - 1] === '--seed')) && a !== '--json');
  return ['nrvm', ...rest, '--seed', String(seed)].join(' ');
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
  }, 'stress');
  if (values.help) {
    process.stdout.write(STRESS_HELP);
    return 0;
  }
  const machine = machineFrom(values);
  const inject = (values.inject ?? []).flatMap((s) => s.split(',')).filter(Boolean);
  for (const i of inject) {
    if (!(HW_INJECTIONS as readonly string[]).includes(i)) throw new UsageError(`--inject: unknown fault '${i}' (known: ${HW_INJECTIONS.join(', ')})`);
  }
  machine.inject = inject;
  const seconds = values.seconds === undefined ? 10 : Number(values.seconds);
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > 86_400) throw new UsageError(`--seconds must be a number of seconds from 0 to 86400, got '${values.seconds}'`);
  const seed = int(values.seed, 'seed', -(2 ** 31), 2 ** 32 - 1) ?? randomInt(2 ** 31);
  const opsPerRound = int(values.ops, 'ops', 1, 1e9) ?? 200_000;
  const mix = values.mix === undefined ? DEFAULT_STRESS_MIX : parseMix(values.mix);
  const tty = process.stderr.isTTY && !values.json;
  const report = await runStress(
    {
      machine, seconds, seed, opsPerRound, mix, dump: values.dump,
      progress: tty ? (line) => process.stderr.write(`\r\x1b[2K${line}`) : undefined,
    },
    replayCommand(['stress', ...args], seed),
  );
  if (tty) process.stderr.write('\n');
  process.stdout.write(values.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report) + '\n');
  return report.violations.length === 0 ? 0 : 1;
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
  if (!values.out) throw new UsageError("dump: --out DIR is required (see 'nrvm help dump')");
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
  if (which !== 'micro') throw new UsageError(`bench: unknown benchmark '${which}' (known: micro)`);
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
      case 'dump':
        return await dump(args);
      case 'bench':
        return await bench(args);
      default:
        throw new UsageError(`unknown command '${cmd}' (commands: stress, dump, bench, help)`);
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError || e instanceof MachineError || e instanceof ScenarioError || e instanceof SetupError) {
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
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
