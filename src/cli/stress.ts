// `nrvm stress`: rounds of seeded random programs on every core until the time is up, with the
// hardware oracles checked after each round. Reports what ran, what the TLBs and IPIs did, and
// every violation with the command that replays the run.

import { Machine } from '../machine/machine.js';
import type { MachineOptions } from '../machine/config.js';
import { writeDump, type DumpPaging } from '../machine/dump.js';
import { hwStressJobs, setupHwStress, type StressMix } from '../workloads/hwstress.js';
import { checkCores, checkIpis, checkToggles, checkXlates, type Violation } from '../check/hw.js';
import { FOLLOWED_FAILURE, type CoreResult } from '../machine/executor.js';
import { writeChromeTrace } from '../trace/chrome.js';

export interface StressOptions {
  machine: MachineOptions;
  seconds: number;
  seed: number;
  opsPerRound: number;
  mix: StressMix;
  /** The paging mode of the shared tables (default 4-level). */
  paging?: DumpPaging;
  dump?: string;
  /** Write a Chrome trace of the run here (the machine records trace events). */
  trace?: string;
  /** Called after every round with a one-line status (the CLI prints it on a terminal). */
  progress?: (line: string) => void;
}

export interface StressReport {
  seed: number;
  config: { cores: number; nodes: number; memoryBytes: number; inject: string[]; paging: DumpPaging };
  seconds: number;
  rounds: number;
  ops: Record<string, number>;
  accesses: number;
  accessesPerSec: number;
  faults: number;
  tlb: { hits: number; misses: number; hitRate: number; walks: number };
  ipis: { sent: number; received: number };
  pteUpdates: number;
  violations: (Violation & { round: number })[];
  replay: string;
  dump?: string;
  trace?: string;
  /** Outputs (--dump, --trace) that could not be written; the report itself is whole. */
  outputErrors: string[];
}

const SUM_COUNTERS = ['loads', 'stores', 'fetches', 'invlpg', 'ipisSent', 'ipisReceived', 'translations', 'pteUpdates', 'tlbHits', 'tlbMisses', 'walks', 'pageFaults', 'gpFaults'];

/**
 * Writes one output of a finished run: its path when written, or undefined with the reason in
 * `errors` — an output that fails loses nothing else (the report is printed all the same).
 */
export async function keep(errors: string[], flag: string, path: string, write: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await write();
    return path;
  } catch (e) {
    errors.push(`${flag} ${path}: ${(e as Error).message}`);
    return undefined;
  }
}

/** Awaits `p`, calling `tick` every `ms` meanwhile (a round can last the whole run: progress must not wait for it). */
export async function ticking<T>(p: Promise<T>, ms: number, tick: () => void): Promise<T> {
  const t = setInterval(tick, ms);
  try {
    return await p;
  } finally {
    clearInterval(t);
  }
}

/** Runs the stress loop. Rejects only for configuration/setup errors; violations are in the report. */
export async function runStress(o: StressOptions, replay: string): Promise<StressReport> {
  const m = await Machine.boot({ ...o.machine, trace: o.trace !== undefined });
  try {
    const setup = setupHwStress(m, 64, o.paging ?? '4level');
    await m.warmUp();
    const sum: Record<string, number> = Object.fromEntries(SUM_COUNTERS.map((k) => [k, 0]));
    let toggles = 0;
    const violations: StressReport['violations'] = [];
    const t0 = performance.now();
    const deadline = t0 + o.seconds * 1000;
    let round = 0;
    /** The progress line: totals of the rounds done so far (a core publishes its counters when its round ends). */
    const line = (r: number, running: boolean): string => {
      const el = (performance.now() - t0) / 1000;
      const acc = sum.loads + sum.stores + sum.fetches;
      return `[${el.toFixed(1)}s/${o.seconds}s] round ${running ? r + 1 : r}${running ? ' running' : ''}  accesses ${fmt(acc)} (${fmt(acc / Math.max(el, 1e-3))}/s)  ` +
        `TLB hit ${(100 * sum.tlbHits / Math.max(1, sum.tlbHits + sum.tlbMisses)).toFixed(1)}%  IPIs ${fmt(sum.ipisSent)}  violations ${violations.length}`;
    };
    do {
      const before = new Map(setup.toggleWords.map((w) => [w, (m.mem[w] >>> 9) & 1]));
      // A round ends after its operations or at the run's deadline, whichever comes first.
      const jobs = hwStressJobs(m, setup, o.seed, round, o.opsPerRound, o.mix, Date.now() + Math.max(1, deadline - performance.now()));
      const res: CoreResult[] = await ticking(m.run(jobs), 1000, () => o.progress?.(line(round, true)));
      const found = [
        ...checkCores(res),
        ...checkIpis(res),
        ...checkXlates(res, setup.legalXlates),
        ...checkToggles(res, m.mem, before),
      ];
      for (const v of found) violations.push({ ...v, round });
      // Core counters are cumulative since boot: the totals are their sum over cores.
      const all = m.sumCounters();
      for (const k of SUM_COUNTERS) sum[k] = all[k] ?? 0;
      for (const r of res) for (const n of Object.values(r.toggles)) toggles += n;
      round++;
      o.progress?.(line(round, false));
      if (found.some((v) => v.kind === 'core-failure')) break;
    } while (performance.now() < deadline);
    const seconds = (performance.now() - t0) / 1000;
    const accesses = sum.loads + sum.stores + sum.fetches;
    const outputErrors: string[] = [];
    const dump = o.dump ? await keep(outputErrors, '--dump', o.dump, () => writeDump(m, o.dump as string, [{ label: 'stress-shared', cr3: setup.cr3, la57: setup.paging === '5level', paging: setup.paging }])) : undefined;
    const trace = o.trace ? await keep(outputErrors, '--trace', o.trace, () => writeChromeTrace(m, o.trace as string, violationInstants(violations))) : undefined;
    return {
      seed: o.seed,
      config: { cores: m.config.cores, nodes: m.config.nodes, memoryBytes: m.config.memoryBytes, inject: m.config.inject, paging: setup.paging },
      seconds,
      rounds: round,
      ops: {
        load: sum.loads, store: sum.stores, fetch: sum.fetches, invlpg: sum.invlpg, ping: sum.ipisSent,
        xlate: sum.translations, toggle: toggles, flip: sum.pteUpdates,
      },
      accesses,
      accessesPerSec: accesses / seconds,
      faults: sum.pageFaults + sum.gpFaults,
      tlb: { hits: sum.tlbHits, misses: sum.tlbMisses, hitRate: sum.tlbHits / Math.max(1, sum.tlbHits + sum.tlbMisses), walks: sum.walks },
      ipis: { sent: sum.ipisSent, received: sum.ipisReceived },
      pteUpdates: sum.pteUpdates,
      violations,
      replay,
      dump,
      trace,
      outputErrors,
    };
  } finally {
    await m.shutdown();
  }
}

