import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { writeUint32, writeUint64 } from "../bytes.js";
import { MAX_BRANCH_VERSION } from "../crypto/branch-keys.js";
import { type KeyRef, SALT_BYTES } from "../crypto/item-key.js";
import { ErrorCode, isKvError, KvError } from "../wire/errors.js";

/**
 * The DynamoDB item layout. Every item's partition key starts with a kind byte.
 *
 * Head items, `pk = 0x00 ‖ key`, one per key. Format 1 holds the value itself:
 *
 * | attribute | type | meaning |
 * |---|---|---|
 * | `fmt` | N | `1`, or with an expiry `10 × expiresAt + 1` (see below) |
 * | `bv` | N | the branch-key version the data key is derived from (see crypto/item-key.ts) |
 * | `bs` | B | the 16-byte salt the data key is derived with |
 * | `iv` | B | AES-GCM IV, 12 bytes |
 * | `ct` | B | AES-256-GCM ciphertext ‖ 16-byte tag |
 * | `v` | N | the value's version (see kv-store.ts `Versioned`); absent on items written before versions |
 * | `ttl` | N | with an expiry only: the expiry in whole seconds since the epoch, rounded up, for DynamoDB's TTL |
 *
 * Format 2 points at a chunked value, for values too large for one item:
 *
 * | attribute | type | meaning |
 * |---|---|---|
 * | `fmt` | N | `2`, or with an expiry `10 × expiresAt + 2` |
 * | `bv`, `bs` | | the data key shared by every chunk, as in format 1 |
 * | `ver` | B | 16 random bytes naming this version of the value |
 * | `n` | N | chunk count |
 * | `sz` | N | plaintext size in bytes |
 * | `ts` | N | commit time, ms since the epoch |
 * | `v` | N | the value's version, as in format 1 |
 * | `ttl` | N | as in format 1 |
 *
 * Expiry. A head's `fmt` packs the format (its last decimal digit) with
 * the expiry in ms since the epoch (the digits before it; none: never), so
 * the keys index, which projects `fmt`, lets listing and clear leave out
 * expired keys without reading their heads, on tables made before expiry
 * existed too. The expiry is bound into the AAD (of the value, or of every
 * chunk), so a head whose expiry was changed in the table fails
 * authentication instead of reviving its value. `ttl` only tells DynamoDB
 * when it may delete the item (typically within days after); every read
 * decides by `fmt`, to the ms. Tampering with `ttl` can only make DynamoDB
 * delete an item early, which write access to the table allows anyway.
 *
 * Heads written before the hierarchical keyring, or with `--keyring kms`,
 * have `dk` (B: the data key, wrapped by KMS under the table's encryption
 * context) instead of `bv` and `bs`; a head has exactly one of the two forms.
 *
 * Chunk items, `pk = 0x01 ‖ ver ‖ u32 index`, so the chunks of one value land
 * on distinct partitions:
 *
 * | attribute | type | meaning |
 * |---|---|---|
 * | `k` | B | the key, so the orphan sweep can find the head |
 * | `ts` | N | write time, ms since the epoch |
 * | `iv`, `ct` | B | that chunk's IV and ciphertext ‖ tag |
 * | `ttl` | N | as in the head, when the value has an expiry |
 *
 * Branch-key items (store/branch-key-store.ts): `pk = 0x02 ‖ u32 version`
 * for each version and `pk = 0x02` for a copy of the active one:
 *
 * | attribute | type | meaning |
 * |---|---|---|
 * | `bv` | N | the version |
 * | `bk` | B | the branch key, encrypted by KMS under the context of table and version |
 * | `ts` | N | creation time, ms since the epoch |
 *
 * The table has one global secondary index, {@link KEYS_INDEX}: partition
 * key `pk`, sort key `fmt`, projecting keys only. Only head items have
 * `fmt`, so the index is sparse: it holds one small entry per key and no
 * chunk, and listing or clearing scans it at a cost set by the number of
 * keys, not by value bytes. Heads written before the index existed have
 * `fmt` too, so adding the index to an existing table lists them all.
 *
 * The plaintext is never stored. AADs bind ciphertext to table, key,
 * format and expiry, and for chunks also to version, index, count and total
 * size, so a moved, swapped, reordered, truncated or revived item fails
 * authentication.
 */
export const ItemFormat = { single: 1, chunked: 2 } as const;
export type ItemFormat = (typeof ItemFormat)[keyof typeof ItemFormat];

