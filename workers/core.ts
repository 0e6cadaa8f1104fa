// Pool worker entry: one simulated core's program per task. It only wires the worker runtime
// (src/machine/worker.ts) to the program sources (src/workloads/sources.ts).
import type { CoreTask } from '../src/machine/machine.js';
import { runCoreTask } from '../src/machine/worker.js';
import { makeSource } from '../src/workloads/sources.js';

export default (task: CoreTask) => runCoreTask(task, makeSource);
