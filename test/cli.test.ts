// Property: the nrvm command keeps its promises to a user — help for every command, a clear
// message and exit code 2 for every bad input (never a stack trace), a dump whose image and JSON
// agree with the machine, and a stress run that exits 0 when clean and 1 when an injected fault
// is caught.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatViolations } from '../src/cli/stress.js';
import { FOLLOWED_FAILURE } from '../src/machine/executor.js';

const BIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function nrvm(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const U = suite('cli: usage');

U('--help and help <command> print usage and exit 0', () => {
  const h = nrvm('--help');
  assert.is(h.code, 0);
  assert.match(h.out, /Usage: nrvm <command>/);
  for (const c of ['stress', 'dump', 'bench', 'mh']) {
    const r = nrvm('help', c);
    assert.is(r.code, 0, c);
    assert.match(r.out, /Usage: nrvm/);
    assert.match(r.out, /Examples?:\s+nrvm/);
  }
});

const bad: [string[], RegExp][] = [
  [['frobnicate'], /unknown command 'frobnicate'/],
  [['stress', '--kernel', 'linux'], /--kernel must be default or mh, got 'linux'/],
  [['stress', '--kernel', 'mh', '--cow', 'default'], /--cow default does not apply with --kernel mh/],
  [['stress', '--mix', 'map=1,export=1'], /--mix export: MH's operations need --kernel mh/],
  [['stress', '--inject', 'unwired-dma'], /--inject unwired-dma applies to --kernel mh only/],
  [['stress', '--inject', 'owner-only-shootdown'], /--inject owner-only-shootdown concerns RPAL sharing: it needs --share rpal/],
  [['stress', '--share', 'mshare', '--inject', 'pkru-not-switched'], /--inject pkru-not-switched concerns RPAL sharing: it needs --share rpal/],
  [['stress', '--share', 'dropbox'], /--share must be rpal or mshare, got 'dropbox'/],
  [['stress', '--kernel', 'mh', '--threads', '2'], /--threads does not apply with --kernel mh/],
  [['stress', '--share', 'rpal', '--threads', '9'], /--threads must be/],
  [['stress', '--share', 'rpal', '--processes', '8'], /--share rpal: at most 7 processes \(two of the fifteen protection keys each\), got 8/],
  [['stress', '--share', 'rpal', '--mix', 'map=1,fork=1'], /--mix fork: not under --share/],
  [['stress', '--share', 'mshare', '--mix', 'map=1,call=1'], /--mix call: RPAL's operations need --share rpal/],
  [['stress', '--mix', 'map=1,grant=1'], /--mix grant: sharing operations need --share/],
  [['stress', '--share', 'rpal', '--mshare-flush', 'all'], /--mshare-flush applies with --share mshare/],
  [['stress', '--share', 'mshare', '--mshare-flush', 'some'], /--mshare-flush must be attached or all, got 'some'/],
  [['stress', '--share', 'rpal', '--kernel', 'mh'], /--share does not apply with --kernel mh/],
  [['stress', '--hw', '--kernel', 'mh'], /--kernel does not apply to --hw/],
  [['stress', '--device-pages', '99'], /--device-pages must be between 0 and 64, got 99/],
  [['stress', '--device-pages', '3'], /--device-pages applies to --kernel mh only/],
  [['stress', '--kernel', 'mh', '--device-pages', '0'], /--device-pages 0: MH maps the device's registers/],
  [['mh', 'states', '--device-pages', '0'], /--device-pages 0: MH maps the device's registers/],
  [['help', 'nope'], /help: no command 'nope' \(commands: stress, /],
  [['bench', 'khalf', '--spaces', '8,8'], /--spaces: each count once, got '8,8'/],
  [['campaign', '--out', '/proc/c.jsonl'], /--out \/proc\/c.jsonl: \/proc and \/sys are not places to write results/],
  [['campaign', '--out', '/nonexistent-nrvm-dir/c.jsonl'], /the directory \/nonexistent-nrvm-dir does not exist/],
  [['campaign', '--shard', '0/0'], /--shard I\/N: N is the number of shards, 1 or more, got 0/],
  [['stress', '--seconds', '0x10'], /--seconds must be a number of seconds from 0 to 86400, got '0x10'/],
  [['stress', '--seconds', '1e3'], /--seconds must be a number of seconds from 0 to 86400, got '1e3'/],
  [['bench', 'scale', '--seconds', 'Infinity'], /--seconds must be a number of seconds above 0 and at most 3600, got 'Infinity'/],
  [['campaign', '--seconds', '-0'], /--seconds/],
  [['mh', 'frob'], /mh: unknown subcommand 'frob'/],
  [['stress', '--khalf', 'sometimes'], /--khalf must be eager, switch or lazy, got 'sometimes'/],
  [['stress', '--khalf', 'lazy', '--mix', 'map=1,kunmap=1'], /--mix kunmap: the lazy method cannot remove a top-level kernel entry/],
  [['stress', '--hw', '--khalf', 'eager'], /--khalf does not apply to --hw/],
  [['bench', 'khalf', '--spaces', '5000'], /--spaces must be between 1 and 4096, got 5000/],
  [['bench', 'khalf', '--plot', 'x.png'], /--plot writes SVG/],
  [['dump', '--out', '/tmp', '--kernel', 'mh'], /dump: --kernel does not apply/],
  [['mh', 'states', '--kernel', 'default'], /mh states runs the MH kernel/],
  [['mh', 'states', '--seconds', '0'], /--seconds must be a number of seconds above 0/],
  [['mh', 'states', '--out', '/nonexistent/dir/x.svg'], /the directory \/nonexistent\/dir does not exist/],
  [['stress', '--cores', 'four'], /--cores must be a whole number, got 'four'/],
  [['stress', '--cores', '0'], /cores must be between 1 and 256, got 0/],
  [['stress', '--nodes', '8', '--cores', '2'], /nodes \(8\) cannot exceed cores \(2\)/],
  [['stress', '--memory', '3000'], /not a whole number of 4 KiB frames/],
  [['stress', '--memory', '64KiB'], /too small for the page tables/],
  [['stress', '--mix', 'map=1,frob=2'], /--mix: unknown kind 'frob' \(kinds: map, unmap, adjust, access, resolve, switch, fork, exit, check, export, unexport, dma, devreg, move, kmap, kunmap, kaccess, share, unshare, pkey, call, grant\)/],
  [['stress', '--hw', '--mix', 'map=1'], /--mix: unknown kind 'map' \(kinds: load, store/],
  [['stress', '--mix', 'map'], /--mix: 'map' is not KIND=WEIGHT/],
  [['stress', '--inject', 'gremlins'], /--inject: unknown fault 'gremlins' \(known: non-atomic-ad, torn-pte-update, skip-shootdown, skip-replica-sync, skip-cow-copy, skip-wire-check, unwired-dma, free-table-without-flush, owner-only-shootdown, fault-in-wrong-space, pkru-not-switched, core-crash\)/],
  [['stress', '--paging', '32bit'], /--paging applies to --hw only/],
  [['stress', '--hw', '--paging', '16bit'], /--paging must be one of 4level, 5level, pae, 32bit, got '16bit'/],
  [['stress', '--hw', '--paging', '32bit', '--inject', 'torn-pte-update'], /--inject torn-pte-update needs 8-byte entries/],
  [['stress', '--hw', '--inject', 'skip-shootdown'], /--inject: unknown fault 'skip-shootdown' \(known with --hw: non-atomic-ad, torn-pte-update, core-crash\)/],
  [['stress', '--processes', '0'], /--processes must be between 1 and 4096, got 0/],
  [['stress', '--processes', '99', '--seconds', '0'], /--processes 99 exceeds the kernel's 32 address spaces/],
  [['stress', '--bogus'], /stress: Unknown option '--bogus'/],
  [['stress', '--seconds', 'soon'], /--seconds must be a number of seconds/],
  [['stress', '--hw', '--memory', '1MiB', '--cores', '2', '--nodes', '1', '--seconds', '0'], /out of memory setting up the stress run \(a 2 MiB page\); give the machine more --memory/],
  [['stress', '--log-entries', '1000'], /kernel.logEntries must be a power of two, got 1000/],
  [['stress', '--max-batch', '64', '--log-entries', '32'], /kernel.logEntries \(32\) must hold one whole batch \(maxBatch 64\)/],
  [['stress', '--cow', 'bsd'], /--cow must be default or mh, got 'bsd'/],
  [['dump'], /dump: --out DIR is required/],
  [['dump', '--out', '/tmp/x', '--scenario', 'nope'], /unknown scenario 'nope' \(known: varied\)/],
  [['bench', 'macro'], /unknown benchmark 'macro' \(known: micro, fork, scale, shootdown, khalf, share\)/],
  [['bench', 'scale', '--workload', 'sort'], /bench scale: unknown workload 'sort' \(known: maponly, unmap, resolve, access, mixed\)/],
  [['bench', 'scale', '--baseline', 'rcu'], /--baseline: the one baseline is 'lock', got 'rcu'/],
  // Empty values, duplicates, misleading messages and output paths checked before the run (issue 15).
  [['stress', '--seconds', ''], /--seconds must be a number of seconds from 0 to 86400, got ''/],
  [['stress', '--inject', ''], /--inject needs a fault name \(got an empty one\)/],
  [['stress', '--cores', ''], /--cores needs a value \(got an empty one\)/],
  [['stress', '--dump', ''], /--dump needs a path \(got an empty one\)/],
  [['stress', '--trace', '/nonexistent-nrvm-dir/t.json'], /--trace \/nonexistent-nrvm-dir\/t.json: the directory \/nonexistent-nrvm-dir does not exist/],
  [['stress', '--trace', '/tmp'], /--trace \/tmp is a directory; give a file name/],
  [['stress', '--dump', '/proc/nrvm'], /\/proc and \/sys are not places to write results/],
  [['stress', '--mix', 'map=5,map=6'], /--mix: 'map' is given twice/],
  [['stress', '--mix', 'map=-5'], /--mix: the weight of 'map' must be 0 or more, got -5/],
  [['stress', '--memory', '64mb'], /--memory must be a size such as 64MiB or 1GiB \(units B, KiB, MiB, GiB, or K, M, G; MB and GB are ambiguous\), got '64mb'/],
  [['stress', '--cores', '-1'], /--cores needs a value; a value that starts with '-' is written --cores=VALUE/],
  [['stress', '--cores=-1'], /--cores must be between 1 and 256, got -1/],
  [['stress', '--cores', '9007199254740993'], /--cores must be between 1 and 256/],
  [['bench', 'scale', '--cores', '1,1'], /--cores: each core count once, got '1,1'/],
  [['bench', 'scale', '--plot', 'x.png'], /--plot writes SVG: give a file name ending in .svg, got 'x.png'/],
  [['dump', '--out', ''], /--out needs a path \(got an empty one\)/],
  // Options that do not apply are refused, not ignored.
  [['stress', '--inject', 'torn-pte-update'], /--inject torn-pte-update applies to --hw only/],
  [['stress', '--hw', '--cow', 'mh'], /--cow does not apply to --hw/],
  [['bench', 'scale', '--cores', '1', '--nodes', '2'], /--nodes 2 exceeds every core count \(1\)/],
  [['race', '--list', 'extra'], /race --list takes nothing else/],
  [['example', 'seed', '--json'], /example: the one example is 'seed' \(nrvm example seed; it takes no options\)/],
  [['campaign', '--runs', '2', '--seconds', '1', '--cores', '2', '--memroy', '8MiB', '--out', '/tmp/nrvm-cli-campaign.jsonl'], /a run was refused .*Unknown option '--memroy'/],
];

for (const [args, re] of bad) {
  U(`'${args.join(' ')}' fails with a message and exit 2`, () => {
    const r = nrvm(...args);
    assert.is(r.code, 2, r.err);
    assert.match(r.err, re);
    assert.not.match(r.err, /\n\s+at /, 'no stack trace');
  });
}

U('a report lists the failures that caused a run to stop before the cores that only followed them', () => {
  const follow = (c: number) => ({ kind: 'core-failure', round: 0, detail: `core ${c}: ${FOLLOWED_FAILURE}` });
  const lines = formatViolations([follow(0), follow(1), follow(2), follow(3), follow(4), follow(5), { kind: 'core-failure', round: 0, detail: 'core 6: panic: the cause' }]);
  assert.match(lines[1], /core 6: panic: the cause/);
  assert.match(lines[0], /VIOLATIONS {2}7: core-failure x7/);
});

U('help example and example --help print its usage; a full disk is a message, not a stack trace', () => {
  for (const args of [['help', 'example'], ['example', '--help']]) {
    const r = nrvm(...args);
    assert.is(r.code, 0, args.join(' '));
    assert.match(r.out, /Usage: nrvm example seed/);
  }
  assert.match(nrvm('help', 'stress').out, /isolation \(a core reads back/);
  assert.match(nrvm('help', 'dump').out, /dump's own defaults: --cores 2 --nodes 1 --memory 16MiB/);
  const full = spawnSync('sh', ['-c', `"${process.execPath}" "${BIN}" --help > /dev/full`], { encoding: 'utf8' });
  assert.is(full.status, 2, full.stderr);
  assert.match(full.stderr, /nrvm: could not write to standard output: ENOSPC/);
  assert.not.match(full.stderr, /\n\s+at /, 'no stack trace');
});

U('an output that fails after the run is reported beside the kept report', async () => {
  const { keep } = await import('../src/cli/stress.js');
  const errors: string[] = [];
  assert.is(await keep(errors, '--trace', '/x.json', () => Promise.reject(new Error('no space left on device'))), undefined);
  assert.equal(errors, ['--trace /x.json: no space left on device']);
  assert.is(await keep(errors, '--dump', '/d', () => Promise.resolve()), '/d');
});

U('a negative seed replays as --seed=N (as "--seed -5" would read as two options)', () => {
  const r = nrvm('stress', '--cores', '2', '--memory', '16MiB', '--seconds', '0', '--seed=-5');
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /replay\s+nrvm stress --cores 2 --memory 16MiB --seconds 0 --seed=-5$/m);
});

const D = suite('cli: dump');

D('the image is byte for byte the memory, written sparsely: zero stretches take no disk', async () => {
  const { Machine } = await import('../src/machine/machine.js');
  const { writeDump } = await import('../src/machine/dump.js');
  const m = await Machine.boot({ cores: 2, nodes: 2, memory: '256MiB' }, { pool: false });
  try {
    // A few words here and there, one at the very end.
    for (const w of [0, 1, 12_345, 2 ** 24 + 7, m.mem.length - 1]) m.mem[w] = w | 1;
    const dir = mkdtempSync(join(tmpdir(), 'nrvm-sparse-'));
    const { phys } = await writeDump(m, dir, []);
    const st = statSync(phys);
    assert.is(st.size, 256 * 2 ** 20);
    assert.ok(st.blocks * 512 < 32 * 2 ** 20, `${st.blocks * 512} bytes on disk for a 256 MiB image`);
    const back = readFileSync(phys);
    assert.ok(Buffer.from(m.shared.phys).equals(back), 'the image reads back as the memory');
  } finally {
    await m.shutdown();
  }
});

D('dump writes the raw image and a machine.json that describes its page tables', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nrvm-dump-'));
  const r = nrvm('dump', '--out', dir, '--scenario', 'varied');
  assert.is(r.code, 0, r.err);
  const json = JSON.parse(readFileSync(join(dir, 'machine.json'), 'utf8'));
  assert.is(statSync(join(dir, 'phys.bin')).size, json.memoryBytes);
  assert.is(json.cores, 2);
  assert.is(json.nodes, 1);
  const [r4, r5] = json.roots;
  assert.is(r4.la57, false);
  assert.is(r5.la57, true);
  assert.equal([r4.mode, r5.mode], ['4level', '5level'], 'each root names its paging mode');
  const sizes = new Set<number>(r4.mappings.map((x: { size: number }) => x.size));
  assert.equal([...sizes].sort((a, b) => a - b), [4096, 2 ** 21, 2 ** 30]);
  const by = (va: string) => r4.mappings.find((x: { va: string }) => x.va === va);
  assert.is(by('0x404000').write, false, 'read-only page');
  assert.is(by('0x405000').nx, true, 'NX page');
  assert.is(by('0x403000').pkey, 3);
  assert.is(by('0xffff800000000000').global, true);
  assert.is(by('0xffff800000000000').user, false);
  assert.is(by('0x400000').dirty, true, 'written by a core during the scenario');
  assert.is(by('0x401000').accessed, true);
  assert.is(by('0x401000').dirty, false, 'read only');
  assert.is(by('0x402000').accessed, false, 'never touched');
  assert.ok(r5.mappings.some((x: { va: string }) => x.va === '0xabcdef12345000'));
  // The image holds the tables: walk the 4-level root's PML4 entry for 0x400000 by hand.
  const img = readFileSync(join(dir, 'phys.bin'));
  const root = Number(BigInt(r4.cr3) >> 12n);
  const pml4e = img.readBigUInt64LE(root * 4096 + 0);
  assert.is(pml4e & 1n, 1n, 'PML4[0] present in the image');
  const pa = BigInt(by('0x400000').pa);
  assert.is(img.readUInt32LE(Number(pa)), 0x21, 'the value the core stored is in the image');
});

D('bench fork measures a fork against a byte copy of the same tables, as JSON', () => {
  const r = nrvm('bench', 'fork', '--pages', '300', '--iterations', '1', '--json');
  assert.is(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.is(j.rows.length, 1);
  assert.is(j.rows[0].pages, 300);
  assert.ok(j.rows[0].forkMs > 0 && j.rows[0].byteCopyMs > 0 && j.rows[0].tableFrames >= 4);
  assert.match(j.node, /^v\d+/);
});

D('bench shootdown measures round trips to 1..N targets', () => {
  const r = nrvm('bench', 'shootdown', '--targets', '1,2', '--samples', '50', '--json');
  assert.is(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.rows.map((x: { targets: number }) => x.targets), [1, 2]);
  for (const x of j.rows) assert.ok(x.p50Ns > 0 && x.p99Ns >= x.p50Ns && x.samples === 50, JSON.stringify(x));
});

const S = suite('cli: stress');

S('a short default stress run is clean, prints a report and exits 0', () => {
  const r = nrvm('stress', '--seconds', '2', '--seed', '3', '--json');
  assert.is(r.code, 0, r.err);
  const rep = JSON.parse(r.out);
  assert.equal(rep.violations, []);
  assert.is(rep.seed, 3);
  for (const k of ['ops', 'faults', 'spuriousFaults', 'shootdowns']) assert.ok(k in rep, k);
  assert.ok(rep.ops.map > 0 && rep.ops.unmap > 0 && rep.shootdowns > 0, JSON.stringify(rep.ops));
  assert.ok(rep.ipis.sent > 0 && rep.ipis.sent === rep.ipis.received);
  assert.match(rep.replay, /nrvm stress --seconds 2 --seed 3/);
});

for (const [inj, kind] of [['skip-shootdown', 'stale-tlb'], ['skip-replica-sync', 'stale-tlb'], ['skip-cow-copy', 'isolation']]) {
  S(`--inject ${inj} is caught by the ${kind} oracle in a short default run: exit 1`, () => {
    // The race needs real threads to overlap; a loaded machine may not give it in one short run.
    // Up to three seeds, each a 5-second default run.
    let r = { code: 0, out: '', err: '' };
    for (const seed of ['3', '4', '5']) {
      r = nrvm('stress', '--seconds', '5', '--seed', seed, '--inject', inj, '--json');
      if (r.code !== 0) break;
    }
    assert.is(r.code, 1, r.err);
    const rep = JSON.parse(r.out);
    assert.ok(rep.violations.some((v: { kind: string }) => v.kind === kind), JSON.stringify(rep.violations.slice(0, 2)));
  });
}

S('stress --kernel mh: a short run is clean, reports MH\'s figures and transitions, exits 0', () => {
  const r = nrvm('stress', '--kernel', 'mh', '--cores', '2', '--seconds', '2', '--seed', '5', '--json');
  assert.is(r.code, 0, r.err);
  const rep = JSON.parse(r.out);
  assert.equal(rep.violations, []);
  assert.ok(rep.mh.exports > 0 && rep.mh.userFaults > 0 && rep.mh.dma.done > 0, JSON.stringify(rep.mh));
  assert.ok(Object.keys(rep.mh.transitions).some((k) => k.startsWith('RO-Shared|Private RW|write|')), 'user-level copy-on-write seen');
  const text = nrvm('stress', '--kernel', 'mh', '--cores', '2', '--seconds', '1', '--seed', '5');
  assert.match(text.out, /MH {10}\d.* faults to the user-level handler/);
});

S('stress --khalf: each of os5\'s methods runs clean, with kmaps, supervisor accesses and (but lazy) kunmaps', () => {
  for (const method of ['eager', 'switch', 'lazy']) {
    const r = nrvm('stress', '--khalf', method, '--cores', '2', '--seconds', '2', '--seed', '9', '--mix', `map=5,unmap=5,access=40,switch=5,fork=0.1,exit=0.1,kmap=5,kaccess=20${method === 'lazy' ? '' : ',kunmap=5'}`, '--json');
    assert.is(r.code, 0, r.err);
    const rep = JSON.parse(r.out);
    assert.equal(rep.violations, [], method);
    assert.is(rep.khalf.method, method);
    assert.ok(rep.khalf.kmaps > 0 && rep.khalf.accesses > 0 && (method === 'lazy' || rep.khalf.kunmaps > 0), JSON.stringify(rep.khalf));
  }
});

S('bench khalf: the three methods side by side, as JSON', () => {
  const r = nrvm('bench', 'khalf', '--spaces', '4,16', '--reps', '2', '--json');
  assert.is(r.code, 0, r.err);
  const rep = JSON.parse(r.out);
  assert.is(rep.rows.length, 6);
  const row = (m: string, n: number) => rep.rows.find((x: { method: string; spaces: number }) => x.method === m && x.spaces === n);
  assert.is(row('lazy', 16).removeUs, null, 'lazy cannot remove');
  assert.is(row('lazy', 16).faultsPerSwitch, 1, 'lazy: one kernel fault per space after a change');
  assert.is(row('eager', 16).faultsPerSwitch, 0);
  assert.ok(row('eager', 16).entriesPerChange > row('eager', 4).entriesPerChange, 'eager writes every space');
});

S('mh states draws the observed diagram: DOT, and SVG through Graphviz', () => {
  const dot = nrvm('mh', 'states', '--dot', '--cores', '2', '--seconds', '1', '--seed', '2');
  assert.is(dot.code, 0, dot.err);
  assert.match(dot.out, /^digraph mh_states \{/);
  for (const st of ['Unmapped', 'I/O', 'Private RW', 'Wired RW', 'RO-Shared']) assert.match(dot.out, new RegExp(`"${st}"`));
  assert.match(dot.out, /"Unmapped" -> "Private RW" \[label="map ×\d+/);
  const out = join(mkdtempSync(join(tmpdir(), 'nrvm-mh-')), 'states.svg');
  const svg = nrvm('mh', 'states', '--out', out, '--cores', '2', '--seconds', '1', '--seed', '2');
  assert.is(svg.code, 0, svg.err);
  const text = readFileSync(out, 'utf8');
  assert.match(text, /<svg/);
  assert.match(text, />RO(-|&#45;)Shared</, "a node named RO-Shared (Graphviz writes the hyphen as &#45;)");
});

S('stress --dump writes one root per replica of every address space', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nrvm-stress-dump-'));
  const r = nrvm('stress', '--seconds', '0.5', '--seed', '4', '--processes', '3', '--nodes', '2', '--dump', dir, '--json', '--mix', 'map=10,unmap=5,access=50,check=5');
  assert.is(r.code, 0, r.err);
  const json = JSON.parse(readFileSync(join(dir, 'machine.json'), 'utf8'));
  assert.equal(json.roots.map((x: { label: string }) => x.label), [0, 1, 2].flatMap((s) => [0, 1].map((n) => `space ${s} replica ${n} (node ${n})`)));
  // Converged replicas: the same mappings (A/D aside) under every replica's root of a space.
  const strip = (ms: { va: string; pa: string; write: boolean }[]) => ms.map((x) => `${x.va}>${x.pa}/${x.write}`).join();
  assert.is(strip(json.roots[0].mappings), strip(json.roots[1].mappings));
  assert.ok(json.roots[0].mappings.length > 0);
});

S('stress --trace writes Chrome trace JSON: a track per core, slices for operations, faults, walks, IPIs, combining', () => {
  const file = join(mkdtempSync(join(tmpdir(), 'nrvm-trace-')), 'trace.json');
  const r = nrvm('stress', '--seconds', '1', '--seed', '6', '--trace', file);
  assert.is(r.code, 0, r.err);
  const t = JSON.parse(readFileSync(file, 'utf8'));
  const names = new Set(t.traceEvents.map((e: { name: string }) => e.name));
  for (const n of ['thread_name', 'MapFrame', 'Unmap', 'page fault', 'walk', 'IPI', 'combine', 'shootdown']) assert.ok(names.has(n), `has ${n}`);
  const tracks = t.traceEvents.filter((e: { name: string }) => e.name === 'thread_name').map((e: { args: { name: string } }) => e.args.name);
  assert.equal(tracks, ['core 0 (node 0)', 'core 1 (node 0)', 'core 2 (node 1)', 'core 3 (node 1)']);
  for (const e of t.traceEvents) assert.ok(['B', 'E', 'i', 'M'].includes(e.ph) && typeof e.ts === 'number' && e.pid === 1);
});

S('stress --hw --trace and bench shootdown --trace write Chrome traces of walks and IPIs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nrvm-trace-'));
  const hw = join(dir, 'hw.json');
  let r = nrvm('stress', '--hw', '--seconds', '0.5', '--seed', '6', '--trace', hw);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /trace {7}.*hw\.json/);
  let names = new Set(JSON.parse(readFileSync(hw, 'utf8')).traceEvents.map((e: { name: string }) => e.name));
  for (const n of ['thread_name', 'walk', 'IPI', 'IPI sent']) assert.ok(names.has(n), `--hw trace has ${n}`);
  const sd = join(dir, 'sd.json');
  r = nrvm('bench', 'shootdown', '--targets', '1', '--samples', '20', '--json', '--trace', sd);
  assert.is(r.code, 0, r.err);
  names = new Set(JSON.parse(readFileSync(join(dir, 'sd-1.json'), 'utf8')).traceEvents.map((e: { name: string }) => e.name));
  for (const n of ['shootdown', 'IPI', 'IPI sent']) assert.ok(names.has(n), `shootdown trace has ${n}`);
});

S('the MH copy-on-write policy runs clean under the stress oracles', () => {
  const r = nrvm('stress', '--seconds', '2', '--seed', '5', '--cow', 'mh', '--json', '--mix', 'map=10,unmap=4,access=60,check=10,fork=1,exit=1,switch=4');
  assert.is(r.code, 0, r.err + r.out.slice(0, 2000));
  const rep = JSON.parse(r.out);
  assert.ok(rep.ops.fork > 0 && rep.cow.copies + rep.cow.reuses > 0, JSON.stringify(rep.cow));
});

S('node flags reach the run: a V8 flag (process-wide, refused by workers) does not stop it', () => {
  const r = spawnSync(process.execPath, ['--single-threaded-gc', BIN, 'stress', '--hw', '--seconds', '0.3', '--seed', '3', '--json'], { encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).violations, []);
});

S('the hardware stress (--hw) is clean and exits 0', () => {
  const r = nrvm('stress', '--hw', '--seconds', '1', '--seed', '3', '--json');
  assert.is(r.code, 0, r.err);
  const rep = JSON.parse(r.out);
  assert.equal(rep.violations, []);
  assert.ok(rep.accesses > 100_000, `${rep.accesses} accesses`);
});

S('an injected torn entry update is caught by --hw: violations reported, exit 1', () => {
  let r = { code: 0, out: '', err: '' };
  for (const seed of ['3', '4', '5']) {
    r = nrvm('stress', '--hw', '--seconds', '2', '--seed', seed, '--inject', 'torn-pte-update', '--mix', 'xlate=50,flip=20,load=10');
    if (r.code !== 0) break;
  }
  assert.is(r.code, 1, r.out + r.err);
  assert.match(r.out, /VIOLATIONS .*torn-translation/);
  assert.match(r.out, /replay +nrvm stress --hw .*--inject torn-pte-update/);
});

U.run();
D.run();
S.run();
