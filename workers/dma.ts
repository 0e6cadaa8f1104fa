// The DMA engine's thread entry: it only wires the engine (src/machine/dma.ts) to the machine's shared memory.
import { workerData } from 'node:worker_threads';
import { runDmaEngine } from '../src/machine/dma.js';
import type { MachineShared } from '../src/machine/config.js';

runDmaEngine(workerData as MachineShared);
