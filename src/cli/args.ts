// What every command of nrvm shares: its usage error, option parsing with node:util parseArgs
// (every mistake a message that names it), whole numbers in range, the machine options, mixes,
// output paths checked before any work, and replay lines.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { accessSync, constants as fsConstants, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { DEFAULTS, MAX_CORES, parseSize } from '../hw/config.js';
import { DEFAULT_KERNEL } from '../kernel/options.js';
import type { MachineOptions } from '../machine/config.js';

export const MACHINE_HELP = `Machine options:
  --cores N           simulated cores, one worker thread each (default ${DEFAULTS.cores}; may exceed real cores)
  --nodes N           NUMA nodes, each a contiguous range of frames (default ${DEFAULTS.nodes})
  --memory SIZE       physical memory, e.g. 64MiB, 1GiB (default ${DEFAULTS.memoryBytes / 2 ** 20}MiB)
  --ipi-slots N       IPI queue slots per core, a power of two >= 2 (default ${DEFAULTS.ipiQueueSlots})
  --wait-limit MS     bound on any single wait before a core reports what it waited for (default ${DEFAULTS.waitLimitMs})
  --log-entries N     entries of each address space's NR log, a power of two (default ${DEFAULT_KERNEL.logEntries})
  --max-batch N       most operations one combiner appends at once (default ${DEFAULT_KERNEL.maxBatch})
  --cow POLICY        copy-on-write policy: default (the last sharer's write reuses the frame) or
                      mh (MH: it becomes private read-only, the retried write faults once more)
  --kernel NAME       kernel personality: default (NRK's operations, Linux copy-on-write) or mh
                      (MH's mapping states: EINVAL/EPERM/EBUSY, export to a device for DMA,
                      copy-on-write handled by the process at user level; implies --cow mh)
  --device-pages N    register pages of the device above RAM, 1-64 (default 4; --kernel mh only)
  --khalf METHOD      how the kernel half (top-level entries 256-511, shared by every address space)
                      follows a change of a top-level kernel entry: eager (every space at once,
                      default), switch (copied when a space is switched in), lazy (copied from the
                      master on a kernel page fault; cannot remove: kunmap of a last mapping is refused)
  --psc               give each core a paging-structure cache (a PDE cache, SDM 4.10.3; off by default)
  --mshare-flush WHOM
                      a change in an mshare region shoots down the cores of the processes attached
                      to it (attached, default) or makes every core flush all its non-global
                      translations (all: what the mshare patches do when the set is unknown)
`;

/** A usage mistake: printed as "nrvm: message" with exit code 2. */
export class UsageError extends Error {}

export const machineOptions = {
  cores: { type: 'string' },
  nodes: { type: 'string' },
  memory: { type: 'string' },
  'ipi-slots': { type: 'string' },
  'wait-limit': { type: 'string' },
  'log-entries': { type: 'string' },
  'max-batch': { type: 'string' },
  cow: { type: 'string' },
  kernel: { type: 'string' },
  'device-pages': { type: 'string' },
  khalf: { type: 'string' },
  psc: { type: 'boolean' },
  'mshare-flush': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** What parse returns for options T (named, so that the declaration emitter can write it). */
export type Parsed<T extends NonNullable<ParseArgsConfig['options']>> = ReturnType<typeof parseArgs<{ args: string[]; options: T; allowPositionals: false; strict: true }>>;

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, command: string): Parsed<T> {
  try {
    return parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (e) {
    const msg = (e as Error).message;
    // parseArgs reads "--cores -1" as an option followed by another: say what to write instead.
    const amb = /Option '(--[a-z-]+)[^']*' argument is ambiguous/.exec(msg);
    if (amb) throw new UsageError(`${command}: ${amb[1]} needs a value; a value that starts with '-' is written ${amb[1]}=VALUE (see 'nrvm help ${command}')`);
    throw new UsageError(`${command}: ${msg.replace(/\. To specify a positional.*$/, '')} (see 'nrvm help ${command}')`);
  }
}

