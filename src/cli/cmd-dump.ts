// `nrvm dump`: a scenario's page tables built in physical memory, written as phys.bin and machine.json.

import { Machine } from '../machine/machine.js';
import { writeDump } from '../machine/dump.js';
import { SCENARIOS, findScenario } from '../workloads/scenarios.js';
import { MACHINE_HELP, UsageError, checkOutput, machineFrom, machineOptions, parse } from './args.js';

export const DUMP_HELP = `Usage: nrvm dump --out DIR [--scenario NAME] [machine options]

Builds a scenario's page tables directly in physical memory and writes DIR/phys.bin (the raw
image, physical address 0 at byte 0) and DIR/machine.json (memoryBytes, cores, nodes, and the
roots with their mappings, read without touching A/D bits).

  --out DIR           where to write (created if missing)
  --scenario NAME     one of: ${SCENARIOS.map((s) => s.name).join(', ')} (default varied)
  --list              list the scenarios

${MACHINE_HELP}(dump's own defaults: --cores 2 --nodes 1 --memory 16MiB)

Example: nrvm dump --out /tmp/nrvm-dump --scenario varied
`;

export async function dump(args: string[]): Promise<number> {
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
  // The scenarios build page tables directly: no kernel runs, so its options would be ignored.
  for (const k of ['kernel', 'cow', 'log-entries', 'max-batch', 'khalf'] as const) {
    if (values[k] !== undefined) throw new UsageError(`dump: --${k} does not apply (the dump scenarios build page tables directly, with no kernel)`);
  }
  checkOutput('--out', values.out, 'dir');
  const name = values.scenario ?? 'varied';
  const sc = findScenario(name);
  if (!sc) throw new UsageError(`dump: unknown scenario '${name}' (known: ${SCENARIOS.map((s) => s.name).join(', ')})`);
  const opts = { cores: 2, nodes: 1, memory: '16MiB', ...machineFrom(values) };
  const m = await Machine.boot(opts, { pool: false });
  try {
    const roots = sc.build(m);
    const w = await writeDump(m, values.out, roots, (done, total) => process.stderr.write(`dump: ${done / 2 ** 30} of ${total / 2 ** 30} GiB\n`));
    const n = w.content.roots.map((r) => `${r.label}: ${r.mappings.length} mappings`).join(', ');
    process.stdout.write(`wrote ${w.phys} (${m.config.memoryBytes} bytes) and ${w.json} (${n})\n`);
  } finally {
    await m.shutdown();
  }
  return 0;
}
