// A small seeded PRNG (sfc32, Chris Doty-Humphrey's Small Fast Counting generator): 32-bit
// integer state, no allocation per draw, the same stream on every platform for a given seed.

/** Deterministic random numbers from a 32-bit seed and a stream number (e.g. the core). */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d = 1;

  constructor(seed: number, stream = 0) {
    this.a = seed | 0;
    this.b = (stream * 0x9e3779b9) | 0;
    this.c = 0x2545f491 ^ (seed >>> 16);
    for (let i = 0; i < 15; i++) this.next();
  }

  /** Next 32-bit value (signed int32). */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t;
  }

  /** Uniform integer in [0, n), n <= 2^32. */
  below(n: number): number {
    return Math.floor(((this.next() >>> 0) / 4294967296) * n);
  }
}
