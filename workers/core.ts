// Pool worker entry: one simulated core's program per task. All logic lives in src/.
import { runCoreTask } from '../src/workloads/task.js';

export default runCoreTask;
