// Physical frames: a lock-free per-node allocator over a bitmap in shared memory, plus frame
// zeroing and copying. Any thread (a core's worker or the controller) may allocate and free at
// once: a frame is taken by one compareExchange that sets its bit, so two takers never get the
// same frame and no ABA can arise. Out of memory is the value -1, never an exception.

import type { Layout } from './layout.js';
import { FRAME_WORDS } from './pte.js';
import { panic } from './panic.js';

export const NO_FRAME = -1;

/** Frame allocator bound to one machine's views. Cheap to construct; holds no state of its own. */
export class Frames {
  constructor(
    readonly layout: Layout,
    readonly ctl: Int32Array,
    readonly mem: Int32Array,
  ) {}

  /** Marks every frame free. Boot only, before any core runs. */
  reset(): void {
    const l = this.layout;
    for (let n = 0; n < l.config.nodes; n++) {
      const frames = l.nodeFrameStart[n + 1] - l.nodeFrameStart[n];
      const words = Math.ceil(frames / 32);
      this.ctl.fill(0, l.nodeBitmap[n], l.nodeBitmap[n] + words);
      // Bits past the node's last frame stay permanently "in use".
      const tail = frames % 32;
      if (tail !== 0) this.ctl[l.nodeBitmap[n] + words - 1] = ~((1 << tail) - 1);
      Atomics.store(this.ctl, l.nodeFreeCount[n], frames);
      Atomics.store(this.ctl, l.nodeHint[n], 0);
    }
  }

  /** Allocates one frame on `node`; returns its number or NO_FRAME when the node is full. Any thread. */
  alloc(node: number): number {
    const l = this.layout;
    const ctl = this.ctl;
    const base = l.nodeBitmap[node];
    const words = Math.ceil((l.nodeFrameStart[node + 1] - l.nodeFrameStart[node]) / 32);
    const hint = Atomics.load(ctl, l.nodeHint[node]);
    for (let i = 0; i < words; i++) {
      let w = hint + i;
      if (w >= words) w -= words;
      let v = Atomics.load(ctl, base + w);
      while (v !== -1) {
        const bit = ~v & (v + 1); // lowest clear bit
        const prev = Atomics.compareExchange(ctl, base + w, v, v | bit);
        if (prev === v) {
          Atomics.sub(ctl, l.nodeFreeCount[node], 1);
          if (w !== hint) Atomics.store(ctl, l.nodeHint[node], w);
          return l.nodeFrameStart[node] + w * 32 + (31 - Math.clz32(bit));
        }
        v = prev;
      }
    }
    return NO_FRAME;
  }

  /** Allocates on `preferred`, then on the other nodes in order; NO_FRAME when memory is full. */
  allocAny(preferred: number): number {
    const nodes = this.layout.config.nodes;
    for (let i = 0; i < nodes; i++) {
      const f = this.alloc((preferred + i) % nodes);
      if (f !== NO_FRAME) return f;
    }
    return NO_FRAME;
  }

  /**
   * Allocates `count` contiguous frames on `node`, the first aligned to `count` (a power of two:
   * 512 for a 2 MiB page). Claims frame by frame with compareExchange and gives back what it
   * took when it loses a race. Returns the first frame or NO_FRAME. Any thread.
   */
  allocContiguous(node: number, count: number): number {
    const l = this.layout;
    const start = l.nodeFrameStart[node];
    const end = l.nodeFrameStart[node + 1];
    for (let first = Math.ceil(start / count) * count; first + count <= end; first += count) {
      let got = 0;
      while (got < count && this.claim(first + got)) got++;
      if (got === count) {
        Atomics.sub(this.ctl, l.nodeFreeCount[node], count);
        return first;
      }
      for (let i = 0; i < got; i++) this.release(first + i);
    }
    return NO_FRAME;
  }

  private claim(pfn: number): boolean {
    const l = this.layout;
    const node = l.nodeOfFrame(pfn);
    const rel = pfn - l.nodeFrameStart[node];
    const word = l.nodeBitmap[node] + (rel >>> 5);
    const bit = 1 << (rel & 31);
    for (;;) {
      const v = Atomics.load(this.ctl, word);
      if ((v & bit) !== 0) return false;
      if (Atomics.compareExchange(this.ctl, word, v, v | bit) === v) return true;
    }
  }

  private release(pfn: number): void {
    const l = this.layout;
    const node = l.nodeOfFrame(pfn);
    const rel = pfn - l.nodeFrameStart[node];
    Atomics.and(this.ctl, l.nodeBitmap[node] + (rel >>> 5), ~(1 << (rel & 31)));
  }

  /** Returns frame pfn to its node. Panics on a double free, which is a broken invariant. */
  free(pfn: number): void {
    const l = this.layout;
    const node = l.nodeOfFrame(pfn);
    if (node < 0) panic(`Frames.free: frame ${pfn} is outside physical memory`);
    const rel = pfn - l.nodeFrameStart[node];
    const bit = 1 << (rel & 31);
    const prev = Atomics.and(this.ctl, l.nodeBitmap[node] + (rel >>> 5), ~bit);
    if ((prev & bit) === 0) panic(`Frames.free: frame ${pfn} was not allocated (double free)`);
    Atomics.add(this.ctl, l.nodeFreeCount[node], 1);
  }

  /** Whether frame pfn is currently allocated. */
  isAllocated(pfn: number): boolean {
    const l = this.layout;
    const node = l.nodeOfFrame(pfn);
    if (node < 0) return false;
    const rel = pfn - l.nodeFrameStart[node];
    return (Atomics.load(this.ctl, l.nodeBitmap[node] + (rel >>> 5)) & (1 << (rel & 31))) !== 0;
  }

  /** Free frames on `node` (or on all nodes when node is omitted). */
  freeCount(node?: number): number {
    const l = this.layout;
    if (node !== undefined) return Atomics.load(this.ctl, l.nodeFreeCount[node]);
    let s = 0;
    for (let n = 0; n < l.config.nodes; n++) s += Atomics.load(this.ctl, l.nodeFreeCount[n]);
    return s;
  }

  /** Fills frame pfn with zeros. The caller owns the frame and publishes it afterwards. */
  zero(pfn: number): void {
    this.mem.fill(0, pfn * FRAME_WORDS, (pfn + 1) * FRAME_WORDS);
  }

  /** Copies frame src into frame dst. The caller owns dst. */
  copy(dst: number, src: number): void {
    this.mem.copyWithin(dst * FRAME_WORDS, src * FRAME_WORDS, (src + 1) * FRAME_WORDS);
  }

  /** Allocates and zeroes a frame on `node`; NO_FRAME when the node is full. */
  allocZeroed(node: number): number {
    const f = this.alloc(node);
    if (f !== NO_FRAME) this.zero(f);
    return f;
  }
}

/** The byte at physical byte address pa of mem (all ones for -1: memory that is not installed). */
export function physByte(mem: Int32Array, pa: number): number {
  if (pa < 0) return 0xff;
  return (mem[Math.floor(pa / 4)] >>> ((pa % 4) * 8)) & 0xff;
}

/** Stores one byte at physical byte address pa, keeping the other bytes of its word whatever other cores store there meanwhile. */
export function storePhysByte(mem: Int32Array, pa: number, b: number): void {
  const w = Math.floor(pa / 4);
  const sh = (pa % 4) * 8;
  for (;;) {
    const old = Atomics.load(mem, w);
    if (Atomics.compareExchange(mem, w, old, (old & ~(0xff << sh)) | (b << sh)) === old) return;
  }
}
