// Programs a core runs: a stream of operations in an Int32Array, OP_WORDS words each, produced in
// chunks by a ProgramSource inside the worker (so no per-operation message crosses threads).
// This module defines the encoding and the explicit form ({ kind: 'ops' }) that the controller
// can send; generated kinds (random mixes, IPI storms...) live in src/workloads.

import { DEV_REG_COUNT } from '../hw/layout.js';
import { join64, parseAddress, split64 } from '../hw/vaddr.js';

export const OP_WORDS = 5;

/** The program kinds a job may name (Machine.run checks a job's kind against it before it starts; workloads/sources.ts builds them). */
export const PROGRAM_KINDS = ['ops', 'random', 'ipi-storm', 'hw-mix', 'vm-mix'] as const;

/** [OP_LOAD, vhi, vlo] 8-byte load (recorded when the program records values). */
export const OP_LOAD = 1;
/** [OP_STORE, vhi, vlo, valueHi, valueLo] 8-byte store. */
export const OP_STORE = 2;
/** [OP_FETCH, vhi, vlo] 8-byte instruction fetch. */
export const OP_FETCH = 3;
/** [OP_LOAD_SIZED, vhi, vlo, size]: a load of 1, 2, 4 or 8 bytes, aligned or not (an 8-byte aligned load is OP_LOAD). */
export const OP_LOAD_SIZED = 19;
/** [OP_STORE_SIZED + size, vhi, vlo, valueHi, valueLo]: a store of 1, 2, 4 or 8 bytes, aligned or not (an 8-byte aligned store is OP_STORE). */
export const OP_STORE_SIZED = 40;
/** [OP_IMPLICIT_LOAD, vhi, vlo] and [OP_IMPLICIT_STORE, vhi, vlo, valueHi, valueLo]: implicit supervisor-mode accesses (SDM 4.6). */
export const OP_IMPLICIT_LOAD = 17;
export const OP_IMPLICIT_STORE = 18;
/** [OP_INVLPG, vhi, vlo] */
export const OP_INVLPG = 4;
/** [OP_INVPCID, type, pcid, vhi, vlo] */
export const OP_INVPCID = 5;
/** [OP_MOV_CR3, hi, lo] (hi bit 31 = no-flush) */
export const OP_MOV_CR3 = 6;
/** [OP_MOV_CR4, value] */
export const OP_MOV_CR4 = 7;
/** [OP_WRPKRU, value] */
export const OP_WRPKRU = 8;
/** [OP_SET_MODE, cpl, ac] */
export const OP_SET_MODE = 9;
/** [OP_PING, target, payload] send IPI_PING and wait for its ack. */
export const OP_PING = 10;
/** [OP_HALT] wait for an interrupt. */
export const OP_HALT = 11;
/** [OP_PTE_WRITE, word, lo, hi] update an entry by break-before-make against the run's cores. */
export const OP_PTE_WRITE = 12;
/** [OP_PTE_TOGGLE, word, bits] flip software bits of an entry's low half with a CAS loop. */
export const OP_PTE_TOGGLE = 13;
/** [OP_XLATE, vhi, vlo, acc, invlpgFirst] translate (after an INVLPG when the last word is 1) and tally the resulting (frame, flags) or fault. */
export const OP_XLATE = 14;
/** [OP_MOV_CR0, value] */
export const OP_MOV_CR0 = 15;
/** [OP_WREFER, value] */
export const OP_WREFER = 16;

