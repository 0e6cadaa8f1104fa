// Property: the mapping database (B+tree in a shared arena) behaves like a sorted map of
// non-overlapping ranges — insert, remove, setRights, find (containing), floor, ceil and ordered
// iteration agree with a plain sequential model over thousands of random operations, through
// many splits and with empty leaves left behind by removals; a full arena is a value.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { MapDb, arenaWords, type MapEntry } from '../src/kernel/mapdb.js';
import { vaHi, vaLo } from '../src/hw/vaddr.js';

const T = suite('mapping database');

function fresh(max: number): MapDb {
  const words = arenaWords(max);
  const db = new MapDb(new Int32Array(new SharedArrayBuffer(words * 4 + 64)), 16, words);
  db.reset();
  return db;
}

/** A query's answer as the model gives it: the entry found, or null. */
function got(query: (out: MapEntry) => boolean): MapEntry | null {
  const out = { va: 0, pfn: 0, pages: 0, rights: 0 };
  return query(out) ? out : null;
}

T('random inserts, removals and lookups agree with a sequential model', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.constantFrom('ins', 'ins', 'ins', 'rm', 'rights'), fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 3 })), { minLength: 200, maxLength: 2500 }), (ops) => {
      const db = fresh(4000);
      const model = new Map<number, MapEntry>();
      for (const [kind, slot, pages] of ops) {
        const va = 0x7f00_0000_0000 + slot * 4 * 4096; // 48-bit addresses: both halves in use
        if (kind === 'ins') {
          if (model.has(va)) continue;
          const e = { va, pfn: slot, pages, rights: slot & 7 };
          assert.ok(db.insert(vaHi(e.va), vaLo(e.va), e.pfn, e.pages, e.rights));
          model.set(va, e);
        } else if (kind === 'rm') {
          assert.equal(got((o) => db.remove(vaHi(va), vaLo(va), o)), model.get(va) ?? null);
          model.delete(va);
        } else {
          const changed = got((o) => db.setRights(vaHi(va), vaLo(va), 5) && db.find(vaHi(va), vaLo(va), o));
          const m = model.get(va);
          if (m) m.rights = 5;
          assert.equal(changed, m ?? null);
        }
      }
      const sorted = [...model.values()].sort((a, b) => a.va - b.va);
      assert.equal(db.entries(), sorted);
      assert.is(db.size, sorted.length);
      for (let k = 0; k < 60; k++) {
        const probe = 0x7f00_0000_0000 + Math.floor((k * 5001 * 4 * 4096) / 60) + (k % 3) * 4096;
        const floor = [...sorted].reverse().find((e) => e.va <= probe) ?? null;
        const ceil = sorted.find((e) => e.va >= probe) ?? null;
        assert.equal(got((o) => db.floor(vaHi(probe), vaLo(probe), o)), floor, `floor ${probe.toString(16)}`);
        assert.equal(got((o) => db.ceil(vaHi(probe), vaLo(probe), o)), ceil, `ceil ${probe.toString(16)}`);
        assert.equal(got((o) => db.find(vaHi(probe), vaLo(probe), o)), floor && probe < floor.va + floor.pages * 4096 ? floor : null);
      }
    }),
    { numRuns: 40 },
  );
});

T('sequential and reverse insertion of 20,000 entries (many levels of splits)', () => {
  for (const order of ['up', 'down']) {
    const db = fresh(20_000);
    for (let i = 0; i < 20_000; i++) {
      const k = order === 'up' ? i : 19_999 - i;
      assert.ok(db.insert(vaHi(k * 4096), vaLo(k * 4096), k, 1, 1), `insert ${k}`);
    }
    const all = db.entries();
    assert.is(all.length, 20_000);
    all.forEach((e, i) => assert.is(e.va, i * 4096));
    assert.is(got((o) => db.find(vaHi(12_345 * 4096 + 100), vaLo(12_345 * 4096 + 100), o))?.pfn, 12_345);
  }
});

T('a full arena refuses an insert with false, and loses nothing', () => {
  const words = 16 + 3 * (4 + 32 * 5);
  const db = new MapDb(new Int32Array(words + 16), 0, words);
  db.reset();
  let n = 0;
  while (db.insert(vaHi(n * 4096), vaLo(n * 4096), n, 1, 0)) n++;
  assert.ok(n >= 32 && n < 200);
  assert.is(db.entries().length, n);
});

T.run();
