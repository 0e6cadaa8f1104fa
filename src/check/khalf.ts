// The kernel half's oracle (kernel/khalf.ts): at a quiescent point (after a round), every live
// address space's top-level kernel entries, in every replica, against the master of that node,
// as the space's method allows:
//
//   eager    identical to the master
//   switch   a present entry is the master's; a replica that copied at the current kernel
//            generation is identical (one that has not been switched in since may lack entries)
//   lazy     a present entry is the master's (a missing one is copied in on a fault)
//
// A present entry that is not the master's points at tables the master no longer uses: the
// lazy method's hazard after a removal, or a lost update.

import type { Machine } from '../machine/machine.js';
import { KERNEL_TOP_FIRST, masterRoot, matchesMaster } from '../kernel/khalf.js';
import { SR_KGEN } from '../kernel/layout.js';
import { FRAME_WORDS, PTE_P } from '../hw/pte.js';
import type { KernelViolation } from './kernel.js';

export function checkKernelHalf(m: Machine): KernelViolation[] {
  const out: KernelViolation[] = [];
  const kx = m.kernel;
  const { k, klayout, mem } = kx.v;
  const method = kx.khalf;
  // The masters first: every node's kernel replica brought up to date.
  for (let r = 0; r < m.config.nodes; r++) kx.sync(kx.kernelSpace, kx.v.replicaOf.indexOf(r));
  const gen = Atomics.load(k, klayout.kgenWord);
  for (let s = 0; s < kx.maxSpaces; s++) {
    if (!kx.isLive(s)) continue;
    for (let r = 0; r < (kx.lockMode ? 1 : m.config.nodes); r++) {
      const root = kx.vspace(s).root(r);
      const master = masterRoot(kx, r);
      const current = Atomics.load(k, klayout.replicaBase(s, r) + SR_KGEN) === gen;
      for (let i = KERNEL_TOP_FIRST; i < 512; i++) {
        const w = root * FRAME_WORDS + i * 2;
        const mw = master * FRAME_WORDS + i * 2;
        if (matchesMaster(kx, s, r, i)) continue;
        const lo = Atomics.load(mem, w);
        const present = (lo & PTE_P) !== 0;
        const allowed = !present && (method === 'lazy' || (method === 'switch' && !current));
        if (allowed) continue;
        out.push({
          kind: 'kernel-half-divergence',
          detail: `space ${s} replica ${r}: top-level kernel entry ${i} is ${present ? `0x${(mem[w + 1] >>> 0).toString(16)}${(lo >>> 0).toString(16).padStart(8, '0')}` : 'missing'}, ` +
            `the master's ${(Atomics.load(mem, mw) & PTE_P) !== 0 ? `0x${(mem[mw + 1] >>> 0).toString(16)}${(Atomics.load(mem, mw) >>> 0).toString(16).padStart(8, '0')}` : 'missing'} (method ${method}${method === 'switch' ? `, copied at ${current ? 'the current' : 'an older'} generation` : ''})`,
        });
        if (out.length >= 16) return out;
      }
    }
  }
  return out;
}
