// `nrvm stress`: the address-space stress (and, with --hw, the hardware-level one) with its oracles.

import { randomInt } from 'node:crypto';
import type { DumpPaging } from '../machine/dump.js';
import { HW_INJECTIONS } from '../hw/config.js';
import { ALL_INJECTIONS, MACHINE_INJECTIONS } from '../machine/config.js';
import { DEFAULT_STRESS_MIX, STRESS_MIX_KINDS, type StressMix } from '../workloads/hwstress.js';
import { MH_MIX_KINDS, SHARE_MIX_KINDS, VM_MIX_KINDS, type VmMix } from '../workloads/sources.js';
import { THREADS_PER_PROCESS } from '../kernel/layout.js';
import { formatReport, runStress } from './stress.js';
import { DEFAULT_MH_MIX, DEFAULT_MSHARE_MIX, DEFAULT_RPAL_MIX, DEFAULT_VM_MIX, MAX_RPAL_PROCESSES, MSHARE_REGIONS, formatVmReport, runVmStress } from './vmstress.js';
import { MACHINE_HELP, UsageError, checkOutput, int, machineFrom, machineOptions, outputFailures, parse, parseMix, replayCommand, secondsArg } from './args.js';

export const STRESS_HELP = `Usage: nrvm stress [options]

Every core runs a seeded random program against --processes node-replicated address spaces:
MapFrame, Unmap (with TLB shootdown), Adjust and Resolve on its own slots, context switches, and
8-byte loads and stores anywhere in the spaces' shared region (so other cores' TLBs hold
translations that shootdowns must remove). Page faults go through the kernel: Resolve syncs the
local replica; a mapping found then means a spurious fault (retried), none an invalid access.

With --kernel mh the kernel is MH's (its mapping states, EINVAL/EPERM/EBUSY, export to the device
for DMA by an engine thread, copy-on-write faults handled by the process at user level) and the
run adds: mh-transition (a change of a page returned another outcome, or left another state,
than MH's table says), mh-state (after a round: wiring counts, exports, I/O leaves, private
frames shared), dma-frame-owner (the DMA engine touched a frame its exporter no longer owned),
device (a device register read that did not reach the device).

Every address space maps the kernel half (top-level entries 256-511), kept in sync by --khalf's
method; the kinds kmap, kunmap (not under --khalf lazy) and kaccess (a supervisor access) exercise
it, and kernel-half-divergence (after a round, a top-level kernel entry the method does not allow)
checks it; stale-tlb covers kernel frames too.

With --share the processes share memory (issue 12; RPAL's seed and mshare), each with --threads
threads, and there are no forks or exits. --share rpal: process s lives in the 512 GiB slot s+1
with protection keys 2s+1 and 2s+2 (at most ${MAX_RPAL_PROCESSES} processes), every slot starts shared into every
process, and the kinds share, unshare, pkey (pkey_mprotect), call (an RPAL call: the callee
writes its own slot through the caller's page tables until its first kernel entry switches
lazily) and grant (a thread takes another process's keys and writes its mailbox) run beside the
others; access loads go to any process's slot, and one in four there is a stray write (both must
fault: the keys are denied). Oracles: key-isolation (an access succeeded in a slot whose keys
the thread was not granted), foreign-write (a slot holds a value another process's thread wrote:
a stray write that landed), cross-fault (a granted write faulted: the fault was not handled in
the owner's space). --share mshare: ${MSHARE_REGIONS} regions, each a host address space of its own, attached by
every process; share and unshare attach and detach (never a region's last attachment, until the
end: mshare-lifetime checks that the last detach destroys the host); half of the mapping changes
and accesses go to a region.

Checked mode runs the oracles: stale-tlb (an access reached a frame its space no longer owns),
replica-divergence (replicas differ once synced), nr-invariant (head <= ltail <= tail,
ctail <= tail), isolation (a core reads back something other than what it wrote to its own
slot in its own space), frame-conservation and frame-leak (after every space is destroyed),
core-failure (a wait past its bound, a panic, or a worker that died).

${MACHINE_HELP}
Run options:
  --processes N       address spaces (default 2)
  --seconds S         how long to run (default 10); a round ends after --ops operations per
                      core or at the deadline
  --seed N            seed of every program (default: random; printed for replay)
  --ops N             operations per core per round (default 20000; --hw: 200000)
  --mix K=W,...       weights of ${VM_MIX_KINDS.join(', ')} (kinds not named get 0;
                      default ${Object.entries(DEFAULT_VM_MIX).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(',')};
                      ${MH_MIX_KINDS.join(', ')} need --kernel mh, whose default is
                      ${Object.entries(DEFAULT_MH_MIX).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(',')})
  --inject NAME       inject a fault to see an oracle catch it: ${ALL_INJECTIONS.join(', ')}
  --json              print the report as one JSON object instead of text
  --dump DIR          at the end, write DIR/phys.bin and DIR/machine.json (a root per replica)
  --trace FILE        record per-core events and write Chrome trace JSON (Perfetto, chrome://tracing)
  --share MODE        rpal or mshare: processes that share address-space parts (see above);
                      default mixes ${Object.entries(DEFAULT_RPAL_MIX).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(',')}
                      and ${Object.entries(DEFAULT_MSHARE_MIX).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(',')}
  --threads N         threads per process, 1-${THREADS_PER_PROCESS} (default 2 under --share, else none: cores
                      switch processes); switch runs a runnable thread of any process (its PKRU
                      restored; no CR3 load within a process), a fork's child gets a copy of the
                      forking thread
  --hw                the hardware-level stress instead: accesses, INVLPG, IPIs, entry rewrites
                      by break-before-make and A/D races over shared tables; its --mix kinds are
                      ${STRESS_MIX_KINDS.join(', ')}
                      (default ${Object.entries(DEFAULT_STRESS_MIX).map(([k, v]) => `${k}=${v}`).join(',')})
  --paging MODE       --hw only: the paging mode of the shared tables, 4level (default), 5level,
                      pae or 32bit (the kernel's address spaces are 4-level)

Examples:
  nrvm stress --cores 4 --nodes 2 --seconds 20 --seed 7
  nrvm stress --seconds 5 --inject skip-replica-sync
  nrvm stress --khalf lazy --seconds 10
  nrvm stress --kernel mh --seconds 10
  nrvm stress --kernel mh --seconds 5 --inject unwired-dma
  nrvm stress --share rpal --cores 4 --processes 4 --threads 3 --seconds 10
  nrvm stress --share rpal --seconds 5 --inject pkru-not-switched
  nrvm stress --share mshare --mshare-flush all --seconds 10
  nrvm stress --hw --cores 8 --seconds 10
  nrvm stress --hw --paging 32bit --seconds 5
`;

