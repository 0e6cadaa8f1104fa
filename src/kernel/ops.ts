// The address-space operations as they travel through NR's log (NRK's VSpace operations), their
// outcomes (errors as values), the rights word of a mapping (access rights and MH's kinds), and
// the kernel's IPI types. An operation is an opcode and argument words, a response is response
// words; every word has a name here and nowhere else a number.

/** Operations (NR opcodes). */
export const VS_MAP = 1;
export const VS_UNMAP = 2;
export const VS_ADJUST = 3;
/** Replace the frame (and rights) of a one-page mapping: copy-on-write and zero-page faults. */
export const VS_REMAP = 4;
/** MH: change the wiring count of a mapping by A_WIRE_DELTA (+1 export, -1 unexport). */
export const VS_WIRE = 5;
/** MH: move the one-page mapping at A_MOVE_FROM over the one-page mapping at A_VA (user-level copy-on-write). */
export const VS_MOVE = 6;
/** Kernel half: detach the top-level entry covering A_VA from the master, if no mapping is left under it (its tables wait in limbo). */
export const VS_PRUNE = 7;
/** Kernel half: free the tables the last VS_PRUNE detached. */
export const VS_PRUNE_FREE = 8;
/** Fork: every shareable mapping becomes copy-on-write, its leaves read-only (forkcopy.ts); the child is built beside the log. */
export const VS_FORK = 9;
/** RPAL: make sure the top-level entry covering A_VA has a table (from the pool, A_RESERVED frames reserved). */
export const VS_TOP = 10;
/** pkey_mprotect: the mapping based at A_VA takes protection key A_KEY (keys.ts). */
export const VS_PKEY = 11;

// Argument words of an operation (args[...] on the issuing side, words[argOff + ...] in apply).
/** Every operation: the mapping's base address (high half, then low half; vaddr.ts getVa reads them). */
export const A_VA = 0;
/** VS_MAP, VS_REMAP: the (first) frame. */
export const A_PFN = 2;
/** VS_MAP: the mapping's 4 KiB pages. */
export const A_PAGES = 3;
/** VS_MAP: rights; VS_REMAP: the new rights. */
export const A_RIGHTS = 4;
/** VS_MAP, VS_TOP: page-table frames reserved in each replica's pool for it (released as it is applied). */
export const A_RESERVED = 5;
/** VS_REMAP: the new rights (the one-page mapping keeps its base). */
export const A_REMAP_RIGHTS = 3;
/** VS_ADJUST: requested rights, and the mask of the bits that change. */
export const A_ADJ_RIGHTS = 2;
export const A_ADJ_MASK = 3;
/** VS_ADJUST: 1 when the program asked (MH's table applies), 0 when the kernel did. */
export const A_ADJ_USER = 4;
/** VS_WIRE: the mapping's pages as the caller named them, and +1 or -1. */
export const A_WIRE_PAGES = 2;
export const A_WIRE_DELTA = 3;
/** VS_PKEY: the key. */
export const A_KEY = 2;
/** VS_MOVE: the source mapping (high half, then low half). */
export const A_MOVE_FROM = 2;

// Response words.
/** Every operation: the outcome (OK or an error below). */
export const RS_CODE = 0;
/** VS_MAP ALREADY_MAPPED: the lowest conflicting address (high half, then low half). */
export const RS_CONFLICT = 1;
/** VS_UNMAP: first frame, pages and rights of the mapping removed. */
export const RS_UNMAP_PFN = 1;
export const RS_UNMAP_PAGES = 2;
export const RS_UNMAP_RIGHTS = 3;
/** VS_ADJUST: the mapping's pages, its old rights and its new rights. */
export const RS_ADJ_PAGES = 1;
export const RS_ADJ_OLD = 2;
export const RS_ADJ_NEW = 3;
/** VS_REMAP: the old frame and rights. */
export const RS_REMAP_PFN = 1;
export const RS_REMAP_RIGHTS = 2;
/** VS_WIRE: the wiring count after the change. */
export const RS_WIRE_COUNT = 1;
/** VS_FORK: how many mappings lost a writable leaf (the forker shoots down when any did). */
export const RS_FORK_NARROWED = 1;
/** VS_MOVE: the frame and rights the destination had (the caller drops its reference). */
export const RS_MOVE_OLD_PFN = 1;
export const RS_MOVE_OLD_RIGHTS = 2;

