// Properties (fast-check): the entry and address codecs round-trip, and the walker agrees with a
// simple, independent reference walk (BigInt entries, boolean rules written out from the SDM)
// on random page tables under random register settings — translation, rights and every fault.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { entryFrame, entryPkey, makeHi, makeLo, HI_XD } from '../src/hw/pte.js';
import { isCanonical, join64, split64, tableIndex, canonicalize } from '../src/hw/vaddr.js';
import { Regs, CR0_WP, CR4_LA57, CR4_PKE, CR4_SMAP, CR4_SMEP, EFER_NXE } from '../src/hw/regs.js';
import { WalkOut, walk } from '../src/hw/walk.js';
import { F_NW, F_SUPER, F_XD, faultVector, faultError } from '../src/hw/fault.js';
import { Layout } from '../src/hw/layout.js';
import { validateConfig } from '../src/machine/config.js';
import { Rng } from '../src/workloads/rng.js';

const P = suite('codecs');

P('split64/join64 round-trip every 64-bit value', () => {
  fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (v) => join64(split64(v).hi, split64(v).lo) === v));
});

P('an entry built from (frame, flags, key, XD) decodes to the same values', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 40 - 1 }), fc.integer({ min: 0, max: 0xfff }), fc.integer({ min: 0, max: 15 }), fc.boolean(),
      (pfn, flags, key, xd) => {
        const lo = makeLo(pfn, flags);
        const hi = makeHi(pfn, key, xd);
        return entryFrame(lo, hi) === pfn && (lo & 0xfff) === flags && entryPkey(hi) === key && ((hi & HI_XD) !== 0) === xd;
      }),
  );
});

P('tableIndex on 32-bit halves equals (va >> shift) & 511 for every level', () => {
  fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.constantFrom(12, 21, 30, 39, 48), (va, shift) => {
    const { hi, lo } = split64(va);
    return tableIndex(hi, lo, shift) === Number((va >> BigInt(shift)) & 511n);
  }));
});

P('isCanonical matches sign extension from bit 47 (4-level) or 56 (5-level)', () => {
  fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.boolean(), (va, la57) => {
    const { hi } = split64(va);
    return isCanonical(hi, la57) === (canonicalize(va, la57 ? 57 : 48) === va);
  }));
});

// ---------------------------------------------------------------------------------------------
// The reference walk: BigInt entries, rules spelled out one by one.

interface RefRegs {
  cpl: number; wp: boolean; smep: boolean; smap: boolean; ac: boolean; nxe: boolean; pke: boolean; pkru: number; la57: boolean; pge: boolean;
}

type RefResult = { fault: 'gp' } | { fault: 'pf'; err: number } | { pa: bigint; rw: boolean; us: boolean; xd: boolean; global: boolean };