const PAGINGS = ['4level', '5level', 'pae', '32bit'] as const;

export async function stress(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...machineOptions,
    seconds: { type: 'string' },
    seed: { type: 'string' },
    ops: { type: 'string' },
    mix: { type: 'string' },
    inject: { type: 'string', multiple: true },
    json: { type: 'boolean' },
    dump: { type: 'string' },
    processes: { type: 'string' },
    hw: { type: 'boolean' },
    paging: { type: 'string' },
    trace: { type: 'string' },
    share: { type: 'string' },
    threads: { type: 'string' },
  }, 'stress');
  if (values.help) {
    process.stdout.write(STRESS_HELP);
    return 0;
  }
  const machine = machineFrom(values);
  const known: readonly string[] = values.hw ? [...HW_INJECTIONS, ...MACHINE_INJECTIONS] : ALL_INJECTIONS;
  if ((values.inject ?? []).some((x) => x.trim() === '')) throw new UsageError('--inject needs a fault name (got an empty one)');
  const inject = (values.inject ?? []).flatMap((x) => x.split(',')).filter(Boolean);
  // torn-pte-update changes the break-before-make rewrites of entries that only --hw makes.
  if (!values.hw && inject.includes('torn-pte-update')) throw new UsageError('--inject torn-pte-update applies to --hw only (the address-space stress rewrites no entry in place)');
  for (const i of inject) {
    if (!known.includes(i)) throw new UsageError(`--inject: unknown fault '${i}' (known${values.hw ? ' with --hw' : ''}: ${known.join(', ')})`);
  }
  machine.inject = inject;
  const seconds = secondsArg(values.seconds, 10, 86_400, true);
  checkOutput('--dump', values.dump, 'dir');
  checkOutput('--trace', values.trace, 'file');
  const seed = int(values.seed, 'seed', -(2 ** 31), 2 ** 32 - 1) ?? randomInt(2 ** 31);
  // Progress goes to stderr (stdout keeps the report or the JSON): a line rewritten in place on a
  // terminal, a plain line every 10 s otherwise (logs of batch jobs).
  const tty = process.stderr.isTTY === true;
  let lastPlain = performance.now();
  const progress = (line: string): void => {
    if (tty) process.stderr.write(`\r\x1b[2K${line}`);
    else if (performance.now() - lastPlain >= 10_000) {
      lastPlain = performance.now();
      process.stderr.write(line + '\n');
    }
  };
  const replay = replayCommand(['stress', ...args], seed);
  let violations: number;
  if (values.hw) {
    if (values.processes !== undefined) throw new UsageError('--processes does not apply to --hw');
    if (values.cow !== undefined) throw new UsageError('--cow does not apply to --hw (the hardware-level stress has no kernel)');
    if (values.kernel !== undefined) throw new UsageError('--kernel does not apply to --hw (the hardware-level stress has no kernel)');
    if (values.khalf !== undefined) throw new UsageError('--khalf does not apply to --hw (the hardware-level stress has no kernel)');
    if (values.share !== undefined || values.threads !== undefined) throw new UsageError('--share and --threads do not apply to --hw (the hardware-level stress has no kernel)');
    const opsPerRound = int(values.ops, 'ops', 1, 1e9) ?? 200_000;
    const paging = values.paging ?? '4level';
    if (!(PAGINGS as readonly string[]).includes(paging)) throw new UsageError(`--paging must be one of ${PAGINGS.join(', ')}, got '${paging}'`);
    if (paging === '32bit' && inject.includes('torn-pte-update')) throw new UsageError('--inject torn-pte-update needs 8-byte entries: a 32-bit paging entry is one word, rewritten by one exchange (not --paging 32bit)');
    const mix: StressMix = values.mix === undefined ? DEFAULT_STRESS_MIX : parseMix(values.mix, STRESS_MIX_KINDS);
    const report = await runStress({ machine, seconds, seed, opsPerRound, mix, paging: paging as DumpPaging, dump: values.dump, trace: values.trace, progress }, replay);
    if (tty) process.stderr.write('\n');
    process.stdout.write(values.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report) + '\n');
    if (outputFailures(report.outputErrors)) return 2;
    violations = report.violations.length;
  } else {
    if (values.paging !== undefined) throw new UsageError('--paging applies to --hw only (the kernel\'s address spaces are 4-level: their replicas, dumps and oracles are built for it)');
    const opsPerRound = int(values.ops, 'ops', 1, 1e9) ?? 20_000;
    const processes = int(values.processes, 'processes', 1, 4096) ?? 2;
    const mhKernel = machine.kernel?.personality === 'mh';
    const lazy = machine.kernel?.khalf === 'lazy';
    const share = values.share;
    if (share !== undefined && share !== 'rpal' && share !== 'mshare') throw new UsageError(`--share must be rpal or mshare, got '${share}'`);
    if (share === undefined && values['mshare-flush'] !== undefined) throw new UsageError('--mshare-flush applies with --share mshare');
    const threads = int(values.threads, 'threads', 1, THREADS_PER_PROCESS) ?? (share !== undefined ? 2 : undefined);
    if (values.threads !== undefined && mhKernel) throw new UsageError("--threads does not apply with --kernel mh (a thread's stack is a demand-zero page, which MH does not have)");
    if (share !== undefined && mhKernel) throw new UsageError('--share does not apply with --kernel mh (MH has no demand-zero pages for stacks and mailboxes; its run is its own)');
    if (share === 'rpal' && processes > MAX_RPAL_PROCESSES) throw new UsageError(`--share rpal: at most ${MAX_RPAL_PROCESSES} processes (two of the fifteen protection keys each), got ${processes}`);
    if (share === 'rpal' && values['mshare-flush'] !== undefined) throw new UsageError('--mshare-flush applies with --share mshare');
    if (share === 'mshare' && processes + MSHARE_REGIONS > 32) throw new UsageError(`--share mshare: at most ${32 - MSHARE_REGIONS} processes (sharing covers address spaces 0-31), got ${processes}`);
    const defaults = share === 'rpal' ? DEFAULT_RPAL_MIX : share === 'mshare' ? DEFAULT_MSHARE_MIX : { ...(mhKernel ? DEFAULT_MH_MIX : DEFAULT_VM_MIX), ...(lazy ? { kunmap: 0 } : {}) };
    const mix: VmMix = values.mix === undefined ? defaults : parseMix(values.mix, VM_MIX_KINDS);
    if (lazy && mix.kunmap > 0) {
      throw new UsageError('--mix kunmap: the lazy method cannot remove a top-level kernel entry from the spaces that copied it (os5); with --khalf lazy kunmap must be 0 (the default mix leaves it out)');
    }
    const mhOnly = MH_MIX_KINDS.filter((k) => mix[k] > 0);
    if (!mhKernel && mhOnly.length > 0) throw new UsageError(`--mix ${mhOnly.join(', ')}: MH's operations need --kernel mh`);
    const shareOnly = SHARE_MIX_KINDS.filter((k) => mix[k] > 0 && (share === undefined || (share === 'mshare' && k !== 'share' && k !== 'unshare')));
    if (shareOnly.length > 0) throw new UsageError(`--mix ${shareOnly.join(', ')}: ${share === undefined ? 'sharing operations need --share' : "RPAL's operations need --share rpal"}`);
    const noShare = (['fork', 'exit', 'kmap', 'kunmap', 'kaccess'] as const).filter((k) => share !== undefined && mix[k] > 0);
    if (noShare.length > 0) throw new UsageError(`--mix ${noShare.join(', ')}: not under --share (its processes neither fork nor exit, and the kernel half is not its subject)`);
    const rpalInject = inject.filter((i) => i === 'owner-only-shootdown' || i === 'fault-in-wrong-space' || i === 'pkru-not-switched');
    if (rpalInject.length > 0 && share !== 'rpal') throw new UsageError(`--inject ${rpalInject.join(', ')} concerns RPAL sharing: it needs --share rpal`);
    const mhInject = inject.filter((i) => i === 'skip-wire-check' || i === 'unwired-dma');
    if (!mhKernel && mhInject.length > 0) throw new UsageError(`--inject ${mhInject.join(', ')} applies to --kernel mh only (no other kernel wires pages)`);
    const report = await runVmStress({ machine, seconds, seed, processes, opsPerRound, slots: 64, mix, dump: values.dump, trace: values.trace, progress, share, threads }, replay);
    if (tty) process.stderr.write('\n');
    process.stdout.write(values.json ? JSON.stringify(report, null, 2) + '\n' : formatVmReport(report) + '\n');
    if (outputFailures(report.outputErrors)) return 2;
    violations = report.violations.length;
  }
  return violations === 0 ? 0 : 1;
}