export function int(v: string | undefined, name: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (v.trim() === '') throw new UsageError(`--${name} needs a value (got an empty one)`);
  if (!/^-?\d+$/.test(v)) throw new UsageError(`--${name} must be a whole number, got '${v}'`);
  const n = Number(v);
  if (n < min || n > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

export function machineFrom(values: Record<string, unknown>): MachineOptions {
  const o: MachineOptions = {};
  const cores = int(values.cores as string | undefined, 'cores', 1, MAX_CORES);
  const nodes = int(values.nodes as string | undefined, 'nodes', 1, MAX_CORES);
  if (cores !== undefined) o.cores = cores;
  if (nodes !== undefined) o.nodes = nodes;
  if (values.memory !== undefined) {
    const s = parseSize(values.memory as string);
    if (s === null) throw new UsageError(`--memory must be a size such as 64MiB or 1GiB (units B, KiB, MiB, GiB, or K, M, G; MB and GB are ambiguous), got '${String(values.memory)}'`);
    o.memory = s;
  }
  const slots = int(values['ipi-slots'] as string | undefined, 'ipi-slots', -1e9, 1e9);
  if (slots !== undefined) o.ipiQueueSlots = slots;
  const wait = int(values['wait-limit'] as string | undefined, 'wait-limit', -1e9, 1e9);
  if (wait !== undefined) o.waitLimitMs = wait;
  const log = int(values['log-entries'] as string | undefined, 'log-entries', -1e9, 1e9);
  const batch = int(values['max-batch'] as string | undefined, 'max-batch', -1e9, 1e9);
  if (log !== undefined || batch !== undefined) o.kernel = { ...(log !== undefined ? { logEntries: log } : {}), ...(batch !== undefined ? { maxBatch: batch } : {}) };
  if (values.psc === true) o.tlb = { psc: true };
  if (values.cow !== undefined) {
    if (values.cow !== 'default' && values.cow !== 'mh') throw new UsageError(`--cow must be default or mh, got '${String(values.cow)}'`);
    o.kernel = { ...(o.kernel ?? {}), cow: values.cow };
  }
  if (values.kernel !== undefined) {
    if (values.kernel !== 'default' && values.kernel !== 'mh') throw new UsageError(`--kernel must be default or mh, got '${String(values.kernel)}'`);
    if (values.kernel === 'mh' && values.cow === 'default') throw new UsageError('--cow default does not apply with --kernel mh (MH has its own copy-on-write)');
    o.kernel = { ...(o.kernel ?? {}), personality: values.kernel };
  }
  if (values.khalf !== undefined) {
    if (values.khalf !== 'eager' && values.khalf !== 'switch' && values.khalf !== 'lazy') throw new UsageError(`--khalf must be eager, switch or lazy, got '${String(values.khalf)}'`);
    o.kernel = { ...(o.kernel ?? {}), khalf: values.khalf };
  }
  const flush = values['mshare-flush'] as string | undefined;
  if (flush !== undefined) {
    if (flush !== 'attached' && flush !== 'all') throw new UsageError(`--mshare-flush must be attached or all, got '${flush}'`);
    o.kernel = { ...(o.kernel ?? {}), mshareFlush: flush };
  }
  const dev = int(values['device-pages'] as string | undefined, 'device-pages', 0, 64);
  // The device is driven only by MH's operations (I/O mappings, exports, DMA, register accesses).
  if (dev !== undefined && values.kernel !== 'mh') throw new UsageError('--device-pages applies to --kernel mh only (only MH maps, exports to and runs DMA on the device)');
  if (dev === 0) throw new UsageError("--device-pages 0: MH maps the device's registers, exports pages to it and runs DMA; give 1 to 64 (default 4)");
  if (dev !== undefined) o.devicePages = dev;
  return o;
}

/**
 * A --seconds value: a plain decimal number (not hex, exponent or Infinity) from 0 (zeroOk) or
 * above 0, at most max; dflt when absent.
 */
export function secondsArg(text: string | undefined, dflt: number, max: number, zeroOk: boolean): number {
  if (text === undefined) return dflt;
  const v = Number(text);
  if (!/^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(text) || v > max || (!zeroOk && v === 0)) {
    throw new UsageError(`--seconds must be a number of seconds ${zeroOk ? `from 0 to ${max}` : `above 0 and at most ${max}`}, got '${text}'`);
  }
  return v;
}

/**
 * Checks, before any work, that an output can be written: a file (its directory exists and is
 * writable; not a directory itself) or a directory (exists and is writable, or can be made in a
 * writable directory). /proc and /sys are refused (results do not belong there, and a recursive
 * mkdir under /proc does not end).
 */
export function checkOutput(flag: string, path: string | undefined, kind: 'file' | 'dir'): void {
  if (path === undefined) return;
  if (path.trim() === '') throw new UsageError(`${flag} needs a path (got an empty one)`);
  const abs = resolve(path);
  if (/^\/(proc|sys)(\/|$)/.test(abs)) throw new UsageError(`${flag} ${path}: /proc and /sys are not places to write results`);
  const here = statOrNull(abs);
  if (here) {
    if (kind === 'file' && here.isDirectory()) throw new UsageError(`${flag} ${path} is a directory; give a file name`);
    if (kind === 'dir' && !here.isDirectory()) throw new UsageError(`${flag} ${path} exists and is not a directory`);
    if (!writable(abs)) throw new UsageError(`${flag} ${path} cannot be written (permission)`);
    return;
  }
  const parent = dirname(abs);
  const up = statOrNull(parent);
  if (!up || !up.isDirectory()) throw new UsageError(`${flag} ${path}: the directory ${parent} does not exist`);
  if (!writable(parent)) throw new UsageError(`${flag} ${path}: the directory ${parent} cannot be written (permission)`);
}

function statOrNull(p: string): Stats | null {
  try {
    return statSync(p);
  } catch {
    return null;
  }
}

function writable(p: string): boolean {
  try {
    accessSync(p, fsConstants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Prints the outputs a finished run could not write; exit code 2 if there were any (the report is out already). */
export function outputFailures(errors: string[]): boolean {
  for (const e of errors) process.stderr.write(`nrvm: could not write ${e}\n`);
  return errors.length > 0;
}

/** Parses "load=60,store=30" over `kinds`: named kinds get their weight, the others 0. */
export function parseMix<K extends string>(text: string, kinds: readonly K[]): Record<K, number> {
  const mix = Object.fromEntries(kinds.map((k) => [k, 0])) as Record<K, number>;
  const seen = new Set<string>();
  for (const part of text.split(',')) {
    const m = /^\s*([a-z]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*$/.exec(part);
    if (!m) throw new UsageError(`--mix: '${part}' is not KIND=WEIGHT (kinds: ${kinds.join(', ')})`);
    if (!(kinds as readonly string[]).includes(m[1])) throw new UsageError(`--mix: unknown kind '${m[1]}' (kinds: ${kinds.join(', ')})`);
    if (seen.has(m[1])) throw new UsageError(`--mix: '${m[1]}' is given twice`);
    if (Number(m[2]) < 0) throw new UsageError(`--mix: the weight of '${m[1]}' must be 0 or more, got ${m[2]}`);
    seen.add(m[1]);
    mix[m[1] as K] = Number(m[2]);
  }
  if (Object.values<number>(mix).every((w) => w === 0)) throw new UsageError('--mix: at least one weight must be above 0');
  return mix;
}

export function replayCommand(argv: string[], seed: number): string {
  const rest = argv.filter((a, i) => !(a === '--seed' || a.startsWith('--seed=') || (i > 0 && argv[i - 1] === '--seed')) && a !== '--json');
  // A negative seed must be written --seed=-5: "--seed -5" reads as two options.
  return ['nrvm', ...rest, seed < 0 ? `--seed=${seed}` : `--seed ${seed}`].join(' ');
}
