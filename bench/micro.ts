// npm run bench: the micro-benchmarks of the hot paths (see src/cli/bench.ts), printed as a table
// and written as JSON to bench/results/micro.json (beside the figures the README quotes).
import { mkdir, writeFile } from 'node:fs/promises';
import { formatMicro, runMicro } from '../src/cli/bench.js';

const timeMs = Number(process.env.BENCH_TIME_MS ?? 500);
const r = await runMicro({ timeMs, log: (s) => process.stderr.write(s + '\n') });
process.stdout.write(formatMicro(r) + '\n');
const dir = new URL('../../bench/results/', import.meta.url);
await mkdir(dir, { recursive: true });
await writeFile(new URL('micro.json', dir), JSON.stringify(r, null, 2) + '\n');
process.stdout.write(`JSON: bench/results/micro.json\n`);