/** [OP_K_SWITCH, space] run the address space on this core (kernel). */
export const OP_K_SWITCH = 20;
/** [OP_K_MAP, space, vaHi, vaLo, rights << 24 | pages] allocate frames and MapFrame them. */
export const OP_K_MAP = 21;
/** [OP_K_UNMAP, space, vaHi, vaLo] Unmap (with shootdown) and free the frames. */
export const OP_K_UNMAP = 22;
/** [OP_K_ADJUST, space, vaHi, vaLo, rights] */
export const OP_K_ADJUST = 23;
/** [OP_K_RESOLVE, space, vaHi, vaLo] */
export const OP_K_RESOLVE = 24;
/** [OP_K_FORK] fork the running process (its space); the child joins the process table. */
export const OP_K_FORK = 25;
/** [OP_K_EXIT, -, pick] the running process exits (a zombie until reaped) unless it is the last; switch to another. */
export const OP_K_EXIT = 26;
/** [OP_K_OWN, vaHi, vaLo, write] write (1) one of this core's own slots, or (0) read back and check an address it wrote in this space (vaHi, vaLo then seed the pick). */
export const OP_K_OWN = 27;
/** [OP_AWAIT_PINGS, n] halt until this core has received n IPI_PINGs in this program (a handshake). */
export const OP_AWAIT_PINGS = 28;
/** [OP_K_EXPORT, space, vaHi, vaLo] MH: export the one-page mapping to the device (wire it). */
export const OP_K_EXPORT = 29;
/** [OP_K_UNEXPORT, -, pick] MH: end one of this core's exports in the running space. */
export const OP_K_UNEXPORT = 30;
/** [OP_K_DMA, -, pick, value, write] MH: a DMA on one of this core's exports, through the device's register, waiting for it to finish. */
export const OP_K_DMA = 31;
/** [OP_K_DEVREG, -, register, value, write] MH: an access to a device register through the space's I/O mapping (mapped first if absent). */
export const OP_K_DEVREG = 32;
/** [OP_K_MOVE, space, vaHi, vaLo, from page] MH: move the one-page mapping at page `from` over the one at vaHi:vaLo. */
export const OP_K_MOVE = 33;
/** [OP_K_KMAP, -, vaHi, vaLo, pages] map fresh frames in the kernel half (kernel/khalf.ts). */
export const OP_K_KMAP = 34;
/** [OP_K_KUNMAP, -, vaHi, vaLo] unmap a kernel mapping (with the kernel's shootdown). */
export const OP_K_KUNMAP = 35;
/** [OP_K_KACCESS, vaHi, vaLo, write, value] an 8-byte supervisor access (CPL 0 for the one access) to a kernel address. */
export const OP_K_KACCESS = 36;
// Address-space sharing (the stress's --share runs, machine/shareops.ts): RPAL slots and mshare regions.
// (40-48 are OP_STORE_SIZED + size.)
/** [OP_K_SHARE, 0, pick] RPAL: share another process's slot into the running one; mshare: attach a region. */
export const OP_K_SHARE = 60;
/** [OP_K_UNSHARE, 0, pick] RPAL: unshare a slot from the running process; mshare: detach a region (never its last attachment). */
export const OP_K_UNSHARE = 61;
/** [OP_K_PKEY, CURRENT_SPACE, pageHi, pageLo, pick] RPAL: pkey_mprotect of one of the process's mappings with one of its two keys. */
export const OP_K_PKEY = 62;
/** [OP_K_CALL, pick, pageHi, pageLo | offset, pick2] RPAL: a call into another process's thread, whose body writes and checks its own slot, then returns. */
export const OP_K_CALL = 63;
/** [OP_K_XACCESS, pick, pageHi, pageLo | offset, pick2] a load in a process's slot (RPAL; in another's, one in four a stray write) or a region (mshare), as the running thread. */
export const OP_K_XACCESS = 64;
/** [OP_K_GRANT, pick, page, offset] RPAL: the running thread grants itself another process's keys (WRPKRU) and writes its mailbox page. */
export const OP_K_GRANT = 65;
/** [OP_K_THREAD, tid] run thread tid on this core (thread.ts switchThread). */
export const OP_K_THREAD = 66;
/** [OP_K_RCALL, tid] an RPAL call from the running thread into thread tid. */
export const OP_K_RCALL = 67;
/** [OP_K_RRET] the running callee returns to its caller. */
export const OP_K_RRET = 68;
/** Kernel operations of the region (mshare): MapFrame, Unmap, Adjust and Resolve name this space to act on a region the process attached. */
export const REGION_SPACE = -3;

/** Kernel operations name the space -1 to mean the running one; OP_K_SWITCH to -1 picks a live process (word 2 seeds the pick). */
export const CURRENT_SPACE = -1;

