// Sized data accesses (1, 2, 4 or 8 bytes, aligned or not) on top of a core's MMU: the SDM's
// page-crossing rule (both pages translated before either is touched) and byte-wise stores. The
// MMU's access() calls it; the owning thread of the core only, no allocation.

import { ACC_READ, ACC_WRITE, FAULT_NOMEM } from './fault.js';
import { physByte, storePhysByte } from './frames.js';
import type { Mmu } from './mmu.js';

/**
 * A data access of `size` bytes (1, 2, 4 or 8) at vhi:vlo, aligned or not. One that crosses a
 * page boundary translates both pages before it touches either (as QEMU's probe of both
 * pages): a fault on the second page reports that page's address in CR2 and the first page is
 * not written. A load's value lands in valHi:valLo, zero-extended; a store writes the low `size`
 * bytes of hi:lo, each byte on its own (a compareExchange per word: bytes of a word that other
 * cores store meanwhile are kept). Memory that is not installed reads as all ones and drops
 * writes; the device's registers answer 8-byte aligned accesses (load64/store64) only. Returns 0
 * or a fault code.
 */
export function sizedAccess(m: Mmu, vhi: number, vlo: number, size: number, write: boolean, hi: number, lo: number): number {
  m.countAccesses(write ? 0 : 1, write ? 1 : 0, 0);
  const acc = write ? ACC_WRITE : ACC_READ;
  const first = Math.min(size, 4096 - (vlo & 0xfff));
  const w1 = m.translate(vhi, vlo, acc);
  m.lastWord = w1;
  m.lastWord2 = -1;
  if (w1 < 0 && w1 !== FAULT_NOMEM) return w1;
  let w2 = -1;
  if (first < size) {
    // The next page: its address (a carry into the high half when the low one wraps).
    const lo2 = ((vlo | 0xfff) + 1) | 0;
    const hi2 = lo2 === 0 ? (vhi + 1) | 0 : vhi;
    w2 = m.translate(hi2, lo2, acc);
    if (w2 < 0 && w2 !== FAULT_NOMEM) return w2;
    m.lastWord2 = w2;
  }
  // Byte addresses of the two parts (-1: not installed).
  const pa1 = w1 < 0 ? -1 : w1 * 4 + (vlo & 3);
  const pa2 = w2 < 0 ? -1 : w2 * 4;
  if (!write) {
    let vl = 0;
    let vh = 0;
    for (let i = 0; i < size; i++) {
      const b = physByte(m.mem, i < first ? (pa1 < 0 ? -1 : pa1 + i) : pa2 < 0 ? -1 : pa2 + i - first);
      if (i < 4) vl |= b << (8 * i);
      else vh |= b << (8 * (i - 4));
    }
    m.valLo = vl;
    m.valHi = vh;
    return 0;
  }
  for (let i = 0; i < size; i++) {
    const pa = i < first ? (pa1 < 0 ? -1 : pa1 + i) : pa2 < 0 ? -1 : pa2 + i - first;
    if (pa >= 0) storePhysByte(m.mem, pa, (i < 4 ? lo >>> (8 * i) : hi >>> (8 * (i - 4))) & 0xff);
  }
  return 0;
}
