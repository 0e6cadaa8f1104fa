// The device's DMA engine as its own thread (workers/dma.ts): not a core, it takes the requests
// cores post through the device's REG_DMA register and reads or writes the exported frames in
// physical memory while the cores run. Between requests it sleeps on the ring's tail. Each frame
// it touches is put to the frame-owner oracle (does the exporting space still own it?); a frame
// that was unmapped and handed to someone else is a violation the stress run reports.

import { Device } from '../hw/device.js';
import { DEV_DMA_TAIL, DEV_ENGINE, Layout } from '../hw/layout.js';
import { OWNER_SPACES } from '../kernel/refs.js';
import { kernelLayouts } from '../kernel/context.js';
import type { MachineShared } from './config.js';

export const ENGINE_OFF = 0;
export const ENGINE_RUNNING = 1;
export const ENGINE_STOP = 2;
/** Longest sleep between two looks at the stop word, in ms. */
const IDLE_MS = 50;

/** The frame-owner oracle's question for the engine, over the kernel's owner table. */
export function ownerCheck(shared: MachineShared): (pfn: number, s: number) => boolean {
  const c = shared.config;
  const { klayout } = kernelLayouts(c.cores, c.nodes, c.memoryBytes, c.kernel);
  const k = new Int32Array(shared.kernel);
  return (pfn, s) => s >= OWNER_SPACES || (Atomics.load(k, klayout.ownerBase + pfn) & (1 << s)) !== 0;
}

/** Runs the engine until the controller asks it to stop. Errors of one request are counted in the device's error register. */
export function runDmaEngine(shared: MachineShared): void {
  const layout = new Layout(shared.config);
  const ctl = new Int32Array(shared.control);
  const dev = new Device(layout, ctl, new Int32Array(shared.phys));
  const owns = ownerCheck(shared);
  const stop = layout.devBase + DEV_ENGINE;
  const tail = layout.devBase + DEV_DMA_TAIL;
  // A machine shut down before this thread started has asked it to stop already: then it never runs.
  if (Atomics.compareExchange(ctl, stop, ENGINE_OFF, ENGINE_RUNNING) !== ENGINE_OFF) return;
  while (Atomics.load(ctl, stop) === ENGINE_RUNNING) {
    let done;
    try {
      done = dev.serviceOne(owns);
    } catch (e) {
      process.stderr.write(`nrvm: DMA engine: ${(e as Error).message}\n`);
      done = null;
    }
    if (done !== null) continue;
    const t = Atomics.load(ctl, tail);
    if (dev.inFlight() === 0) Atomics.wait(ctl, tail, t, IDLE_MS);
  }
  Atomics.store(ctl, stop, ENGINE_OFF);
}
