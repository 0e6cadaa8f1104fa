// Benchmark worker: the machine's own scaling reference for `nrvm bench scale`. On each message
// { ms }, runs a plain loop of seeded random loads over its own 4 MiB of the shared buffer for
// that long (no simulator code at all) and replies with the number of loads.
import { parentPort, workerData } from 'node:worker_threads';

const { sab, id } = workerData as { sab: SharedArrayBuffer; id: number };
const words = new Int32Array(sab, id * 4 * 2 ** 20, 2 ** 20);
let x = 1 + id;
let sink = 0;
parentPort?.on('message', (m: { ms: number }) => {
  const end = performance.now() + m.ms;
  let n = 0;
  while (performance.now() < end) {
    for (let i = 0; i < 10_000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
      sink = (sink + words[x & 0xfffff]) | 0;
    }
    n += 10_000;
  }
  parentPort?.postMessage(n + (sink & 0));
});