function refWalk(mem64: BigUint64Array, frames: number, root: number, r: RefRegs, va: bigint, acc: 'r' | 'w' | 'x', maxPhys: number): RefResult {
  const bits = r.la57 ? 57 : 48;
  if (canonicalize(va, bits) !== va) return { fault: 'gp' };
  const user = r.cpl === 3;
  let err = (acc === 'w' ? 2 : 0) | (user ? 4 : 0) | (acc === 'x' && (r.nxe || r.smep) ? 16 : 0);
  let table = BigInt(root);
  let rw = true, us = true, xd = false;
  const rsvdHigh = ((1n << 52n) - 1n) ^ ((1n << BigInt(maxPhys)) - 1n);
  for (let level = r.la57 ? 5 : 4; level >= 1; level--) {
    const shift = BigInt(12 + 9 * (level - 1));
    const idx = (va >> shift) & 511n;
    const e = table < BigInt(frames) ? mem64[Number(table) * 512 + Number(idx)] : (1n << 64n) - 1n;
    if ((e & 1n) === 0n) return { fault: 'pf', err };
    const ps = (e >> 7n) & 1n;
    let rsvd = (e & rsvdHigh) !== 0n || (!r.nxe && (e >> 63n) === 1n);
    if (level >= 4 && ps) rsvd = true;
    const leaf = level === 1 || ((level === 2 || level === 3) && ps === 1n);
    if (leaf && level === 2 && ((e >> 13n) & 0xffn) !== 0n) rsvd = true;
    if (leaf && level === 3 && ((e >> 13n) & 0x1ffffn) !== 0n) rsvd = true;
    if (rsvd) return { fault: 'pf', err: err | 1 | 8 };
    rw &&= ((e >> 1n) & 1n) === 1n;
    us &&= ((e >> 2n) & 1n) === 1n;
    xd ||= (e >> 63n) === 1n;
    const addr = e & 0x000f_ffff_ffff_f000n;
    if (!leaf) {
      table = addr >> 12n;
      continue;
    }
    const base = level === 1 ? addr : addr & ~((1n << shift) - 1n);
    let denied = false;
    let pk = false;
    if (acc === 'x') {
      if (r.nxe && xd) denied = true;
      if (user && !us) denied = true;
      if (!user && us && r.smep) denied = true;
    } else {
      if (user && !us) denied = true;
      if (!user && us && r.smap && !r.ac) denied = true;
      if (acc === 'w') {
        if (user && !rw) denied = true;
        if (!user && !rw && r.wp) denied = true;
      }
      if (r.pke && us) {
        const key = Number((e >> 59n) & 15n);
        const ad = (r.pkru >>> (2 * key)) & 1;
        const wd = (r.pkru >>> (2 * key + 1)) & 1;
        if (ad) pk = true;
        if (acc === 'w' && wd && (user || r.wp)) pk = true;
      }
    }
    if (denied || pk) return { fault: 'pf', err: err | 1 | (pk ? 32 : 0) };
    return { pa: base | (va & ((1n << shift) - 1n)), rw, us, xd: xd && r.nxe, global: r.pge && ((e >> 8n) & 1n) === 1n };
  }
  throw new Error('unreachable');
}

/** Random tables: each level's entries drawn from a few indices so that random addresses hit them. */
function randomTables(mem: Int32Array, frames: number, seed: number, la57: boolean): { root: number; vas: bigint[] } {
  const rng = new Rng(seed, 7);
  let next = 1;
  const alloc = (): number => (next < frames ? next++ : -1);
  const root = alloc();
  mem.fill(0);
  const pick = (n: number): number => rng.below(n);
  const fill = (table: number, level: number): void => {
    for (let idx = 0; idx < 4; idx++) {
      const w = table * 1024 + idx * 2;
      let lo = pick(8) === 0 ? 0 : 1; // mostly present
      if (pick(4) !== 0) lo |= 2;
      if (pick(4) !== 0) lo |= 4;
      if (pick(3) === 0) lo |= 0x100; // G
      if (pick(4) === 0) lo |= 0x20; // A
      let hi = (pick(16) << 27) | (pick(6) === 0 ? 1 << 31 : 0);
      if (pick(20) === 0) hi |= 1 << (pick(20)); // maybe a reserved address bit
      const huge = (level === 2 || level === 3) && pick(3) === 0;
      const wantPs = pick(30) === 0 && level >= 4;
      if (level === 1 || huge) {
        if (huge) lo |= 0x80;
        const frame = huge ? 0 : pick(frames);
        lo |= frame << 12;
        if (huge && pick(10) === 0) lo |= 1 << 14; // reserved low address bit
        mem[w + 1] = hi;
        mem[w] = lo;
      } else {
        const t = alloc();
        if (t < 0) continue;
        if (wantPs) lo |= 0x80;
        mem[w + 1] = hi & ~(0xf << 27);
        mem[w] = lo | (t << 12);
        fill(t, level - 1);
      }
    }
  };
  fill(root, la57 ? 5 : 4);
  const vas: bigint[] = [];
  for (let i = 0; i < 40; i++) {
    let va = 0n;
    for (let level = la57 ? 5 : 4; level >= 1; level--) va |= BigInt(pick(4)) << BigInt(12 + 9 * (level - 1));
    va |= BigInt(pick(512) * 8);
    if (pick(4) === 0) va = canonicalize(va | (1n << BigInt(la57 ? 56 : 47)), la57 ? 57 : 48);
    if (pick(20) === 0) va |= 1n << 60n; // non-canonical
    vas.push(va);
  }
  return { root, vas };
}

