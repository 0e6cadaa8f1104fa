// Oracles for the hardware stress run. Each takes the cores' results (and memory where needed)
// and returns violations with enough detail to start debugging; none of them can pass by
// construction — the tests inject the fault each one exists for and watch it fire.
//
//   ipi-lost / ipi-duplicated  per (sender, receiver): received count and payload sum equal sent
//   torn-translation           a walk of the flip page produced neither legal state
//   lost-entry-update          an entry's software bit 9 parity differs from the number of flips
//   core-failure               a core reported an error (a bounded wait expired, a panic)

import type { CoreResult } from '../machine/executor.js';

export interface Violation {
  kind: 'ipi-lost' | 'ipi-duplicated' | 'torn-translation' | 'lost-entry-update' | 'core-failure';
  detail: string;
}

/** Every IPI sent from i to j was received by j from i exactly once (counts and payload sums). */
export function checkIpis(res: CoreResult[]): Violation[] {
  const out: Violation[] = [];
  for (const s of res) {
    for (const r of res) {
      if (s.pingsSentTo.length === 0 || r.pingsRecvFrom.length === 0) continue;
      const sent = s.pingsSentTo[r.core];
      const got = r.pingsRecvFrom[s.core];
      if (got < sent) out.push({ kind: 'ipi-lost', detail: `core ${s.core} sent ${sent} IPIs to core ${r.core}, which received ${got}` });
      else if (got > sent) out.push({ kind: 'ipi-duplicated', detail: `core ${r.core} received ${got} IPIs from core ${s.core}, which sent ${sent}` });
      else if (r.pingSumFrom[s.core] !== s.pingSumTo[r.core]) {
        out.push({ kind: 'ipi-lost', detail: `payloads from core ${s.core} to core ${r.core} differ (one lost, one duplicated)` });
      }
    }
  }
  return out;
}

/** Every translation of the flip page is one of the legal outcomes. */
export function checkXlates(res: CoreResult[], legal: Set<string>): Violation[] {
  const out: Violation[] = [];
  for (const r of res) {
    for (const [k, n] of Object.entries(r.xlates)) {
      if (!legal.has(k)) out.push({ kind: 'torn-translation', detail: `core ${r.core} built translation ${k} (frame:flags) ${n} time(s); legal: ${[...legal].join(', ')}` });
    }
  }
  return out;
}

/**
 * The parity of bit 9 in each toggled entry equals its parity before the round plus the number
 * of flips made: a racing A/D update that overwrote a flip shows here.
 */
export function checkToggles(res: CoreResult[], mem: Int32Array, before: Map<number, number>): Violation[] {
  const out: Violation[] = [];
  const flips = new Map<number, number>();
  for (const r of res) for (const [w, n] of Object.entries(r.toggles)) flips.set(Number(w), (flips.get(Number(w)) ?? 0) + n);
  for (const [w, bit] of before) {
    const n = flips.get(w) ?? 0;
    const now = (mem[w] >>> 9) & 1;
    if (now !== ((bit + n) & 1)) out.push({ kind: 'lost-entry-update', detail: `entry at physical 0x${(w * 4).toString(16)}: ${n} flips of bit 9 from ${bit}, now ${now}` });
  }
  return out;
}

/** Cores that failed (bounded waits that expired, panics). */
export function checkCores(res: CoreResult[]): Violation[] {
  return res.filter((r) => !r.ok).map((r) => ({ kind: 'core-failure' as const, detail: r.error ?? `core ${r.core} failed` }));
}