/** Rights of a mapping. */
export const R_WRITE = 1;
export const R_USER = 2;
export const R_NX = 4;
/** Kinds (MH's states), kept in the same word. A COW or ZERO mapping's leaf is read-only whatever R_WRITE says. */
/** Copy-on-write: the frame is shared read-only; R_WRITE says whether it becomes writable on its first write. */
export const R_COW = 8;
/** Demand-zero: mapped to the zero page read-only; the first write allocates a frame. */
export const R_ZERO = 16;
/** Wired (exported to a device): never shared by fork, never moved. */
export const R_WIRED = 32;
/** Mapped to device (I/O) memory: absent in a forked child. */
export const R_IO = 64;
/** MH policy: made private read-only by a copy-on-write fault; the user-level handler restores write on the next fault. */
export const R_WAS_COW = 128;
/** A kernel mapping: global leaves (kept in the TLB across address-space switches). */
export const R_GLOBAL = 256;
/** The access rights a program may change with Adjust; the kinds (COW, ZERO, WIRED, IO...) stay. */
export const R_ACCESS = R_WRITE | R_USER | R_NX;
/** MH: how many exports wire the mapping (bits 16-23; R_WIRED is set while it is above 0). */
export const R_WIRE_SHIFT = 16;
export const R_WIRE_MASK = 0xff << R_WIRE_SHIFT;
export const R_WIRE_MAX = 0xff;
/** Every bit of the rights word (kinds, and MH's wiring count). The protection key (below) stays unless VS_PKEY changes it. */
export const R_ALL = 0x1ff | R_WIRE_MASK;
/** The mapping's protection key, 0-15 (bits 24-27; its leaves carry it in bits 62:59): set by VS_PKEY. */
export const R_KEY_SHIFT = 24;
export const R_KEY_MASK = 0xf << R_KEY_SHIFT;

/** The protection key of a mapping with these rights. */
export function keyOf(rights: number): number {
  return (rights >>> R_KEY_SHIFT) & 0xf;
}

/** Whether the hardware leaf of a mapping with these rights is writable (COW and ZERO leaves are read-only). */
export function leafWritable(rights: number): boolean {
  return (rights & R_WRITE) !== 0 && (rights & (R_COW | R_ZERO)) === 0;
}

/** Outcomes (NRK's errors as values). */
export const OK = 0;
export const ALREADY_MAPPED = 1;
export const INVALID_FRAME = 2;
export const INVALID_BASE = 3;
export const NOT_MAPPED = 4;
export const OUT_OF_MEMORY = 5;
/** MH's errors, as its kernel returns them (kernel/mh.ts has the table). */
export const EINVAL = 6;
export const EPERM = 7;
export const EBUSY = 8;
export const RESULT_NAMES = ['Ok', 'AlreadyMapped', 'InvalidFrame', 'InvalidBase', 'NotMapped', 'OutOfMemory', 'EINVAL', 'EPERM', 'EBUSY'];

export const PAGE = 4096;
/** The top of the user half of a 4-level address space. */
export const USER_TOP = 2 ** 47;

/** IPI type of a shootdown request: a0 = space, a1:a2 = va (hi, lo), a3 = pages, a4 = the owner space + 1 when a0 shares its slot (RPAL), else 0. */
export const IPI_SHOOTDOWN = 16;
/** IPI type asking an idle core to bring its node's replica of space a0 up to date. */
export const IPI_REPLICA_ADVANCE = 17;
/** IPI type telling a core that space a0's process exited: it leaves the space (no user space, empty root), then acks. */
export const IPI_EXIT = 18;
/** IPI type of a kernel shootdown: a1:a2 = va (hi, lo), a3 = pages; global entries go too. */
export const IPI_KSHOOTDOWN = 19;
