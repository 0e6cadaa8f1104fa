// Property: the MMU's fast path (mmu.ts) is a strict subset of the architectural TLB. Random,
// seeded sequences of accesses of every kind, INVLPG, INVPCID 0-3, CR3 loads with and without the
// no-flush bit, CR0.WP/CR4 (SMEP, SMAP, PGE, PKE) changes, PKRU writes, CPL/AC changes and
// page-table edits made without an invalidation (which leave stale architectural entries, as on
// hardware) — and after every step each fast entry must be backed by an architectural entry of
// the current PCID (or a global one) with the same frame and at least the rights it grants in the
// current mode; and every access must give what the architectural path alone gives.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bootLocal, Tables, core, hl } from './helpers.js';
import { CR0_PG, CR0_WP, CR4_PAE, CR4_PCIDE, CR4_PGE, CR4_PKE, CR4_SMAP, CR4_SMEP, EFER_LMA, EFER_LME, EFER_NXE } from '../src/hw/regs.js';
import { ACC_FETCH, ACC_READ, ACC_WRITE, FAULT_GP0 } from '../src/hw/fault.js';
import { PTE_P, PTE_RW } from '../src/hw/pte.js';
import { Rng } from '../src/workloads/rng.js';
import type { Machine } from '../src/machine/machine.js';
import type { Cpu } from '../src/hw/cpu.js';

const CR0 = (CR0_PG | CR0_WP | 1) | 0;
const EFER = EFER_LME | EFER_LMA | EFER_NXE;
const KERNEL = 0xffff_8000_0000_0000n;

interface Page {
  va: bigint;
  shift: number;
}

/** A small TLB (evictions every few fills) and pages of every kind: user/supervisor, RO/RW, NX, keys, clean, global, 2 MiB, the kernel half. */
async function setup(): Promise<{ m: Machine; t: Tables; cpu: Cpu; pages: Page[] }> {
  const m = await bootLocal({ memory: '32MiB', tlb: { entries4k: 8, ways4k: 2, entries2m: 4, ways2m: 2 } });
  const t = new Tables(m);
  const pages: Page[] = [];
  for (let i = 0; i < 24; i++) {
    const va = 0x40_0000n + BigInt(i) * 0x1000n + (i % 5 === 0 ? BigInt(i) * 0x40_0000n : 0n);
    t.map(va, { write: i % 3 !== 0, user: i % 4 !== 0, nx: i % 5 === 1, pkey: i % 7 === 2 ? 3 : 0, dirty: i % 6 !== 0, accessed: true, global: i % 8 === 5 });
    pages.push({ va, shift: 12 });
  }
  for (let i = 0; i < 3; i++) {
    const va = 0x4000_0000n + BigInt(i) * 0x20_0000n;
    t.map(va, { write: i !== 1, user: true, dirty: i !== 2, accessed: true }, 21);
    pages.push({ va, shift: 21 });
  }
  for (let i = 0; i < 4; i++) {
    const va = KERNEL + 0x10_0000n + BigInt(i) * 0x1000n;
    t.map(va, { write: true, user: false, global: i % 2 === 0, dirty: true, accessed: true });
    pages.push({ va, shift: 12 });
  }
  const cpu = core(m, 0, { cr0: CR0, cr3: t.cr3(1), cr4: CR4_PAE | CR4_PCIDE | CR4_PGE, efer: EFER, cpl: 3 });
  return { m, t, cpu, pages };
}

/** Every fast entry backed by an architectural entry with the same frame and at least its rights. Returns what is wrong, or ''. */
function unbacked(m: Machine, cpu: Cpu): string {
  const arch = m.tlb(0).filter((e) => e.global || e.pcid === cpu.regs.pcid);
  for (const f of cpu.mmu.fastEntries()) {
    const size = 1n << BigInt(f.shift);
    const back = arch.find((e) => e.shift >= f.shift && f.va >= e.va && f.va + size <= e.va + (1n << BigInt(e.shift)) && e.pfn + Number((f.va - e.va) >> 12n) === f.pfn);
    if (!back) return `fast entry 0x${f.va.toString(16)} (2^${f.shift}) -> frame ${f.pfn} has no architectural entry behind it`;
    for (const [kind, granted] of [[ACC_READ, f.read], [ACC_WRITE, f.write], [ACC_FETCH, f.fetch]] as const) {
      if (granted && (back.flags & cpu.regs.accessMask(kind)) !== 0) return `fast entry 0x${f.va.toString(16)} lets kind ${kind} through; its architectural entry (flags 0x${back.flags.toString(16)}) does not now`;
    }
  }
  return '';
}