/** Attribute names. */
export const Attr = {
  pk: "pk",
  fmt: "fmt",
  dk: "dk",
  iv: "iv",
  ct: "ct",
  ver: "ver",
  n: "n",
  sz: "sz",
  ts: "ts",
  k: "k",
  v: "v",
  bv: "bv",
  bs: "bs",
  bk: "bk",
  ttl: "ttl",
} as const;

/** Every attribute a head item of either format may have, besides `pk` and `v`. */
export const HEAD_ATTRS = [
  Attr.fmt,
  Attr.dk,
  Attr.bv,
  Attr.bs,
  Attr.iv,
  Attr.ct,
  Attr.ver,
  Attr.n,
  Attr.sz,
  Attr.ts,
  Attr.ttl,
] as const;

/** The `fmt` of a head of `format` that expires at `expiresAt` (ms since the epoch; undefined: never). */
export function packFmt(format: ItemFormat, expiresAt: number | undefined): string {
  return expiresAt === undefined ? String(format) : String(expiresAt * 10 + format);
}

/** A head's format and expiry from its `fmt`; undefined for a value this version never writes. */
export function unpackFmt(fmt: string | undefined): { format: ItemFormat; expiresAt: number | undefined } | undefined {
  const n = fmt === undefined ? Number.NaN : Number(fmt);
  if (!Number.isSafeInteger(n) || n < 1) return undefined;
  const format = n % 10;
  if (format !== ItemFormat.single && format !== ItemFormat.chunked) return undefined;
  return { format, expiresAt: n < 10 ? undefined : (n - format) / 10 };
}

/** The `ttl` attribute for an expiry, or none without one. */
function ttlAttr(expiresAt: number | undefined): Record<string, AttributeValue> {
  return expiresAt === undefined ? {} : { [Attr.ttl]: { N: String(Math.ceil(expiresAt / 1000)) } };
}

/** The keys-only index of head items (see above). */
export const KEYS_INDEX = "keys";

/** Partition key prefixes by item kind. */
export const ItemKind = { head: 0x00, chunk: 0x01, branchKey: 0x02 } as const;

/** Bytes in a version id. */
export const VERSION_BYTES = 16;

/**
 * Plaintext bytes per chunk: 380 KiB leaves room under DynamoDB's 400 KB item
 * limit for the key (up to 1 KiB), IV, tag and attribute names, and 25 chunks
 * stay under BatchWriteItem's 16 MB.
 */
export const CHUNK_BYTES = 380 * 1024;

/** DynamoDB's item size limit. */
export const MAX_ITEM_BYTES = 400 * 1024;

/** The partition key bytes of the head item of `key`. */
export function headPk(key: Uint8Array): Uint8Array {
  const pk = new Uint8Array(key.length + 1);
  pk[0] = ItemKind.head;
  pk.set(key, 1);
  return pk;
}

/** The partition key bytes of chunk `index` of version `ver`. */
export function chunkPk(ver: Uint8Array, index: number): Uint8Array {
  const pk = new Uint8Array(1 + VERSION_BYTES + 4);
  pk[0] = ItemKind.chunk;
  pk.set(ver, 1);
  writeUint32(pk, 1 + VERSION_BYTES, index);
  return pk;
}

/** The version id inside a chunk's partition key. */
export function versionOfChunkPk(pk: Uint8Array): Uint8Array {
  return pk.subarray(1, 1 + VERSION_BYTES);
}

const encoder = new TextEncoder();
const VALUE_LABEL = encoder.encode("kvs/value");
const CHUNK_LABEL = encoder.encode("kvs/chunk");

/**
 * The UTF-8 bytes of the last table name seen: a server serves one table, so
 * this is always a hit. A one-entry memo, process-wide on purpose: several
 * servers in one process (tests) only make it miss.
 */
let lastTable = "";
let lastTableBytes = new Uint8Array(0);

/**
 * Builds label ‖ u8 format ‖ u16 len(table) ‖ table ‖ u32 len(key) ‖ key ‖
 * extra, and with an expiry ‖ u64 expiresAt after `extra`'s bytes. Values
 * without an expiry keep the AAD they had before expiry existed.
 */
