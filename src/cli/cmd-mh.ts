// `nrvm mh states`: a short MH stress run, and the state diagram it observed (SVG or DOT).

import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { DEFAULT_MH_MIX, runVmStress } from './vmstress.js';
import { MACHINE_HELP, UsageError, checkOutput, int, machineFrom, machineOptions, parse, replayCommand, secondsArg } from './args.js';
import { renderSvg, statesDot } from './mhdiagram.js';

export const MH_HELP = `Usage: nrvm mh states [options]

Runs the address-space stress under the MH kernel personality (--kernel mh, its default mix) for
--seconds and draws MH's state diagram as the run observed it: nodes are the seed's states
(Unmapped, I/O, Private RO/RW, Wired RO/RW, RO-Shared; dashed when the run never reached one),
edges the transitions taken, labelled with the operation and how often; refused operations
(EINVAL, EPERM, EBUSY...) are dashed loops. Rendered by Graphviz (WebAssembly build). Hold it
against the seed's Refinement 3. The run's oracles apply: a violation exits 1.

${MACHINE_HELP}
Options:
  --out FILE          write the diagram there (default: standard output)
  --dot               Graphviz DOT text instead of SVG
  --seconds S         how long to run (default 3)
  --seed N            seed (default: random; printed for replay)
  --processes N       address spaces (default 2)

Examples:
  nrvm mh states --out states.svg
  nrvm mh states --dot --seconds 1 --seed 7 > states.dot
`;

export async function mh(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '--help' || sub === '-h' || sub === undefined && args.length === 0) {
    process.stdout.write(MH_HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'states') throw new UsageError(`mh: unknown subcommand '${sub}' (the one is 'states': nrvm mh states --out states.svg)`);
  const { values } = parse(rest, {
    ...machineOptions, out: { type: 'string' }, dot: { type: 'boolean' }, seconds: { type: 'string' }, seed: { type: 'string' }, processes: { type: 'string' },
  }, 'mh');
  if (values.help) {
    process.stdout.write(MH_HELP);
    return 0;
  }
  if (values.kernel !== undefined && values.kernel !== 'mh') throw new UsageError(`mh states runs the MH kernel; --kernel ${values.kernel} does not apply`);
  if (values.cow !== undefined) throw new UsageError('--cow does not apply to mh states (MH has its own copy-on-write)');
  const machine = machineFrom({ ...values, kernel: 'mh' });
  const seconds = secondsArg(values.seconds, 3, 3600, false);
  checkOutput('--out', values.out, 'file');
  const seed = int(values.seed, 'seed', -(2 ** 31), 2 ** 32 - 1) ?? randomInt(2 ** 31);
  const processes = int(values.processes, 'processes', 1, 4096) ?? 2;
  const replay = replayCommand(['mh', ...args], seed);
  const report = await runVmStress({ machine, seconds, seed, processes, opsPerRound: 20_000, slots: 64, mix: DEFAULT_MH_MIX }, replay);
  const transitions = report.mh?.transitions ?? {};
  const title = `MH states as observed: ${report.config.cores} cores, ${report.seconds.toFixed(1)} s, seed ${seed}`;
  const dot = statesDot(transitions, title);
  const text = values.dot ? dot : await renderSvg(dot);
  if (values.out) {
    try {
      writeFileSync(values.out, text);
    } catch (e) {
      process.stderr.write(`nrvm: could not write ${values.out}: ${(e as Error).message}\n`);
      return 2;
    }
    process.stderr.write(`nrvm: ${Object.keys(transitions).length} kinds of transition drawn to ${values.out} (replay: ${replay})\n`);
  } else process.stdout.write(text);
  for (const v of report.violations) process.stderr.write(`nrvm: violation (round ${v.round}) ${v.kind}: ${v.detail}\n`);
  return report.violations.length === 0 ? 0 : 1;
}
