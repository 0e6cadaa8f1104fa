// npm run bench: the micro-benchmarks of the hot paths and the fork benchmark (src/bench/micro.ts, src/bench/fork.ts),
// printed as tables and written as JSON to bench/results/ (beside the figures the README quotes).
import { mkdir, writeFile } from 'node:fs/promises';
import { formatMicro, runMicro } from '../src/bench/micro.js';
import { formatFork, runForkBench } from '../src/bench/fork.js';

const timeMs = Number(process.env.BENCH_TIME_MS ?? 500);
const r = await runMicro({ timeMs, log: (s) => process.stderr.write(s + '\n') });
process.stdout.write(formatMicro(r) + '\n');
const dir = new URL('../../bench/results/', import.meta.url);
await mkdir(dir, { recursive: true });
await writeFile(new URL('micro.json', dir), JSON.stringify(r, null, 2) + '\n');
const f = await runForkBench({ sizes: [10_000, 100_000], iterations: 3, log: (s) => process.stderr.write(s + '\n') });
process.stdout.write(formatFork(f) + '\n');
await writeFile(new URL('fork.json', dir), JSON.stringify(f, null, 2) + '\n');
process.stdout.write(`JSON: bench/results/micro.json, bench/results/fork.json\n`);
