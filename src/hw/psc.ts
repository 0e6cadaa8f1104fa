// Paging-structure caches (Intel SDM Vol. 3A 4.10.3), an option of the machine (`tlb.psc`, off
// by default). A processor may implement any of the PML5E, PML4E, PDPTE and PDE caches; nrvm
// implements the PDE cache, the one that skips most of a walk: an entry, tagged with the PCID and
// linear-address bits 47:21 (56:21 with LA57), holds the physical address of the page table the
// PDE references, the AND of R/W and of U/S and the OR of XD over the PML5E/PML4E, PDPTE and PDE
// (4.10.3.1). It is created only from entries that were present with reserved bits clear and PS
// = 0 (the walk fills it after reading the PDE), and is used by a walk of any address with the
// same bits 47:21 and PCID (4.10.3.2), whatever the tables say now.
//
// Invalidation (4.10.4.1), called by the MMU: INVLPG drops every entry of the current PCID,
// whatever its address; INVPCID type 0 the entries that would translate its address in its PCID;
// type 1, a CR3 load that flushes, and the CR0/CR4 changes that flush the current PCID, that
// PCID's entries; types 2 and 3 and the other full flushes, all of them; a #PF the entries that
// would translate the faulting address in the current PCID. Entries are never global.
//
// Per core, private to its thread (like the fast path); direct-mapped, PSC_ENTRIES entries.

/** Entries of a core's PDE cache (a power of two). */
export const PSC_ENTRIES = 32;

const enum P {
  WORDS = 6,
  TAG_LO = 0,
  TAG_HI = 1,
  /** PSC_VALID | PCID, or 0. */
  MATCH = 2,
  PT = 3,
  /** R/W (bit 1) and U/S (bit 2), ANDed over the levels above the page table. */
  RIGHTS = 4,
  /** Bit 31: some level above had XD set. */
  XD = 5,
  VALID = 0x10000,
}

export class PdeCache {
  private readonly t = new Int32Array(PSC_ENTRIES * P.WORDS);
  /** Found by lookup(): the page table's frame, the rights and the XD word. */
  pt = 0;
  rights = 0;
  xd = 0;

  /** Whether an entry for vhi:vlo in `pcid` exists; if so it is in pt, rights and xd. */
  lookup(vhi: number, vlo: number, pcid: number): boolean {
    const tagLo = (vlo >>> 21) | (vhi << 11);
    const e = (tagLo & (PSC_ENTRIES - 1)) * P.WORDS;
    const t = this.t;
    if (t[e + P.TAG_LO] !== tagLo || t[e + P.TAG_HI] !== vhi >>> 21 || t[e + P.MATCH] !== (P.VALID | pcid)) return false;
    this.pt = t[e + P.PT];
    this.rights = t[e + P.RIGHTS];
    this.xd = t[e + P.XD];
    return true;
  }

  /** Caches the page table `pt` for vhi:vlo's 2 MiB region in `pcid` (replacing whatever held its slot). */
  fill(vhi: number, vlo: number, pcid: number, pt: number, rights: number, xd: number): void {
    const tagLo = (vlo >>> 21) | (vhi << 11);
    const e = (tagLo & (PSC_ENTRIES - 1)) * P.WORDS;
    const t = this.t;
    t[e + P.TAG_LO] = tagLo;
    t[e + P.TAG_HI] = vhi >>> 21;
    t[e + P.MATCH] = P.VALID | pcid;
    t[e + P.PT] = pt;
    t[e + P.RIGHTS] = rights & 6;
    t[e + P.XD] = xd & (1 << 31);
  }

  /** Drops the entry that would translate vhi:vlo in `pcid`. */
  dropAddress(vhi: number, vlo: number, pcid: number): void {
    if (this.lookup(vhi, vlo, pcid)) this.t[(((vlo >>> 21) | (vhi << 11)) & (PSC_ENTRIES - 1)) * P.WORDS + P.MATCH] = 0;
  }

  /** Drops every entry of `pcid`. */
  dropPcid(pcid: number): void {
    for (let e = 0; e < this.t.length; e += P.WORDS) if (this.t[e + P.MATCH] === (P.VALID | pcid)) this.t[e + P.MATCH] = 0;
  }

  /** Drops every entry. */
  clear(): void {
    for (let e = 0; e < this.t.length; e += P.WORDS) this.t[e + P.MATCH] = 0;
  }

  /** How many entries are valid (tests, statistics). */
  size(): number {
    let n = 0;
    for (let e = 0; e < this.t.length; e += P.WORDS) if (this.t[e + P.MATCH] !== 0) n++;
    return n;
  }
}
