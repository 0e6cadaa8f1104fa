// `nrvm bench micro|fork|scale|shootdown|khalf|share`: the benchmarks of src/bench, as tables or JSON.

import { writeFile } from 'node:fs/promises';
import { formatMicro, runMicro } from '../bench/micro.js';
import { formatFork, runForkBench } from '../bench/fork.js';
import { formatShootdown, runShootdownBench } from '../bench/shootdown.js';
import { SCALE_WORKLOADS, formatScale, runScale, type ScaleWorkload } from '../bench/scale.js';
import { khalfPlotSvg, scalePlotSvg } from '../bench/plot.js';
import { formatKhalf, runKhalfBench } from '../bench/khalf.js';
import { formatShare, runShareBench } from '../bench/share.js';
import { MAX_SPACES } from '../machine/config.js';
import { UsageError, checkOutput, int, parse, secondsArg } from './args.js';

export const BENCH_HELP = `Usage: nrvm bench micro [--json] [--time MS]
       nrvm bench fork [--json] [--pages N,N] [--iterations K]
       nrvm bench scale [--cores 1,2,4] [--nodes N] [--workload NAME] [--seconds S] [--baseline lock] [--json] [--plot FILE.svg] [--trace FILE.json]
       nrvm bench shootdown [--targets 1,2,3] [--samples N] [--json] [--trace FILE.json]
       nrvm bench khalf [--spaces 8,64,512,4096] [--reps K] [--json] [--plot FILE.svg]
       nrvm bench share [--json] [--time MS]

Measures, with tinybench, on this machine:
  a load through a TLB hit vs a plain typed-array load, same addresses (4 KiB and 2 MiB pages)
  a 4-level walk on a TLB miss (A/D already set) vs four dependent plain loads
  an IPI round trip to a polling core and to a halted core vs a raw Atomics ping-pong
  floors, on the same patterns: a direct-mapped one-compare lookup, and a walk that only
  indexes, loads, tests P and follows (the least any software translation does)

  --json              print one JSON object (figures, ratios, Node version, machine)
  --time MS           time per task (default 500)

fork: a copy-on-write fork of an address space of N mapped pages (default 10000 and 100000),
against a plain byte copy of the same page tables, measured in the same run, with the fork's
phases (its log entry, each child replica, the references) and the floor of the references
(two atomic read-modify-writes per page).

scale: address-space operations per second at each core count, node replication and (with
--baseline lock) one copy of the page tables behind one reader/writer lock, same workloads,
same run: maponly (a fresh frame at a fresh address every time, a new space each round),
unmap, resolve, access, mixed (default). Latencies of map and unmap (with its shootdown; the
first 64 of a round, then one in 16, timed) at p50 and p99, TLB hit rate, mean combining batch, heap bytes the workers
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

khalf: os5's three ways of keeping the kernel half in sync (eager, switch, lazy) side by side as
the number of address spaces grows: the cost of adding a top-level kernel entry and of removing
it (lazy cannot), the cost of a switch into a space after a change, kernel faults per switch,
and the top-level entries (and bytes) written into address spaces per change. At most 4096
address spaces (kernel.maxSpaces). --plot draws the costs as SVG.

share: RPAL's costs on one core (no IPIs): a call and its return (a user-context switch, no
CR3 load) against a process switch and back (two CR3 loads, PCIDs kept), and an unmap + map of
a page in a slot shared into another space against one nobody shares (the sharer's part of the
shootdown path). --time MS per task (default 500).

Examples:
  nrvm bench micro --json
  nrvm bench share
  nrvm bench khalf --spaces 8,64,512 --plot khalf.svg
  nrvm bench fork --pages 10000
  nrvm bench scale --cores 1,2,4 --nodes 2 --workload resolve --seconds 2 --baseline lock --plot scale.svg
`;

export async function bench(args: string[]): Promise<number> {
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
    // A point has min(nodes, cores) nodes; nodes above every core count would never be used.
    if (values.nodes !== undefined && nodes > Math.max(...cores)) throw new UsageError(`--nodes ${nodes} exceeds every core count (${cores.join(',')}): a node needs a core`);
    if (values.plot !== undefined && !/\.svg$/i.test(values.plot)) throw new UsageError(`--plot writes SVG: give a file name ending in .svg, got '${values.plot}'`);
    checkOutput('--plot', values.plot, 'file');
    checkOutput('--trace', values.trace, 'file');
    const workload = (values.workload ?? 'mixed') as ScaleWorkload;
    if (!(SCALE_WORKLOADS as readonly string[]).includes(workload)) throw new UsageError(`bench scale: unknown workload '${workload}' (known: ${SCALE_WORKLOADS.join(', ')})`);
    const seconds = secondsArg(values.seconds, 2, 3600, false);
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
  if (which === 'share') {
    const { values } = parse(rest, { json: { type: 'boolean' }, time: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, 'bench');
    if (values.help) {
      process.stdout.write(BENCH_HELP);
      return 0;
    }
    const r = await runShareBench({ timeMs: int(values.time, 'time', 10, 60_000) ?? 500 });
    process.stdout.write(values.json ? JSON.stringify(r, null, 2) + '\n' : formatShare(r) + '\n');
    return 0;
  }
  if (which === 'khalf') {
    const { values } = parse(rest, { json: { type: 'boolean' }, spaces: { type: 'string' }, reps: { type: 'string' }, plot: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, 'bench');
    if (values.help) {
      process.stdout.write(BENCH_HELP);
      return 0;
    }
    const counts = (values.spaces ?? '8,64,512,4096').split(',').map((x) => int(x.trim(), 'spaces', 1, MAX_SPACES) as number);
    if (new Set(counts).size !== counts.length) throw new UsageError(`--spaces: each count once, got '${values.spaces}'`);
    const reps = int(values.reps, 'reps', 1, 64) ?? 5;
    if (values.plot !== undefined && !/\.svg$/i.test(values.plot)) throw new UsageError(`--plot writes SVG: give a file name ending in .svg, got '${values.plot}'`);
    checkOutput('--plot', values.plot, 'file');
    const r = await runKhalfBench({ counts, reps, log: values.json ? undefined : (x) => process.stderr.write(x + '\n') });
    process.stdout.write(values.json ? JSON.stringify(r, null, 2) + '\n' : formatKhalf(r) + '\n');
    if (values.plot) {
      await writeFile(values.plot, await khalfPlotSvg(r));
      if (!values.json) process.stdout.write(`plot: ${values.plot}\n`);
    }
    return 0;
  }
  if (which !== 'micro') throw new UsageError(`bench: unknown benchmark '${which}' (known: micro, fork, scale, shootdown, khalf, share)`);
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
