#!/usr/bin/env node
// The nrvm command: dispatch to one file per command (cmd-*.ts, each with its own help; the
// shared option parsing is args.ts). Every mistake is a message that names it and exit code 2,
// never a stack trace. Exit codes: 0 success, 1 violations (or a failed run), 2 bad usage, a
// machine that cannot be built or an output that cannot be written, 70 an internal error.

import { ConfigError, MachineError } from '../machine/machine.js';
import { ScenarioError } from '../workloads/scenarios.js';
import { SetupError } from '../workloads/hwstress.js';
import { seedExample } from '../machine/simulator.js';
import { RaceScriptError } from '../workloads/races.js';
import { CampaignError } from './campaign.js';
import { UsageError } from './args.js';
import { STRESS_HELP, stress } from './cmd-stress.js';
import { CAMPAIGN_HELP, campaign } from './cmd-campaign.js';
import { DUMP_HELP, dump } from './cmd-dump.js';
import { BENCH_HELP, bench } from './cmd-bench.js';
import { RACE_HELP, race } from './cmd-race.js';
import { MH_HELP, mh } from './cmd-mh.js';

export const HELP = `nrvm — a hardware-faithful emulator of a multi-core NUMA x86-64 memory system

Usage: nrvm <command> [options]

Commands:
  stress              stress run: every core runs seeded programs of map/unmap/adjust/resolve and
                      accesses against node-replicated address spaces, with oracles (npm start);
                      --hw runs the hardware-level stress instead
  campaign            many seeded stress runs as child processes, results as JSON lines,
                      resumable and shardable (Slurm, Kubernetes, GNU parallel); failing seeds shrunk
  dump                write a scenario's physical memory (phys.bin) and machine.json
  bench micro|fork|scale|shootdown|khalf
                      micro-benchmarks of the hot paths; fork against a byte copy;
                      throughput across core counts, NR against a lock baseline;
                      shootdown round trips to 1..N target cores; os5's three ways
                      of keeping the kernel half in sync, over 8..4096 address spaces
  example seed        the seed's Simulator program (3 forks, 1024 writes) on the emulator
  race NAME|FILE      replay a race deterministically (breakpoints and handshakes); --list
  mh states           MH's mapping-state diagram as a short --kernel mh run observed it (SVG or DOT)
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

const HELPS: Record<string, string> = { stress: STRESS_HELP, campaign: CAMPAIGN_HELP, dump: DUMP_HELP, bench: BENCH_HELP, race: RACE_HELP, mh: MH_HELP, example: EXAMPLE_HELP };

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
        if (args[0] && !HELPS[args[0]]) throw new UsageError(`help: no command '${args[0]}' (commands: ${Object.keys(HELPS).join(', ')})`);
        process.stdout.write(args[0] ? HELPS[args[0]] : HELP);
        return 0;
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
      case 'mh':
        return await mh(args);
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
        throw new UsageError(`unknown command '${cmd}' (commands: stress, campaign, dump, bench, race, mh, example, help)`);
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