/** Fills `buf` with up to buf.length / OP_WORDS operations; returns how many (0 = the end). */
export interface ProgramSource {
  next(buf: Int32Array): number;
}

/** One explicit operation, as the controller writes it. Addresses: bigint, safe number or hex string. */
export type Op =
  /** implicit: an implicit supervisor-mode access (descriptor tables and the like, SDM 4.6) at any CPL. */
  /** size: 1, 2, 4 or 8 bytes (default 8), at any address; one that crosses a page boundary translates both pages first. */
  | { op: 'load'; va: bigint | number | string; implicit?: boolean; size?: number }
  | { op: 'store'; va: bigint | number | string; value: bigint | number; implicit?: boolean; size?: number }
  | { op: 'fetch'; va: bigint | number | string }
  | { op: 'invlpg'; va: bigint | number | string }
  | { op: 'invpcid'; type: 0 | 1 | 2 | 3; pcid?: number; va?: bigint | number | string }
  | { op: 'movCr3'; value: bigint; noFlush?: boolean }
  | { op: 'movCr4'; value: number }
  | { op: 'movCr0'; value: number }
  | { op: 'wrEfer'; value: number }
  | { op: 'wrpkru'; value: number }
  | { op: 'mode'; cpl: 0 | 3; ac?: boolean }
  | { op: 'ping'; target: number; payload?: number }
  | { op: 'halt' }
  | { op: 'pteWrite'; pa: bigint | number; lo: number; hi: number }
  | { op: 'pteToggle'; pa: bigint | number; bits: number }
  | { op: 'xlate'; va: bigint | number | string; acc: 'read' | 'write' | 'fetch' }
  | { op: 'switch'; space: number }
  | { op: 'map'; space: number; va: bigint | number | string; pages: number; rights: number }
  | { op: 'unmap'; space: number; va: bigint | number | string }
  | { op: 'adjust'; space: number; va: bigint | number | string; rights: number }
  | { op: 'resolve'; space: number; va: bigint | number | string }
  | { op: 'awaitPings'; count: number }
  | { op: 'fork' }
  /** The running process exits (unless it is the last); the core switches to another live one, picked by `next` modulo their number. */
  | { op: 'exit'; next?: number }
  /** Threads (kernel/thread.ts): run thread tid; an RPAL call into thread tid; the callee's return. Outcomes are tallied (thread, rpalCall, rpalReturn). */
  | { op: 'thread'; tid: number }
  | { op: 'rpalCall'; tid: number }
  | { op: 'rpalReturn' }
  /** MH: export the one-page mapping at va of the space to the device (wires it). */
  | { op: 'export'; space: number; va: bigint | number | string }
  /** MH: end one of this core's exports in the running space (picked by `pick` modulo their number). */
  | { op: 'unexport'; pick?: number }
  /** MH: a DMA on one of this core's exports (write fills it with `value`, else a read), waiting until it has finished. */
  | { op: 'dma'; write?: boolean; value?: number; pick?: number }
  /** MH: read (or, with write, write `value` to the scratch register) device register `reg` through the I/O mapping. */
  | { op: 'devreg'; reg: number; write?: boolean; value?: number }
  /** MH: move the one-page mapping at `from` over the one at va. */
  | { op: 'move'; space: number; va: bigint | number | string; from: bigint | number | string }
  /** Kernel half: map `pages` fresh frames at a kernel address (0xffff8000_00000000 and up). */
  | { op: 'kmap'; va: bigint | number | string; pages?: number }
  /** Kernel half: unmap the kernel mapping at va. */
  | { op: 'kunmap'; va: bigint | number | string }
  /** A supervisor load (or store of value) at a kernel address, in the running space. */
  | { op: 'kload'; va: bigint | number | string }
  | { op: 'kstore'; va: bigint | number | string; value: number };

