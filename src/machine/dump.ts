// `nrvm dump`: the raw physical-memory image (phys.bin: physical address 0 at byte 0, so any
// outside tool can walk the page tables in it) and machine.json describing the machine and each
// page-table root's mappings, read with the side-effect-free enumeration (no A/D update).

import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Machine } from './machine.js';
import { enumerateMappings, type Mapping } from '../hw/pagetable.js';
import { enumerate32, enumeratePae } from '../hw/legacy.js';
import { STATE_NAMES, stateOf } from '../kernel/mhstate.js';
import { entries } from '../kernel/vm.js';
import { SLOT_BYTES, ownerIn, sharedSlots } from '../kernel/slots.js';

/** The paging modes a dumped root can be walked in (SDM 4.1.1). */
export type DumpPaging = '32bit' | 'pae' | '4level' | '5level';

/**
 * One page-table hierarchy to describe: CR3 (bits 51:12 = root frame; in PAE paging bits 31:5 =
 * the PDPT) and its paging mode: `paging`, or 4-/5-level by `la57` when it is not given.
 */
export interface DumpRoot {
  label: string;
  cr3: bigint;
  la57: boolean;
  paging?: DumpPaging;
  /** 32-bit paging: CR4.PSE (a PDE with PS maps 4 MiB). Default true. */
  pse?: boolean;
  /** The address space whose replica this is: its mappings then carry their MH state (kernel personality 'mh'). */
  space?: number;
}

/** machine.json as written. Addresses are hex strings; size in bytes. */
export interface DumpJson {
  format: 'nrvm-dump/1';
  memoryBytes: number;
  cores: number;
  nodes: number;
  maxPhysAddr: number;
  nodeFrames: { node: number; firstFrame: number; frames: number }[];
  roots: {
    label: string;
    cr3: string;
    /**
     * The paging mode the root is walked in (SDM 4.1.1). Entries are as the mode lays them out:
     * '32bit' 4-byte PDEs and PTEs (4 MiB PDEs when `pse`), 'pae' four 8-byte PDPTEs at CR3 bits
     * 31:5 then 8-byte PDEs and PTEs, '4level'/'5level' 8-byte entries from the PML4/PML5.
     */
    mode: DumpPaging;
    la57: boolean;
    /** 32-bit paging: CR4.PSE as the root was described with. */
    pse?: boolean;
    /**
     * The RPAL slots or mshare regions linked into the root's space: top-level entry `slot`
     * points at space `owner`'s tables (its mappings are listed with the root's: a walker sees them).
     */
    shared?: { slot: number; owner: number }[];
    mappings: {
      va: string; pa: string; size: number; write: boolean; user: boolean; nx: boolean;
      global: boolean; accessed: boolean; dirty: boolean; pkey: number; pcd: boolean; pwt: boolean;
      /** Under the MH personality: the page's state (Unmapped never appears; I/O, Private RO...). */
      mhState?: string;
    }[];
  }[];
}

/** Pieces of the image written, or skipped when all zero (a sparse file). */
const SPARSE_PIECE = 1024 * 1024;

function mappingJson(x: Mapping): DumpJson['roots'][number]['mappings'][number] {
  return {
    va: '0x' + x.va.toString(16), pa: '0x' + x.pa.toString(16), size: x.size, write: x.write, user: x.user,
    nx: x.nx, global: x.global, accessed: x.accessed, dirty: x.dirty, pkey: x.pkey, pcd: x.pcd, pwt: x.pwt,
  };
}

/** The MH state of each mapped page of space s, by page number (from replica 0's mapping database). */
function mhStates(m: Machine, s: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const e of entries(m.kernel, 0, s)) {
    const name = STATE_NAMES[stateOf(e.rights)];
    for (let p = 0; p < e.pages; p++) out.set(e.va / 4096 + p, name);
  }
  return out;
}

/** Builds machine.json's content for the given roots. Main thread; side-effect free. */
export function describe(m: Machine, roots: DumpRoot[]): DumpJson {
  const l = m.layout;
  return {
    format: 'nrvm-dump/1',
    memoryBytes: m.config.memoryBytes,
    cores: m.config.cores,
    nodes: m.config.nodes,
    maxPhysAddr: m.config.maxPhysAddr,
    nodeFrames: l.nodeFrameStart.slice(0, -1).map((f, n) => ({ node: n, firstFrame: f, frames: l.nodeFrameStart[n + 1] - f })),
    roots: roots.map((r) => {
      const rootPfn = Number((r.cr3 >> 12n) & ((1n << BigInt(m.config.maxPhysAddr - 12)) - 1n));
      const mode: DumpPaging = r.paging ?? (r.la57 ? '5level' : '4level');
      const pse = r.pse ?? true;
      const found = mode === '32bit' ? enumerate32(m.mem, l.totalFrames, rootPfn, pse, m.config.maxPhysAddr)
        : mode === 'pae' ? enumeratePae(m.mem, l.totalFrames, Number(r.cr3 & 0xffffffffn))
        : enumerateMappings(m.mem, l.totalFrames, rootPfn, mode === '5level');
      return {
        label: r.label,
        cr3: '0x' + r.cr3.toString(16),
        mode,
        la57: mode === '5level',
        ...(mode === '32bit' ? { pse } : {}),
        ...(r.space !== undefined && m.kernel.isLive(r.space) && sharedSlots(m.kernel, r.space).length > 0
          ? { shared: sharedSlots(m.kernel, r.space).map((slot) => ({ slot, owner: ownerIn(m.kernel, r.space as number, slot * SLOT_BYTES) })) } : {}),
        mappings: withStates(found.map(mappingJson), m.kernel.mh && r.space !== undefined && m.kernel.isLive(r.space) ? mhStates(m, r.space) : null),
      };
    }),
  };
}

function withStates(ms: DumpJson['roots'][number]['mappings'], states: Map<number, string> | null): DumpJson['roots'][number]['mappings'] {
  if (states) for (const x of ms) x.mhState = states.get(Number(BigInt(x.va) >> 12n));
  return ms;
}

function allZero(w: Int32Array): boolean {
  for (let i = 0; i < w.length; i++) if (w[i] !== 0) return false;
  return true;
}

/** Writes DIR/phys.bin and DIR/machine.json. Returns their paths and the JSON written. */
export async function writeDump(
  m: Machine, dir: string, roots: DumpRoot[],
  /** Called after every GiB of the image with the bytes done and the total (large machines). */
  progress?: (done: number, total: number) => void,
): Promise<{ phys: string; json: string; content: DumpJson }> {
  await mkdir(dir, { recursive: true });
  const phys = join(dir, 'phys.bin');
  const json = join(dir, 'machine.json');
  const content = describe(m, roots);
  const fh = await open(phys, 'w');
  try {
    // Sparse: a chunk of zeros is not written (most of a large machine's memory never is), and
    // the file is then sized to the whole memory, so it reads back the same and a 16 GiB image
    // takes the disk space of what was used.
    const buf = m.shared.phys;
    for (let off = 0; off < buf.byteLength; off += SPARSE_PIECE) {
      const len = Math.min(SPARSE_PIECE, buf.byteLength - off);
      if ((off + len) % 2 ** 30 === 0) progress?.(off + len, buf.byteLength);
      if (allZero(new Int32Array(buf, off, len >> 2))) continue;
      await fh.write(new Uint8Array(buf, off, len), 0, len, off);
    }
    await fh.truncate(buf.byteLength);
  } finally {
    await fh.close();
  }
  await writeFile(json, JSON.stringify(content, null, 2) + '\n');
  return { phys, json, content };
}
