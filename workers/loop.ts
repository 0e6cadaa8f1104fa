// Benchmark worker: the scaling reference of `nrvm bench scale` (src/bench/loop.ts). Wiring only.
import { parentPort, workerData } from 'node:worker_threads';
import { serveLoadLoop } from '../src/bench/loop.js';

const { sab, id } = workerData as { sab: SharedArrayBuffer; id: number };
if (parentPort) serveLoadLoop(parentPort, sab, id);
