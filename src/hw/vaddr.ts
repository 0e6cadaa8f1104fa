// The one virtual-address codec. A 64-bit linear address travels through nrvm in one of three
// forms, and this module is the only place that converts between them:
//   (vhi, vlo)  two signed 32-bit halves: the hardware's form (walker, TLB, IPIs, NR arguments);
//   va          a JavaScript number: the kernel's form for user addresses, exact below 2^53;
//   bigint      the public edge only (dumps, the Simulator, the command line).
// It also holds the table index of a level (SDM 4.5: bits 47:39, 38:30, 29:21, 20:12, and 56:48
// under LA57) and the canonical check.

/** 2^32: the weight of the high half. */
export const TWO32 = 4294967296;

/** High half (bits 63:32) of a numeric address. */
export function vaHi(va: number): number {
  return Math.floor(va / TWO32) | 0;
}

/** Low half (bits 31:0) of a numeric address, as a signed 32-bit value. */
export function vaLo(va: number): number {
  return va % TWO32 | 0;
}

/** The numeric address of halves vhi:vlo (exact while it is below 2^53). */
export function vaJoin(vhi: number, vlo: number): number {
  return vhi * TWO32 + (vlo >>> 0);
}

/**
 * High half of the address `bytes` (>= 0) past vhi:vlo. With addLo, the way to step through a
 * range held as halves: small integers in and out, so a call that is not inlined allocates
 * nothing (a number above 2^31 passed or returned would be a heap number).
 */
export function addHi(vhi: number, vlo: number, bytes: number): number {
  return (vhi + Math.floor(((vlo >>> 0) + bytes) / TWO32)) | 0;
}

/** Low half of the address `bytes` (>= 0) past an address whose low half is vlo (see addHi). */
export function addLo(vlo: number, bytes: number): number {
  return (vlo + bytes) | 0;
}

/** Writes the address of 4 KiB page number `page` into words[at] (high half) and words[at + 1] (low half). */
export function putPage(words: Int32Array, at: number, page: number): void {
  words[at] = Math.floor(page / 1048576) | 0;
  words[at + 1] = (page % 1048576) * 4096;
}

/** The numeric address held at words[at] (high half) and words[at + 1] (low half). */
export function getVa(words: Int32Array, at: number): number {
  return words[at] * TWO32 + (words[at + 1] >>> 0);
}

/** Writes numeric address va (user half, >= 0) into words[at] (high half) and words[at + 1] (low half). */
export function putVa(words: Int32Array, at: number, va: number): void {
  words[at] = vaHi(va);
  words[at + 1] = vaLo(va);
}

/** The 4 KiB page number of a numeric address. */
export function pageNumber(va: number): number {
  return Math.floor(va / 4096);
}

/** The address of the 4 KiB page holding va. */
export function pageBase(va: number): number {
  return va - (va % 4096);
}

/**
 * Index into the table at the level whose entries each cover 2^shift bytes, for a linear address
 * held as 32-bit halves (shift = 12 + 9 * (level - 1): 12, 21, 30, 39, 48).
 */
export function tableIndex(vhi: number, vlo: number, shift: number): number {
  if (shift >= 32) return (vhi >>> (shift - 32)) & 511;
  if (shift <= 23) return (vlo >>> shift) & 511;
  return ((vlo >>> shift) | (vhi << (32 - shift))) & 511;
}

/**
 * Canonical check: bits 63:47 all equal (4-level) or bits 63:56 all equal (5-level, CR4.LA57).
 * A non-canonical access is #GP(0), never #PF.
 */
export function isCanonical(vhi: number, la57: boolean): boolean {
  const top = la57 ? vhi >> 24 : vhi >> 15;
  return top === 0 || top === -1;
}

// ---------------------------------------------------------------------------------------------
// Public edge: 64-bit values as BigInt, split into halves.

const MASK64 = (1n << 64n) - 1n;

/** Splits a 64-bit value (BigInt, any sign) into signed 32-bit halves. */
export function split64(v: bigint): { hi: number; lo: number } {
  const u = v & MASK64;
  return { hi: Number(u >> 32n) | 0, lo: Number(u & 0xffffffffn) | 0 };
}

/** Joins signed 32-bit halves into an unsigned 64-bit BigInt. */
export function join64(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Formats a 64-bit value held as halves as 0x-prefixed hex. */
export function hex64(hi: number, lo: number): string {
  return '0x' + join64(hi, lo).toString(16);
}

/**
 * Parses an address from the public edge: a BigInt, a safe non-negative integer, or a string in
 * hex (0x...), decimal, or with an underscore/size suffix left to the caller. Returns null when
 * the value is not an integer in [0, 2^64).
 */
export function parseAddress(v: bigint | number | string): bigint | null {
  let b: bigint;
  try {
    if (typeof v === 'bigint') b = v;
    else if (typeof v === 'number') {
      if (!Number.isSafeInteger(v)) return null;
      b = BigInt(v);
    } else {
      const s = v.trim().replace(/_/g, '');
      if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(s)) return null;
      b = BigInt(s);
    }
  } catch {
    return null;
  }
  if (b < 0n || b > MASK64) return null;
  return b;
}

/** Sign-extends a linear address of `bits` significant bits (48 or 57) to canonical form. */
export function canonicalize(va: bigint, bits: number): bigint {
  const low = va & ((1n << BigInt(bits)) - 1n);
  return (low >> BigInt(bits - 1)) & 1n ? low | (MASK64 ^ ((1n << BigInt(bits)) - 1n)) : low;
}
