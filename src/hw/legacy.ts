// Page tables of the legacy paging modes, built and read directly in physical memory (the
// counterpart of pagetable.ts for 4- and 5-level paging; the walks are in walk.ts):
//
//   32-bit paging (SDM 4.3): CR3 bits 31:12 -> page directory of 1024 4-byte PDEs (VA 31:22) ->
//     page table of 1024 4-byte PTEs (VA 21:12); a PDE with PS (CR4.PSE) maps 4 MiB, its address
//     bits 39:32 in PDE bits 20:13 (PSE-36).
//   PAE paging (SDM 4.4): CR3 bits 31:5 -> four 8-byte PDPTEs (VA 31:30) -> page directory of 512
//     8-byte PDEs (VA 29:21; PS maps 2 MiB) -> page table of 512 PTEs (VA 20:12); XD in bit 63.
//
// Builders for tests and dump scenarios (single writer; errors as values), and enumeration of
// every present leaf for dumps and checkers (no side effects, any thread).

import type { Frames } from './frames.js';
import { NO_FRAME } from './frames.js';
import { MAP_CONFLICT, MAP_OK, MAP_OUT_OF_MEMORY, type LeafAttrs, type Mapping } from './pagetable.js';
import { FRAME_WORDS, HI_ADDR_MASK, HI_XD, PTE_A, PTE_D, PTE_G, PTE_P, PTE_PAT_HUGE, PTE_PCD, PTE_PS, PTE_PWT, PTE_RW, PTE_US, makeHi, makeLo } from './pte.js';

/** Low bits of a leaf (or a 4 MiB PDE) with attrs: P, R/W, U/S, A, D, G. */
function leafBits(attrs: LeafAttrs): number {
  return PTE_P | (attrs.write ? PTE_RW : 0) | (attrs.user ? PTE_US : 0) | (attrs.accessed ? PTE_A : 0) | (attrs.dirty ? PTE_D : 0) | (attrs.global ? PTE_G : 0);
}

/**
 * 32-bit paging: maps linear address vlo to frame pfn, a 4 KiB page or (big) a 4 MiB one (vlo
 * and pfn 4 MiB aligned; pfn below 2^28, address bits 39:32 in PDE bits 20:13), creating a page
 * table on `node` (present, writable, user). Returns MAP_OK or a MAP_* error.
 */
export function map32(mem: Int32Array, frames: Frames, node: number, pdPfn: number, vlo: number, pfn: number, big: boolean, attrs: LeafAttrs): number {
  const pdWord = pdPfn * FRAME_WORDS + (vlo >>> 22);
  const pde = mem[pdWord];
  if (big) {
    if ((pde & PTE_P) !== 0) return MAP_CONFLICT;
    Atomics.store(mem, pdWord, ((pfn >>> 10) << 22) | ((Math.floor(pfn / 0x100000) & 0xff) << 13) | PTE_PS | leafBits(attrs));
    return MAP_OK;
  }
  let pt: number;
  if ((pde & PTE_P) === 0) {
    pt = frames.allocZeroed(node);
    if (pt === NO_FRAME) return MAP_OUT_OF_MEMORY;
    Atomics.store(mem, pdWord, (pt << 12) | PTE_P | PTE_RW | PTE_US);
  } else {
    if ((pde & PTE_PS) !== 0) return MAP_CONFLICT;
    pt = pde >>> 12;
  }
  const w = pt * FRAME_WORDS + ((vlo >>> 12) & 1023);
  if ((mem[w] & PTE_P) !== 0) return MAP_CONFLICT;
  Atomics.store(mem, w, (pfn << 12) | leafBits(attrs));
  return MAP_OK;
}

/**
 * PAE paging: maps linear address vlo to frame pfn with a page of 2^shift bytes (12 or 21), under
 * the PDPT at the start of frame pdptPfn (CR3 = pdptPfn << 12), creating a page directory (its
 * PDPTE: present only, as the SDM allows no other bits) and page tables on `node`.
 */
export function mapPae(mem: Int32Array, frames: Frames, node: number, pdptPfn: number, vlo: number, pfn: number, shift: number, attrs: LeafAttrs): number {
  const pd = nextTable(mem, frames, node, pdptPfn * FRAME_WORDS + (vlo >>> 30) * 2, PTE_P);
  if (pd < 0) return -1 - pd;
  let table = pd;
  if (shift === 12) {
    table = nextTable(mem, frames, node, pd * FRAME_WORDS + ((vlo >>> 21) & 511) * 2, PTE_P | PTE_RW | PTE_US);
    if (table < 0) return -1 - table;
  }
  const w = table * FRAME_WORDS + ((vlo >>> shift) & 511) * 2;
  if ((mem[w] & PTE_P) !== 0) return MAP_CONFLICT;
  mem[w + 1] = makeHi(pfn, 0, attrs.nx ?? false);
  Atomics.store(mem, w, makeLo(pfn, leafBits(attrs) | (shift === 21 ? PTE_PS : 0)));
  return MAP_OK;
}

