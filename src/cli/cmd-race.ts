// `nrvm race`: a known race scenario, or a user's race script, replayed and checked.

import { writeChromeTrace } from '../trace/chrome.js';
import { RaceApi, SCENARIOS_RACE, findRace, loadRaceScript, type RaceOutcome } from '../workloads/races.js';
import { parseArgs } from 'node:util';
import { UsageError, int } from './args.js';

export const RACE_HELP = `Usage: nrvm race --list
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

export async function race(args: string[]): Promise<number> {
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
    if (positionals.length > 0 || values.repeat !== undefined || values.trace !== undefined) throw new UsageError('race --list takes nothing else (nrvm race --list)');
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
