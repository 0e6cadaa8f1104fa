// `nrvm bench shootdown`: the round trip of one page's shootdown from one initiator to 1..N
// target cores that run the space (median and p99).

import { Machine } from '../machine/machine.js';
import { vaHi, vaLo } from '../hw/vaddr.js';
import { IPI_STOP } from '../hw/apic.js';
import { writeChromeTrace } from '../trace/chrome.js';
import * as procs from '../kernel/proc.js';
import * as refs from '../kernel/refs.js';
import * as shootdowns from '../kernel/shootdown.js';
import * as spaces from '../kernel/space.js';
import * as vm from '../kernel/vm.js';
import { machineInfo, type MicroResult } from './micro.js';

// Shootdown latency: one initiator (core 0, this thread) and 1..N target cores running the space
// (each in a loop of loads that polls for interrupts at every access); the round trip of one
// page's shootdown — requests, local invalidation, every ack — median and p99.

export interface ShootdownResult {
  node: string;
  machine: MicroResult['machine'];
  rows: { targets: number; p50Ns: number; p99Ns: number; samples: number }[];
  note: string;
}

export async function runShootdownBench(o: {
  targets: number[]; samples: number; log?: (s: string) => void;
  /** Trace every target count into FILE with "-<targets>" before its extension. */
  trace?: string;
}): Promise<ShootdownResult> {
  const rows: ShootdownResult['rows'] = [];
  for (const n of o.targets) {
    o.log?.(`bench: shootdown to ${n} target core(s)...`);
    const m = await Machine.boot({ cores: n + 1, nodes: 1, memory: '32MiB', trace: o.trace !== undefined });
    try {
      const k = m.kernel;
      const s = spaces.createSpace(k);
      procs.spawn(k, s, -1);
      for (let c = 0; c <= n; c++) m.setRegisters(c, { cpl: 3 });
      const cpu = m.attachHere(0);
      shootdowns.installHandlers(k, cpu);
      shootdowns.switchTo(k, cpu, s);
      const va = 0x40_0000;
      const f = m.frames.allocZeroed(0);
      refs.setRefcount(k, f, 1);
      if (vm.map(k, 0, s, vaHi(va), vaLo(va), f * 4096, 4096, 3, cpu).code !== 0) throw new Error('bench: map failed');
      const targets = Array.from({ length: n }, (_, i) => i + 1);
      const running = m.run(targets.map((c) => ({ core: c, program: { kind: 'ops', ops: [{ op: 'switch', space: s }, { op: 'load', va }], repeat: Number.MAX_SAFE_INTEGER } })));
      const deadline = Date.now() + 20_000;
      while (shootdowns.activeCores(k, s).length < n + 1) {
        if (Date.now() > deadline) throw new Error('bench: target cores did not join the space');
        await new Promise((r) => setImmediate(r));
      }
      const lat: number[] = [];
      for (let i = 0; i < o.samples + 50; i++) {
        const t = performance.now();
        shootdowns.shootdown(k, cpu, s, vaHi(va), vaLo(va), 1);
        if (i >= 50) lat.push((performance.now() - t) * 1e6);
      }
      for (const c of targets) cpu.apic.sendIpi(c, IPI_STOP);
      cpu.apic.waitAcks();
      const res = await running;
      for (const r of res) if (!r.ok) throw new Error(`bench: core ${r.core} failed: ${r.error}`);
      cpu.detach();
      if (o.trace) await writeChromeTrace(m, o.trace.replace(/(\.json)?$/, `-${n}$1`));
      lat.sort((a, b) => a - b);
      rows.push({ targets: n, p50Ns: lat[lat.length >> 1], p99Ns: lat[Math.floor(lat.length * 0.99)], samples: lat.length });
    } finally {
      await m.shutdown();
    }
  }
  return {
    node: process.version,
    machine: machineInfo(),
    rows,
    note: `this machine has ${machineInfo().cpus} real CPUs: with more target cores than that, round trips wait for the OS to run each target`,
  };
}

export function formatShootdown(r: ShootdownResult): string {
  return [
    `nrvm shootdown latency — Node ${r.node}, ${r.machine.cpu}, ${r.machine.cpus} CPUs (one page, one initiator)`,
    `${'targets'.padStart(8)} ${'p50'.padStart(12)} ${'p99'.padStart(12)} ${'samples'.padStart(8)}`,
    ...r.rows.map((x) => `${String(x.targets).padStart(8)} ${((x.p50Ns / 1000).toFixed(1) + ' us').padStart(12)} ${((x.p99Ns / 1000).toFixed(1) + ' us').padStart(12)} ${String(x.samples).padStart(8)}`),
    `(${r.note})`,
  ].join('\n');
}