/** 1234567 -> "1.23M". */
export function fmt(n: number): string {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + 'G';
  if (n >= 1e6) return (n / 1e6).toFixed(2) + 'M';
  if (n >= 1e3) return (n / 1e3).toFixed(1) + 'k';
  return n.toFixed(0);
}

/** The human summary printed after a run. */
export function formatReport(r: StressReport): string {
  const lines = [
    `nrvm stress: ${r.config.cores} cores on ${r.config.nodes} nodes, ${r.config.memoryBytes / 2 ** 20} MiB, ${r.config.paging} paging, seed ${r.seed}` +
      (r.config.inject.length ? `, injected: ${r.config.inject.join(', ')}` : ''),
    `  ran ${r.seconds.toFixed(1)} s, ${r.rounds} rounds`,
    `  operations  ${Object.entries(r.ops).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`,
    `  accesses    ${fmt(r.accesses)} (${fmt(r.accessesPerSec)}/s over all cores)`,
    `  faults      ${fmt(r.faults)} (#PF and #GP; walks of the flip page during a break are not-present faults)`,
    `  TLB         hit rate ${(100 * r.tlb.hitRate).toFixed(2)}%, ${fmt(r.tlb.misses)} misses, ${fmt(r.tlb.walks)} walks`,
    `  IPIs        ${fmt(r.ipis.sent)} sent, ${fmt(r.ipis.received)} received; entry rewrites (break-before-make) ${fmt(r.pteUpdates)}`,
  ];
  if (r.dump) lines.push(`  dump        ${r.dump}/phys.bin, ${r.dump}/machine.json`);
  if (r.trace) lines.push(`  trace       ${r.trace} (Chrome trace events: open in Perfetto or chrome://tracing)`);
  lines.push(...formatViolations(r.violations), `  replay      ${r.replay}`);
  return lines.join('\n');
}

/** Violations as trace instants, on the track of the core their detail names ("core 3 ...", else 0). */
export function violationInstants(violations: { kind: string; detail: string }[]): { core: number; name: string; detail: string }[] {
  return violations.map((v) => ({ core: Number(/core (\d+)/.exec(v.detail)?.[1] ?? 0), name: v.kind, detail: v.detail }));
}

/** The report's violation lines: none, or the count by kind and the first five (causes before the cores that only followed). */
export function formatViolations(violations: { kind: string; detail: string; round: number | string }[]): string[] {
  if (violations.length === 0) return ['  violations  none'];
  const kinds = new Map<string, number>();
  for (const v of violations) kinds.set(v.kind, (kinds.get(v.kind) ?? 0) + 1);
  const lines = [`  VIOLATIONS  ${violations.length}: ${[...kinds].map(([k, n]) => `${k} x${n}`).join(', ')}`];
  // The cores that stopped because another failed come last: the five shown are the causes.
  const followed = (v: { detail: string }): boolean => v.detail.endsWith(FOLLOWED_FAILURE);
  const shown = [...violations.filter((v) => !followed(v)), ...violations.filter(followed)];
  for (const v of shown.slice(0, 5)) lines.push(`    round ${v.round} ${v.kind}: ${v.detail}`);
  if (violations.length > 5) lines.push(`    ... ${violations.length - 5} more (--json lists all)`);
  return lines;
}