/** What a core is asked to run. `kind` selects the source; other fields belong to that kind. */
export interface ProgramSpec {
  kind: string;
  /** Record every loaded/fetched value (small programs only). */
  record?: boolean;
  /** Stop at the first fault instead of recording it and going on. */
  stopOnFault?: boolean;
  /** Repeat the whole program this many times (default 1). */
  repeat?: number;
  /**
   * End the program once this many milliseconds have passed since the start of the run (checked
   * between operations, every few dozen kernel operations): every core of a run gets the same
   * time, as throughput benchmarks want. The program's own end still ends it earlier.
   */
  durationMs?: number;
  /**
   * End the program at this wall-clock time (Date.now() milliseconds), checked as durationMs is:
   * a run's deadline, the same for every core however long the cores took to start.
   */
  endsAt?: number;
  [field: string]: unknown;
}

export interface OpsProgram extends ProgramSpec {
  kind: 'ops';
  ops: Op[];
}

function va2(v: bigint | number | string, where: string): [number, number] {
  const b = parseAddress(v);
  if (b === null) throw new ProgramError(`${where}: '${String(v)}' is not an address (an integer in [0, 2^64))`);
  const { hi, lo } = split64(b);
  return [hi, lo];
}

/** An access size: 1, 2, 4 or 8 bytes (8 when absent). */
function accessSize(size: unknown, where: string): number {
  if (size === undefined) return 8;
  if (size !== 1 && size !== 2 && size !== 4 && size !== 8) throw new ProgramError(`${where}: size must be 1, 2, 4 or 8 bytes, got ${String(size)}`);
  return size;
}

function aligned(hi: number, lo: number, where: string): [number, number] {
  if ((lo & 7) !== 0) throw new ProgramError(`${where}: address 0x${join64(hi, lo).toString(16)} is not 8-byte aligned`);
  return [hi, lo];
}

/** A program that cannot be encoded; the message names the operation and the problem. */
export class ProgramError extends Error {}

const ACC: Record<string, number> = { read: 0, write: 1, fetch: 2 };