function aad(
  label: Uint8Array,
  format: ItemFormat,
  table: string,
  key: Uint8Array,
  extra: number,
  expiresAt: number | undefined,
): Uint8Array {
  if (table !== lastTable) {
    lastTableBytes = encoder.encode(table);
    lastTable = table;
  }
  const t = lastTableBytes;
  const expiryBytes = expiresAt === undefined ? 0 : 8;
  const out = new Uint8Array(label.length + 1 + 2 + t.length + 4 + key.length + extra + expiryBytes);
  let p = 0;
  out.set(label, p);
  p += label.length;
  out[p++] = format;
  out[p++] = t.length >>> 8;
  out[p++] = t.length & 0xff;
  out.set(t, p);
  p += t.length;
  writeUint32(out, p, key.length);
  p += 4;
  out.set(key, p);
  if (expiresAt !== undefined) {
    // No BigInt: it would cost an allocation per get.
    writeUint64(out, out.length - 8, expiresAt);
  }
  return out;
}

/**
 * AAD of a single-item value. Length prefixes make the encoding injective, so
 * no two (table, key) pairs share an AAD.
 */
export function valueAad(table: string, key: Uint8Array, expiresAt?: number): Uint8Array {
  return aad(VALUE_LABEL, ItemFormat.single, table, key, 0, expiresAt);
}

/** AAD of one chunk: the value AAD fields ‖ ver ‖ u32 index ‖ u32 count ‖ u64 size (‖ u64 expiresAt). */
export function chunkAad(
  table: string,
  key: Uint8Array,
  ver: Uint8Array,
  index: number,
  count: number,
  size: number,
  expiresAt?: number,
): Uint8Array {
  const out = aad(CHUNK_LABEL, ItemFormat.chunked, table, key, VERSION_BYTES + 4 + 4 + 8, expiresAt);
  let p = out.length - (VERSION_BYTES + 16) - (expiresAt === undefined ? 0 : 8);
  out.set(ver, p);
  p += VERSION_BYTES;
  writeUint32(out, p, index);
  writeUint32(out, p + 4, count);
  writeUint64(out, p + 8, size);
  return out;
}

/** A head item, parsed; `expiresAt` in ms since the epoch, undefined: never. */
export type Head = { version: number; expiresAt: number | undefined } & (
  | { format: 1; keyRef: KeyRef; iv: Uint8Array; ciphertext: Uint8Array }
  | { format: 2; keyRef: KeyRef; ver: Uint8Array; count: number; size: number }
);

/** The attributes that store `ref` in a head item. */
function keyAttrs(ref: KeyRef): Record<string, AttributeValue> {
  return ref.kind === "kms"
    ? { [Attr.dk]: { B: ref.wrapped } }
    : { [Attr.bv]: { N: String(ref.version) }, [Attr.bs]: { B: ref.salt } };
}

/** Builds the format-1 head item of `key`. */
export function singleItem(
  key: Uint8Array,
  v: { keyRef: KeyRef; iv: Uint8Array; ciphertext: Uint8Array; expiresAt: number | undefined },
): Record<string, AttributeValue> {
  return {
    [Attr.pk]: { B: headPk(key) },
    [Attr.fmt]: { N: packFmt(ItemFormat.single, v.expiresAt) },
    ...keyAttrs(v.keyRef),
    [Attr.iv]: { B: v.iv },
    [Attr.ct]: { B: v.ciphertext },
    ...ttlAttr(v.expiresAt),
  };
}

/** Builds the format-2 head item of `key`. */
export function chunkedHeadItem(
  key: Uint8Array,
  v: { keyRef: KeyRef; ver: Uint8Array; count: number; size: number; ts: number; expiresAt: number | undefined },
): Record<string, AttributeValue> {
  return {
    [Attr.pk]: { B: headPk(key) },
    [Attr.fmt]: { N: packFmt(ItemFormat.chunked, v.expiresAt) },
    ...keyAttrs(v.keyRef),
    [Attr.ver]: { B: v.ver },
    [Attr.n]: { N: String(v.count) },
    [Attr.sz]: { N: String(v.size) },
    [Attr.ts]: { N: String(v.ts) },
    ...ttlAttr(v.expiresAt),
  };
}

/** Builds chunk item `index` of version `ver` of `key`. */
export function chunkItem(
  key: Uint8Array,
  ver: Uint8Array,
  index: number,
  v: { iv: Uint8Array; ciphertext: Uint8Array; ts: number; expiresAt: number | undefined },
): Record<string, AttributeValue> {
  return {
    [Attr.pk]: { B: chunkPk(ver, index) },
    [Attr.k]: { B: key },
    [Attr.ts]: { N: String(v.ts) },
    [Attr.iv]: { B: v.iv },
    [Attr.ct]: { B: v.ciphertext },
    ...ttlAttr(v.expiresAt),
  };
}

