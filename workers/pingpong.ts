// Benchmark worker: the far end of a raw Atomics ping-pong (the baseline for IPI round trips).
// Word 0: the main thread's ping counter; word 16: this worker's echo; word 32: stop flag.
import { workerData } from 'node:worker_threads';
import { pingPongEcho } from '../src/bench/micro.js';

pingPongEcho(new Int32Array(workerData.sab as SharedArrayBuffer));