/** The table the 8-byte entry at `word` points at, made (zeroed, on `node`, linked with flags) when absent; -1 - MAP_* on failure. */
function nextTable(mem: Int32Array, frames: Frames, node: number, word: number, flags: number): number {
  const lo = mem[word];
  if ((lo & PTE_P) !== 0) return (lo & PTE_PS) !== 0 ? -1 - MAP_CONFLICT : (lo >>> 12) + (mem[word + 1] & HI_ADDR_MASK) * 0x100000;
  const t = frames.allocZeroed(node);
  if (t === NO_FRAME) return -1 - MAP_OUT_OF_MEMORY;
  mem[word + 1] = makeHi(t, 0, false);
  Atomics.store(mem, word, makeLo(t, flags));
  return t;
}

function mapping(va: number, pfn: number, size: number, lo: number, write: boolean, user: boolean, nx: boolean): Mapping {
  return {
    va: BigInt(va), pa: BigInt(pfn) << 12n, size, write, user, nx, global: (lo & PTE_G) !== 0, accessed: (lo & PTE_A) !== 0,
    dirty: (lo & PTE_D) !== 0, pkey: 0, pcd: (lo & PTE_PCD) !== 0, pwt: (lo & PTE_PWT) !== 0,
  };
}

/** Every present leaf of 32-bit paging under the page directory at pdPfn, in address order (4 MiB pages with CR4.PSE). */
export function enumerate32(mem: Int32Array, totalFrames: number, pdPfn: number, pse: boolean, maxPhysAddr: number): Mapping[] {
  const out: Mapping[] = [];
  if (pdPfn >= totalFrames) return out;
  const high = Math.min(maxPhysAddr, 40) - 32;
  for (let i = 0; i < 1024; i++) {
    const pde = mem[pdPfn * FRAME_WORDS + i];
    if ((pde & PTE_P) === 0) continue;
    if (pse && (pde & PTE_PS) !== 0) {
      if ((pde & ((1 << 22) - (1 << (13 + high)))) !== 0) continue; // reserved bits: the walker refuses it
      const pfn = (pde >>> 22) * 1024 + ((pde >>> 13) & ((1 << high) - 1)) * 0x100000;
      out.push(mapping(i * 2 ** 22, pfn, 2 ** 22, pde, (pde & PTE_RW) !== 0, (pde & PTE_US) !== 0, false));
      continue;
    }
    const pt = pde >>> 12;
    if (pt >= totalFrames) continue;
    for (let j = 0; j < 1024; j++) {
      const pte = mem[pt * FRAME_WORDS + j];
      if ((pte & PTE_P) === 0) continue;
      out.push(mapping(i * 2 ** 22 + j * 4096, pte >>> 12, 4096, pte, (pde & pte & PTE_RW) !== 0, (pde & pte & PTE_US) !== 0, false));
    }
  }
  return out;
}

/** Every present leaf of PAE paging under the PDPT at byte address cr3lo bits 31:5, in address order (the PDPTEs as memory holds them). */
export function enumeratePae(mem: Int32Array, totalFrames: number, cr3lo: number): Mapping[] {
  const out: Mapping[] = [];
  const base = (cr3lo >>> 5) * 8;
  const entry = (t: number, i: number): [number, number] => [mem[t * FRAME_WORDS + i * 2], mem[t * FRAME_WORDS + i * 2 + 1]];
  const frameOf = (lo: number, hi: number): number => (lo >>> 12) + (hi & HI_ADDR_MASK) * 0x100000;
  for (let p = 0; p < 4; p++) {
    const plo = mem[base + 2 * p];
    if ((plo & PTE_P) === 0) continue;
    const pd = frameOf(plo, mem[base + 2 * p + 1]);
    if (pd >= totalFrames) continue;
    for (let i = 0; i < 512; i++) {
      const [lo, hi] = entry(pd, i);
      if ((lo & PTE_P) === 0) continue;
      const va = p * 2 ** 30 + i * 2 ** 21;
      if ((lo & PTE_PS) !== 0) {
        out.push(mapping(va, frameOf(lo & ~PTE_PAT_HUGE, hi), 2 ** 21, lo, (lo & PTE_RW) !== 0, (lo & PTE_US) !== 0, (hi & HI_XD) !== 0));
        continue;
      }
      const pt = frameOf(lo, hi);
      if (pt >= totalFrames) continue;
      for (let j = 0; j < 512; j++) {
        const [tlo, thi] = entry(pt, j);
        if ((tlo & PTE_P) === 0) continue;
        out.push(mapping(va + j * 4096, frameOf(tlo, thi), 4096, tlo, (lo & tlo & PTE_RW) !== 0, (lo & tlo & PTE_US) !== 0, ((hi | thi) & HI_XD) !== 0));
      }
    }
  }
  return out;
}
