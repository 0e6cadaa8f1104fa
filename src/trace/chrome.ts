// Export of the per-core event rings as Chrome trace-event JSON (opens in Perfetto and
// chrome://tracing): one track per core, begin/end slices for operations, faults, walks, IPIs,
// combining and replica syncs, instant events for IPIs sent and for violations.

import { writeFile } from 'node:fs/promises';
import { PH_BEGIN, PH_END, TRACE_NAMES, readTrace } from '../hw/trace.js';
import type { Machine } from '../machine/machine.js';

export interface ChromeEvent {
  name: string;
  ph: string;
  ts: number;
  pid: number;
  tid: number;
  s?: string;
  args?: Record<string, unknown>;
}

/** The machine's trace as Chrome trace events; `marks` adds instant events (violations). */
export function chromeTrace(m: Machine, marks: { core: number; name: string; detail: string }[] = []): { traceEvents: ChromeEvent[]; displayTimeUnit: string } {
  const buf = m.shared.trace;
  const events: ChromeEvent[] = [];
  for (let c = 0; c < m.config.cores; c++) {
    events.push({ name: 'thread_name', ph: 'M', ts: 0, pid: 1, tid: c, args: { name: `core ${c} (node ${m.nodeOf(c)})` } });
  }
  if (!buf) return { traceEvents: events, displayTimeUnit: 'ns' };
  const raw = readTrace(buf, m.config.cores);
  const t0 = raw.reduce((a, e) => Math.min(a, e.timeMs), Infinity);
  for (const e of raw) {
    const ev: ChromeEvent = {
      name: TRACE_NAMES[e.kind] ?? `event ${e.kind}`,
      ph: e.phase === PH_BEGIN ? 'B' : e.phase === PH_END ? 'E' : 'i',
      ts: (e.timeMs - t0) * 1000,
      pid: 1,
      tid: e.core,
    };
    if (ev.ph === 'i') ev.s = 't';
    if (e.arg !== 0) ev.args = { arg: e.arg };
    events.push(ev);
  }
  const end = raw.reduce((a, e) => Math.max(a, e.timeMs), 0);
  for (const k of marks) events.push({ name: `violation: ${k.name}`, ph: 'i', s: 'g', ts: (end - (Number.isFinite(t0) ? t0 : end)) * 1000, pid: 1, tid: Math.max(0, k.core), args: { detail: k.detail } });
  return { traceEvents: events, displayTimeUnit: 'ns' };
}

/** Writes the trace to a file. */
export async function writeChromeTrace(m: Machine, file: string, marks: { core: number; name: string; detail: string }[] = []): Promise<number> {
  const t = chromeTrace(m, marks);
  await writeFile(file, JSON.stringify(t));
  return t.traceEvents.length;
}