/** Encodes explicit operations. Throws ProgramError naming the bad operation. Any thread. */
export function encodeOps(ops: Op[]): Int32Array {
  const buf = new Int32Array(ops.length * OP_WORDS);
  ops.forEach((o, i) => {
    const at = `op ${i} (${o.op})`;
    const w = i * OP_WORDS;
    const put = (...v: number[]): void => v.forEach((x, k) => (buf[w + k] = x | 0));
    switch (o.op) {
      case 'load': {
        const [hi, lo] = va2(o.va, at);
        const size = accessSize(o.size, at);
        if (o.implicit === true) put(OP_IMPLICIT_LOAD, ...aligned(hi, lo, at));
        else if (size === 8 && (lo & 7) === 0) put(OP_LOAD, hi, lo);
        else put(OP_LOAD_SIZED, hi, lo, size);
        break;
      }
      case 'fetch': put(OP_FETCH, ...aligned(...va2(o.va, at), at)); break;
      case 'store': {
        const v = split64(BigInt(o.value));
        const [hi, lo] = va2(o.va, at);
        const size = accessSize(o.size, at);
        if (size < 8 && (BigInt(o.value) < 0n || BigInt(o.value) >= 1n << BigInt(8 * size))) throw new ProgramError(`${at}: value ${String(o.value)} does not fit ${size} byte${size > 1 ? 's' : ''}`);
        if (o.implicit === true) put(OP_IMPLICIT_STORE, ...aligned(hi, lo, at), v.hi, v.lo);
        else if (size === 8 && (lo & 7) === 0) put(OP_STORE, hi, lo, v.hi, v.lo);
        else put(OP_STORE_SIZED + size, hi, lo, v.hi, v.lo);
        break;
      }
      case 'invlpg': put(OP_INVLPG, ...va2(o.va, at)); break;
      case 'invpcid': put(OP_INVPCID, o.type, o.pcid ?? 0, ...va2(o.va ?? 0, at)); break;
      case 'movCr3': {
        const v = split64(o.value);
        put(OP_MOV_CR3, v.hi | (o.noFlush ? 1 << 31 : 0), v.lo);
        break;
      }
      case 'movCr4': put(OP_MOV_CR4, o.value); break;
      case 'movCr0': put(OP_MOV_CR0, o.value); break;
      case 'wrEfer': put(OP_WREFER, o.value); break;
      case 'wrpkru': put(OP_WRPKRU, o.value); break;
      case 'mode': put(OP_SET_MODE, o.cpl, o.ac ? 1 : 0); break;
      case 'ping': put(OP_PING, o.target, o.payload ?? i); break;
      case 'halt': put(OP_HALT); break;
      case 'pteWrite': put(OP_PTE_WRITE, Number(o.pa) / 4, o.lo, o.hi); break;
      case 'pteToggle': put(OP_PTE_TOGGLE, Number(o.pa) / 4, o.bits); break;
      case 'xlate': put(OP_XLATE, ...va2(o.va, at), ACC[o.acc]); break;
      case 'switch': put(OP_K_SWITCH, o.space); break;
      case 'map':
        if (!Number.isInteger(o.pages) || o.pages < 1 || o.pages >= 1 << 24) throw new ProgramError(`${at}: pages must be 1 to 2^24 - 1`);
        put(OP_K_MAP, o.space, ...va2(o.va, at), (o.rights << 24) | o.pages);
        break;
      case 'unmap': put(OP_K_UNMAP, o.space, ...va2(o.va, at)); break;
      case 'adjust': put(OP_K_ADJUST, o.space, ...va2(o.va, at), o.rights); break;
      case 'resolve': put(OP_K_RESOLVE, o.space, ...va2(o.va, at)); break;
      case 'awaitPings': put(OP_AWAIT_PINGS, o.count); break;
      case 'fork': put(OP_K_FORK); break;
      case 'thread': put(OP_K_THREAD, o.tid); break;
      case 'rpalCall': put(OP_K_RCALL, o.tid); break;
      case 'rpalReturn': put(OP_K_RRET); break;
      case 'exit': put(OP_K_EXIT, 0, o.next ?? 0); break;
      case 'export': put(OP_K_EXPORT, o.space, ...va2(o.va, at)); break;
      case 'unexport': put(OP_K_UNEXPORT, 0, o.pick ?? 0); break;
      case 'dma': put(OP_K_DMA, 0, o.pick ?? 0, o.value ?? 0, o.write ? 1 : 0); break;
      case 'devreg':
        if (!Number.isInteger(o.reg) || o.reg < 0 || o.reg >= DEV_REG_COUNT) throw new ProgramError(`${at}: device register ${String(o.reg)} is out of range (0-${DEV_REG_COUNT - 1})`);
        put(OP_K_DEVREG, 0, o.reg, o.value ?? 0, o.write ? 1 : 0);
        break;
      case 'kmap': put(OP_K_KMAP, 0, ...va2(o.va, at), o.pages ?? 1); break;
      case 'kunmap': put(OP_K_KUNMAP, 0, ...va2(o.va, at)); break;
      case 'kload': put(OP_K_KACCESS, ...aligned(...va2(o.va, at), at), 0, 0); break;
      case 'kstore': put(OP_K_KACCESS, ...aligned(...va2(o.va, at), at), 1, o.value); break;
      case 'move': {
        const [fh, fl] = va2(o.from, at);
        if ((fl & 0xfff) !== 0 || fh >= 2 ** 11) throw new ProgramError(`${at}: from must be a page-aligned address below 2^43`);
        put(OP_K_MOVE, o.space, ...va2(o.va, at), (fh * 2 ** 20) + (fl >>> 12));
        break;
      }
      default: throw new ProgramError(`${at}: unknown operation`);
    }
  });
  return buf;
}

/** A source over an already encoded buffer, served in one chunk per call. */
export class BufferSource implements ProgramSource {
  private at = 0;
  constructor(private readonly ops: Int32Array) {}
  next(buf: Int32Array): number {
    const n = Math.min((this.ops.length - this.at) / OP_WORDS, buf.length / OP_WORDS);
    buf.set(this.ops.subarray(this.at, this.at + n * OP_WORDS));
    this.at += n * OP_WORDS;
    return n;
  }
}
