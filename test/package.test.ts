// nrvm as a library: the packed package (npm pack) installed into a scratch project answers
// `import { Machine, Simulator } from 'nrvm'`, with its types, and runs a machine and the seed's
// Simulator from there. The tarball is unpacked into the scratch project's node_modules and the
// package's dependencies are linked from this checkout (no registry needed).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const P = suite('package');

P('the packed package imports as nrvm from another project, with types, and runs', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'nrvm-pack-'));
  // --ignore-scripts: the tests run from the build already made (prepack would rebuild it under them).
  const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', scratch], { cwd: ROOT, encoding: 'utf8' })) as { filename: string; files: { path: string }[] }[];
  const files = packed[0].files.map((f) => f.path);
  assert.ok(files.includes('dist/src/index.js') && files.includes('dist/src/index.d.ts'), 'the entry and its types are packed');
  assert.ok(files.includes('dist/workers/core.js') && files.includes('dist/workers/dma.js'), 'the core and DMA engine workers are packed');
  assert.not.ok(files.some((f) => f.startsWith('dist/test/')), 'the tests are not');

  const pkgDir = join(scratch, 'node_modules', 'nrvm');
  mkdirSync(pkgDir, { recursive: true });
  execFileSync('tar', ['-xzf', join(scratch, packed[0].filename), '-C', pkgDir, '--strip-components=1']);
  const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  for (const dep of Object.keys(manifest.dependencies)) {
    const target = join(scratch, 'node_modules', dep);
    mkdirSync(dirname(target), { recursive: true }); // a scoped package (@viz-js/viz) lives one level down
    if (!existsSync(target)) symlinkSync(join(ROOT, 'node_modules', dep), target, 'dir');
  }
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', type: 'module', private: true }));
  writeFileSync(join(scratch, 'use.mjs'), `
import { Machine, Simulator, Pointer, DataType, ValueType } from 'nrvm';
const m = await Machine.boot({ cores: 2, nodes: 1, memory: '8MiB' });
const r = await m.run([0, 1].map((c) => ({ core: c, program: { kind: 'ops', ops: [{ op: 'ping', target: 1 - c }] } })));
await m.shutdown();
const lines = [];
const s = await Simulator.begin(true, { out: (l) => lines.push(l) });
const x = new Pointer();
s.register(x);
s.write(x, ValueType.UnsignedInt(41));
const v = s.read(x, DataType.UnsignedInt).getValue();
await s.end();
console.log(JSON.stringify({ ran: r.map((x) => x.ok), v, lines }));
`);
  const out = execFileSync(process.execPath, ['use.mjs'], { cwd: scratch, encoding: 'utf8' });
  assert.equal(JSON.parse(out), { ran: [true, true], v: 41, lines: ['PGZERO: 0x0'] });
  const dts = readFileSync(join(pkgDir, 'dist', 'src', 'index.d.ts'), 'utf8');
  assert.match(dts, /export \{ Machine, ConfigError, MachineError/);
  assert.match(dts, /Simulator/);
});

P.run();