const F = suite('TLB fast path');

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  F(`seed ${seed}: every fast entry stays backed by the architectural TLB through 3000 random steps`, async () => {
    const { m, t, cpu, pages } = await setup();
    const rng = new Rng(seed, 10);
    const pick = (): bigint => {
      const p = pages[rng.below(pages.length)];
      return p.va + BigInt(rng.below(2 ** (p.shift - 3)) * 8);
    };
    const log: string[] = [];
    let fastHits = 0;
    for (let step = 0; step < 3000; step++) {
      const r = rng.below(100);
      let what: string;
      if (r < 60) {
        const va = pick();
        const acc = [ACC_READ, ACC_READ, ACC_WRITE, ACC_FETCH][rng.below(4)];
        const before = cpu.mmu.fastEntries().length;
        const [hi, lo] = hl(va);
        const got = cpu.mmu.translate(hi, lo, acc);
        // The same access again must give the same answer (a fast hit now, or the same fault).
        const again = cpu.mmu.translate(hi, lo, acc);
        if (got >= 0 && again !== got) assert.unreachable(`seed ${seed} step ${step}: 0x${va.toString(16)} kind ${acc} gave word ${got}, then ${again}`);
        if (before > 0) fastHits++;
        what = `access 0x${va.toString(16)} kind ${acc} -> ${got}`;
      } else if (r < 66) {
        const va = pick();
        cpu.mmu.invlpg(...hl(va));
        what = `invlpg 0x${va.toString(16)}`;
      } else if (r < 70) {
        const type = rng.below(4);
        const va = pick();
        cpu.mmu.invpcid(type, 1 + rng.below(2), ...hl(va));
        what = `invpcid ${type} 0x${va.toString(16)}`;
      } else if (r < 75) {
        const pcid = 1 + rng.below(2);
        const noFlush = rng.below(2) === 1;
        cpu.movCr3(noFlush ? 1 << 31 : 0, Number(t.cr3(pcid)));
        what = `mov cr3 pcid ${pcid}${noFlush ? ' no-flush' : ''}`;
      } else if (r < 80) {
        cpu.setMode(rng.below(2) === 0 ? 0 : 3, rng.below(2) === 1);
        what = `cpl ${cpu.regs.cpl} ac ${cpu.regs.ac}`;
      } else if (r < 84) {
        cpu.wrpkru(rng.below(2) === 0 ? 0 : 0b11 << 6);
        what = `wrpkru 0x${cpu.regs.pkru.toString(16)}`;
      } else if (r < 88) {
        const bits = [CR4_SMEP, CR4_SMAP, CR4_PGE, CR4_PKE][rng.below(4)];
        cpu.movCr4(cpu.regs.cr4 ^ bits);
        what = `cr4 ^= 0x${bits.toString(16)}`;
      } else if (r < 90) {
        cpu.movCr0(cpu.regs.cr0 ^ CR0_WP);
        what = 'cr0 ^= WP';
      } else {
        // A page-table edit with no invalidation: the TLB may keep the old translation (SDM 4.10.4.3).
        const p = pages[rng.below(pages.length)];
        const w = t.entryWord(p.va, p.shift);
        const e = rng.below(3);
        if (e === 0) m.mem[w] &= ~PTE_RW;
        else if (e === 1) m.mem[w] |= PTE_RW;
        else m.mem[w] ^= PTE_P;
        what = `edit entry of 0x${p.va.toString(16)} (${['RO', 'RW', 'P toggled'][e]})`;
      }
      log.push(what);
      const bad = unbacked(m, cpu);
      if (bad) assert.unreachable(`seed ${seed} step ${step}: ${bad}\nlast steps:\n  ${log.slice(-8).join('\n  ')}`);
    }
    assert.ok(fastHits > 500, `the fast path was in use (${fastHits} accesses with entries)`);
    cpu.detach();
    await m.shutdown();
  });
}

F('a non-canonical address that shares a fast entry\'s bits 12..53 is #GP(0), never a hit', async () => {
  const { m, cpu } = await setup();
  const va = 0x40_1000n;
  assert.ok(cpu.mmu.translate(...hl(va), ACC_READ) >= 0);
  assert.ok(cpu.mmu.fastEntries().some((f) => f.va === va), 'the page is in the fast path');
  for (const bad of [va | (1n << 54n), va | (1n << 63n), va | (0x1ffn << 47n) | (1n << 56n)]) {
    assert.is(cpu.mmu.translate(...hl(bad), ACC_READ), FAULT_GP0, `0x${bad.toString(16)}`);
  }
  cpu.detach();
  await m.shutdown();
});

F('a kind the mode denies never matches: a write to a clean page walks and sets D; a user store to a read-only page faults', async () => {
  const { m, t, cpu } = await setup();
  const clean = 0x40_6000n; // i = 6: read-only (6 % 3 === 0), user, clean (6 % 6 === 0)
  const dirtyRw = 0x40_1000n; // i = 1: writable, user, NX, dirty
  assert.ok(cpu.mmu.translate(...hl(dirtyRw), ACC_READ) >= 0);
  const f = cpu.mmu.fastEntries().find((e) => e.va === dirtyRw);
  assert.equal([f?.read, f?.write, f?.fetch], [true, true, false], 'read and write through, fetch refused (NX)');
  cpu.setMode(3, false);
  assert.ok(cpu.mmu.translate(...hl(clean), ACC_READ) >= 0);
  assert.is(cpu.mmu.fastEntries().find((e) => e.va === clean)?.write, false);
  assert.ok(cpu.mmu.translate(...hl(clean), ACC_WRITE) < 0, 'a user write to a read-only page faults');
  assert.is(cpu.mmu.fastEntries().find((e) => e.va === clean), undefined, "the #PF dropped the page's fast entry");
  void t;
  cpu.detach();
  await m.shutdown();
});

F.run();
