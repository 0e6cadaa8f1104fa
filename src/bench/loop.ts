// The machine's own scaling reference for `nrvm bench scale` (run by workers/loop.ts): on each
// message { ms }, a plain loop of seeded random loads over this worker's own 4 MiB of the shared
// buffer for that long — no simulator code at all — answered with the number of loads.

import type { MessagePort } from 'node:worker_threads';

/** Serves `port`: each { ms } message runs the loop that long and replies with its load count. */
export function serveLoadLoop(port: MessagePort, sab: SharedArrayBuffer, id: number): void {
  const words = new Int32Array(sab, id * 4 * 2 ** 20, 2 ** 20);
  let x = 1 + id;
  let sink = 0;
  port.on('message', (m: { ms: number }) => {
    const end = performance.now() + m.ms;
    let n = 0;
    while (performance.now() < end) {
      for (let i = 0; i < 10_000; i++) {
        x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
        sink = (sink + words[x & 0xfffff]) | 0;
      }
      n += 10_000;
    }
    port.postMessage(n + (sink & 0));
  });
}