P('the walker agrees with the reference walk on random tables, registers and accesses', () => {
  const v = validateConfig({ cores: 1, nodes: 1, memory: '1MiB' });
  if ('error' in v) throw new Error(v.error);
  const layout = new Layout(v.config);
  const sab = new SharedArrayBuffer(v.config.memoryBytes);
  const mem = new Int32Array(sab);
  const mem64 = new BigUint64Array(sab);
  const out = new WalkOut();
  let checked = 0;
  let faults = 0;
  fc.assert(
    fc.property(fc.integer(), fc.boolean(), fc.record({
      cpl: fc.constantFrom(0, 3), wp: fc.boolean(), smep: fc.boolean(), smap: fc.boolean(), ac: fc.boolean(),
      nxe: fc.boolean(), pke: fc.boolean(), pkru: fc.integer(), pge: fc.boolean(),
    }), (seed, la57, rr) => {
      const { root, vas } = randomTables(mem, layout.totalFrames, seed, la57);
      const regs = new Regs(v.config.maxPhysAddr);
      regs.cr0 = (1 << 31) | 1 | (rr.wp ? CR0_WP : 0);
      regs.cr3hi = 0;
      regs.cr3lo = root << 12;
      regs.cr4 = 0x20 | (rr.smep ? CR4_SMEP : 0) | (rr.smap ? CR4_SMAP : 0) | (rr.pke ? CR4_PKE : 0) | (la57 ? CR4_LA57 : 0) | (rr.pge ? 0x80 : 0);
      regs.efer = 0x500 | (rr.nxe ? EFER_NXE : 0);
      regs.pkru = rr.pkru;
      regs.cpl = rr.cpl;
      regs.ac = rr.ac;
      regs.decode();
      const ref: RefRegs = { ...rr, la57 };
      for (const va of vas) {
        for (const [acc, accName] of [[0, 'r'], [1, 'w'], [2, 'x']] as const) {
          const { hi, lo } = split64(va);
          const got = walk(mem, layout.totalFrames, regs, hi, lo, acc, out, false, true);
          const want = refWalk(mem64, layout.totalFrames, root, ref, va, accName, v.config.maxPhysAddr);
          checked++;
          if ('fault' in want) {
            faults++;
            const desc = `seed ${seed} va ${va.toString(16)} acc ${accName}`;
            assert.ok(got !== 0, `${desc}: walker translated, reference faults`);
            assert.is(faultVector(got), want.fault === 'gp' ? 13 : 14, desc);
            if (want.fault === 'pf') assert.is(faultError(got), want.err, `${desc}: error code`);
          } else {
            assert.is(got, 0, `seed ${seed} va ${va.toString(16)} acc ${accName}: walker faults (${faultError(got)}), reference translates`);
            const size = 1n << BigInt(out.shift);
            assert.is((BigInt(out.pfn) << 12n) | (va & (size - 1n)), want.pa);
            assert.is((out.flags & F_NW) === 0, want.rw);
            assert.is((out.flags & F_SUPER) === 0, want.us);
            assert.is((out.flags & F_XD) !== 0, want.xd);
            assert.is(out.global, want.global);
          }
        }
      }
    }),
    { numRuns: 300 },
  );
  assert.ok(checked > 10_000 && faults > 1000 && checked - faults > 1000, `varied cases: ${checked} checked, ${faults} faults`);
});

P.run();
