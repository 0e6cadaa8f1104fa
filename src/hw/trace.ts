// Per-core event rings for traces (Chrome/Perfetto trace-event format, exported by src/trace).
// Each core writes only its own ring, in its own slice of one SharedArrayBuffer: a head counter,
// then TRACE_EVENTS events of 16 bytes [time in ms (f64, performance.timeOrigin-based, so all
// threads agree), phase << 8 | kind (i32), argument (i32)]. The ring keeps the newest events.
// With tracing off a site costs one field load and a compare; the access path's TLB hit has
// no site at all.

export const TRACE_EVENTS = 1 << 15;
const CORE_BYTES = 16 + TRACE_EVENTS * 16;

/** Phases, as the trace-event format names them. */
export const PH_BEGIN = 1;
export const PH_END = 2;
export const PH_INSTANT = 3;

/** Event kinds (index into TRACE_NAMES). */
export const TR_WALK = 0;
export const TR_FAULT = 1;
export const TR_IPI_SEND = 2;
export const TR_IPI = 3;
export const TR_COMBINE = 4;
export const TR_SYNC = 5;
export const TR_MAP = 6;
export const TR_UNMAP = 7;
export const TR_ADJUST = 8;
export const TR_RESOLVE = 9;
export const TR_FORK = 10;
export const TR_SHOOTDOWN = 11;
export const TR_SWITCH = 12;
export const TR_PARKED = 13;
export const TRACE_NAMES = ['walk', 'page fault', 'IPI sent', 'IPI', 'combine', 'replica sync', 'MapFrame', 'Unmap', 'Adjust', 'Resolve', 'fork', 'shootdown', 'switch', 'parked at breakpoint'];

/** Bytes of the trace buffer for `cores` cores. */
export function traceBytes(cores: number): number {
  return cores * CORE_BYTES;
}

/** One core's ring, as the thread that runs the core writes it. */
export class TraceRing {
  private readonly f: Float64Array;
  private readonly i: Int32Array;
  private readonly base8: number;
  private readonly base4: number;

  constructor(buf: SharedArrayBuffer, core: number) {
    this.f = new Float64Array(buf);
    this.i = new Int32Array(buf);
    this.base8 = (core * CORE_BYTES) / 8;
    this.base4 = (core * CORE_BYTES) / 4;
  }

  /** Records an event. The owning thread only. */
  emit(phase: number, kind: number, arg: number): void {
    const n = this.i[this.base4];
    const slot = n & (TRACE_EVENTS - 1);
    this.f[this.base8 + 2 + slot * 2] = performance.timeOrigin + performance.now();
    this.i[this.base4 + 4 + slot * 4 + 2] = (phase << 8) | kind;
    this.i[this.base4 + 4 + slot * 4 + 3] = arg;
    Atomics.store(this.i, this.base4, n + 1);
  }
}

/** A recorded event. */
export interface TraceEvent {
  core: number;
  timeMs: number;
  phase: number;
  kind: number;
  arg: number;
}

/** Every core's retained events, oldest first per core. Any thread, after the run. */
export function readTrace(buf: SharedArrayBuffer, cores: number): TraceEvent[] {
  const f = new Float64Array(buf);
  const i = new Int32Array(buf);
  const out: TraceEvent[] = [];
  for (let c = 0; c < cores; c++) {
    const b8 = (c * CORE_BYTES) / 8;
    const b4 = (c * CORE_BYTES) / 4;
    const n = Atomics.load(i, b4);
    for (let k = Math.max(0, n - TRACE_EVENTS); k < n; k++) {
      const slot = k & (TRACE_EVENTS - 1);
      const kp = i[b4 + 4 + slot * 4 + 2];
      out.push({ core: c, timeMs: f[b8 + 2 + slot * 2], phase: kp >>> 8, kind: kp & 0xff, arg: i[b4 + 4 + slot * 4 + 3] });
    }
  }
  return out;
}
