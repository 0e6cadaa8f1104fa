// The worker runtime: the body of a pool worker's task. Attach the machine's shared buffers (once
// per machine and worker), take the core, build the program's source (with the source maker the
// worker's entry injects: workloads/ sits above this layer), run it, release the core. Every
// failure comes back as a CoreResult with ok = false and a message, never as a thrown error.

import { Cpu } from '../hw/cpu.js';
import { abortRun } from './runctl.js';
import { Layout } from '../hw/layout.js';
import { execute, failedResult, type CoreResult, type ExecOptions } from './executor.js';
import type { ProgramSource, ProgramSpec } from './program.js';
import type { CoreTask } from './machine.js';
import { Device } from '../hw/device.js';
import { Kernel, kernelLayouts } from '../kernel/context.js';
import { Frames } from '../hw/frames.js';
import * as shootdowns from '../kernel/shootdown.js';

interface Attached {
  layout: Layout;
  ctl: Int32Array;
  mem: Int32Array;
  trace?: SharedArrayBuffer;
  cpus: Map<number, Cpu>;
  kernel: Kernel;
}

const attached = new Map<string, Attached>();

function attach(task: CoreTask): Attached {
  let a = attached.get(task.shared.id);
  if (!a) {
    // One machine at a time per worker in practice; forget older ones so their memory can go.
    attached.clear();
    const layout = new Layout(task.shared.config);
    const ctl = new Int32Array(task.shared.control);
    const mem = new Int32Array(task.shared.phys);
    const { klayout, nrLayout } = kernelLayouts(task.shared.config.cores, task.shared.config.nodes, task.shared.config.memoryBytes, task.shared.config.kernel);
    const config = task.shared.config;
    a = {
      layout, ctl, mem, cpus: new Map(), trace: task.shared.trace,
      kernel: new Kernel({
        klayout, k: new Int32Array(task.shared.kernel), nrLayout, nrw: new Int32Array(task.shared.nr), mem,
        frames: new Frames(layout, ctl, mem),
        replicaOf: Array.from({ length: config.cores }, (_, c) => layout.nodeOfCore(c)),
        waitLimitMs: config.waitLimitMs, inject: config.inject, cow: config.kernel.cow, mode: config.kernel.mode, personality: config.kernel.personality, khalf: config.kernel.khalf, mshareFlush: config.kernel.mshareFlush,
      device: layout.devicePages > 0 ? new Device(layout, ctl, mem) : undefined,
      }),
    };
    attached.set(task.shared.id, a);
  }
  return a;
}

/** Builds a core's program source from its spec (throws on a bad program). */
export type SourceMaker = (program: CoreTask['program'], core: number) => ProgramSource;

/** Runs task.program on task.core, its source built by makeSource. Any pool worker. */
export function runCoreTask(task: CoreTask, makeSource: SourceMaker): CoreResult {
  const a = attach(task);
  let cpu = a.cpus.get(task.core);
  if (!cpu) {
    cpu = new Cpu(a, task.core);
    shootdowns.installHandlers(a.kernel, cpu);
    a.cpus.set(task.core, cpu);
  }
  if (!cpu.attach()) return failedResult(task.core, `core ${task.core} is already running on another thread`);
  try {
    let src;
    try {
      src = makeSource(task.program, task.core);
    } catch (e) {
      abortRun(cpu);
      return failedResult(task.core, `core ${task.core}: program: ${(e as Error).message}`);
    }
    // (Stress programs only: the warm-up and programs of ops run as they are.)
    if (task.shared.config.inject.includes('core-crash') && task.program.kind.endsWith('-mix') && task.core === Math.max(...task.peers)) {
      // Injected: the worker dies as one that ran out of memory or hit a bug in Node would.
      process.exit(70);
    }
    return execute(cpu, src, {
      record: task.program.record === true,
      stopOnFault: task.program.stopOnFault === true,
      peers: task.peers,
      barrier: task.barrier,
      kernel: a.kernel,
      checkOwner: task.program.checkOwner === true,
      latency: task.program.latency === true,
      heap: task.program.heap === true,
      durationMs: task.program.durationMs,
      endsAt: task.program.endsAt,
      share: task.program.kind === 'vm-mix' && task.program.share !== undefined ? shareOf(task.program) : undefined,
      threads: task.program.kind === 'vm-mix' && typeof task.program.threads === 'number' ? task.program.threads : undefined,
    });
  } finally {
    cpu.detach();
  }
}

/** A vm-mix program's sharing (workloads/sources.ts VmMixProgram: its mode and region, read here as plain fields). */
function shareOf(p: ProgramSpec): ExecOptions['share'] {
  return { mode: p.share as 'rpal' | 'mshare', regionBase: Number(p.regionBase), pages: Number(p.cores) * Number(p.slots) };
}
