// Broken invariants. An expected outcome (a fault, a missing mapping, out of memory) is a value;
// an impossible state is a panic whose message reads "function: reason".

/** Throws an Error whose message is "panic: fn: reason". Never returns. */
export function panic(msg: string): never {
  throw new Error(`panic: ${msg}`);
}
