// Broken invariants. An expected outcome (a fault, a missing mapping, out of memory) is a value;
// an impossible state is a panic whose message reads "function: reason".

/** Throws an Error whose message is "panic: fn: reason". Never returns. */
export function panic(msg: string): never {
  throw new Error(`panic: ${msg}`);
}

/** The kernel's own control-register and INVPCID instructions never fault: one that does (r != 0) is a kernel bug. */
export function must(core: number, r: number, what: string): void {
  if (r !== 0) panic(`core ${core}: ${what} raised #GP(0)`);
}