function integrity(message: string): KvError {
  return new KvError(ErrorCode.Integrity, message);
}

function count(item: Record<string, AttributeValue>, name: string, max: number): number {
  const raw = item[name]?.N;
  const n = raw === undefined ? Number.NaN : Number(raw);
  if (!Number.isSafeInteger(n) || n < 0 || n > max) throw integrity(`stored item has a bad ${name}`);
  return n;
}

/** Parses a head item; throws `KV_ERR_INTEGRITY` for anything this version did not write. */
export function parseHead(item: Record<string, AttributeValue>): Head {
  const fmt = item[Attr.fmt]?.N;
  const packed = unpackFmt(fmt);
  if (packed === undefined) throw integrity(`stored item has unknown format ${JSON.stringify(fmt)}`);
  const { format, expiresAt } = packed;
  const keyRef = keyRefOf(item);
  const version = versionOf(item);
  if (format === ItemFormat.single) {
    const iv = item[Attr.iv]?.B;
    const ciphertext = item[Attr.ct]?.B;
    if (!iv || !ciphertext) throw integrity("stored item lacks iv or ct");
    return { format: 1, keyRef, iv, ciphertext, version, expiresAt };
  }
  {
    const ver = item[Attr.ver]?.B;
    if (ver?.length !== VERSION_BYTES) throw integrity("stored head has a bad ver");
    const size = count(item, Attr.sz, Number.MAX_SAFE_INTEGER);
    const n = count(item, Attr.n, 1 << 20);
    if (n !== Math.max(1, Math.ceil(size / CHUNK_BYTES)))
      throw integrity("stored head's chunk count does not match its size");
    return { format: 2, keyRef, ver, count: n, size, version, expiresAt };
  }
}

/** A head's key reference: a KMS-wrapped key (`dk`) or a branch-key version and salt (`bv`, `bs`), never both. */
function keyRefOf(item: Record<string, AttributeValue>): KeyRef {
  const wrapped = item[Attr.dk]?.B;
  const salt = item[Attr.bs]?.B;
  const rawVersion = item[Attr.bv]?.N;
  if (wrapped !== undefined) {
    if (salt !== undefined || rawVersion !== undefined) throw integrity("stored item has two data-key forms");
    if (wrapped.length === 0) throw integrity("stored item has an empty dk");
    return { kind: "kms", wrapped };
  }
  if (salt === undefined || rawVersion === undefined)
    throw integrity("stored item lacks its data key (dk, or bv and bs)");
  const version = Number(rawVersion);
  if (!Number.isSafeInteger(version) || version < 1 || version > MAX_BRANCH_VERSION) {
    throw integrity("stored item has a bad branch-key version");
  }
  if (salt.length !== SALT_BYTES) throw integrity("stored item has a bad salt");
  return { kind: "branch", version, salt };
}

/** A head's version: 0 when it has none (written before versions existed). */
export function versionOf(item: Record<string, AttributeValue>): number {
  const n = item[Attr.v]?.N;
  if (n === undefined) return 0;
  const version = Number(n);
  if (!Number.isSafeInteger(version) || version < 0) throw integrity("stored head has a bad version");
  return version;
}

/** Bytes DynamoDB counts for an item: attribute names plus values. */
export function itemSize(item: Record<string, AttributeValue>): number {
  let size = 0;
  for (const name in item) {
    const value = item[name];
    if (value === undefined) continue;
    size += name.length;
    if (value.B) size += value.B.length;
    else if (value.S !== undefined) size += Buffer.byteLength(value.S);
    else if (value.N !== undefined) size += value.N.length;
  }
  return size;
}

/**
 * `open()`'s result, its authentication failure said in the store's terms:
 * the AAD binds table, key, format and expiry, so any of them changed in
 * the table fails here, as a changed ciphertext does.
 */
export function authenticated<T>(open: () => T, what = "the stored value"): T {
  try {
    return open();
  } catch (err) {
    if (!isKvError(err, ErrorCode.Integrity)) throw err;
    throw new KvError(
      ErrorCode.Integrity,
      `${what} failed authentication: its ciphertext, or the table, key or expiry it was sealed with, was changed in the table`,
      { cause: err },
    );
  }
}
