// Protection keys of mappings (SDM 4.6.2; RPAL's isolation, rpal.ts): the effect of VS_PKEY on one
// replica — the mapping based at an address takes key k in its rights word (R_KEY_*) and in bits
// 62:59 of each of its leaves. Only the key changes: the frame bits stay, so a walk that reads
// the low half before the store and the high half after it finds the old or the new key, either a
// whole translation. Later leaf writes of the mapping (a copy-on-write remap, a move) keep the key
// (vspace.ts writes keyOf(rights) into every leaf it makes).

import type { MapDb, MapEntry } from './mapdb.js';
import { HI_PKEY_MASK, HI_PKEY_SHIFT } from '../hw/pte.js';
import { forEachLeaf } from '../hw/pagetable.js';
import { panic } from '../hw/panic.js';
import { vaJoin } from '../hw/vaddr.js';
import { NOT_MAPPED, OK, R_KEY_MASK, R_KEY_SHIFT, RS_ADJ_NEW, RS_ADJ_OLD, RS_ADJ_PAGES, RS_CODE } from './ops.js';

const found: MapEntry = { va: 0, pfn: 0, pages: 0, rights: 0 };

/** VS_PKEY on one replica (db, root): NOT_MAPPED unless a mapping is based exactly at hi:lo. Responds like VS_ADJUST (pages, old and new rights). */
export function applyPkey(mem: Int32Array, db: MapDb, root: number, hi: number, lo: number, key: number, resp: Int32Array, ro: number): void {
  if (!db.find(hi, lo, found) || found.va !== vaJoin(hi, lo)) {
    resp[ro + RS_CODE] = NOT_MAPPED;
    return;
  }
  const rights = (found.rights & ~R_KEY_MASK) | (key << R_KEY_SHIFT);
  db.setRights(hi, lo, rights);
  forEachLeaf(mem, root, hi, lo, found.pfn, found.pages, (word, vhi, vlo) => {
    if (word < 0) panic(`keys.applyPkey: mapping at 0x${vaJoin(vhi, vlo).toString(16)} has no leaf`);
    Atomics.store(mem, word + 1, (mem[word + 1] & ~HI_PKEY_MASK) | (key << HI_PKEY_SHIFT));
  });
  resp[ro + RS_CODE] = OK;
  resp[ro + RS_ADJ_PAGES] = found.pages;
  resp[ro + RS_ADJ_OLD] = found.rights;
  resp[ro + RS_ADJ_NEW] = rights;
}
