import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { ErrorCode, KvError } from "../errors.js";

/**
 * The DynamoDB item layout, version 1.
 *
 * | attribute | type | meaning |
 * |---|---|---|
 * | `pk` | B | `0x00` ‖ key: head items. The prefix keeps an empty key legal and leaves room for other item kinds. |
 * | `fmt` | N | item format version, `1` |
 * | `dk` | B | the data key, wrapped by KMS under the table's encryption context |
 * | `iv` | B | AES-GCM IV, 12 bytes |
 * | `ct` | B | AES-256-GCM ciphertext ‖ 16-byte tag |
 *
 * The plaintext value is never stored. The AAD (see {@link valueAad}) binds
 * the ciphertext to its table, key and format, so an item copied to another
 * key or table fails authentication.
 */
export const ITEM_FORMAT_VERSION = 1;

/** Attribute names. */
export const Attr = { pk: "pk", fmt: "fmt", dk: "dk", iv: "iv", ct: "ct" } as const;

/** Partition key prefixes by item kind. */
export const ItemKind = { head: 0x00 } as const;

/** The partition key bytes of the head item of `key`. */
export function headPk(key: Uint8Array): Uint8Array {
  const pk = new Uint8Array(key.length + 1);
  pk[0] = ItemKind.head;
  pk.set(key, 1);
  return pk;
}

const encoder = new TextEncoder();
const AAD_LABEL = encoder.encode("kvs/value");

/**
 * AAD of a single-item value: label ‖ u8 format ‖ u16 len(table) ‖ table ‖ u32 len(key) ‖ key.
 * Length prefixes make the encoding injective, so no two (table, key) pairs share an AAD.
 */
export function valueAad(table: string, key: Uint8Array): Uint8Array {
  const t = encoder.encode(table);
  const out = new Uint8Array(AAD_LABEL.length + 1 + 2 + t.length + 4 + key.length);
  const view = new DataView(out.buffer);
  let p = 0;
  out.set(AAD_LABEL, p);
  p += AAD_LABEL.length;
  out[p++] = ITEM_FORMAT_VERSION;
  view.setUint16(p, t.length);
  p += 2;
  out.set(t, p);
  p += t.length;
  view.setUint32(p, key.length);
  p += 4;
  out.set(key, p);
  return out;
}

/** The stored fields of a single-item value. */
export interface ValueItem {
  wrappedKey: Uint8Array;
  iv: Uint8Array;
  ciphertext: Uint8Array;
}

/** Builds the DynamoDB item of `key`. */
export function toItem(key: Uint8Array, item: ValueItem): Record<string, AttributeValue> {
  return {
    [Attr.pk]: { B: headPk(key) },
    [Attr.fmt]: { N: String(ITEM_FORMAT_VERSION) },
    [Attr.dk]: { B: item.wrappedKey },
    [Attr.iv]: { B: item.iv },
    [Attr.ct]: { B: item.ciphertext },
  };
}

/** Parses a stored item; throws `KV_ERR_INTEGRITY` for any item this version did not write. */
export function fromItem(item: Record<string, AttributeValue>): ValueItem {
  const fmt = item[Attr.fmt]?.N;
  if (fmt !== String(ITEM_FORMAT_VERSION)) {
    throw new KvError(ErrorCode.Integrity, `stored item has unknown format ${JSON.stringify(fmt)}`);
  }
  const wrappedKey = item[Attr.dk]?.B;
  const iv = item[Attr.iv]?.B;
  const ciphertext = item[Attr.ct]?.B;
  if (!wrappedKey || !iv || !ciphertext) {
    throw new KvError(ErrorCode.Integrity, "stored item lacks dk, iv or ct");
  }
  return { wrappedKey, iv, ciphertext };
}

/** Bytes DynamoDB counts for an item: attribute names plus values. */
export function itemSize(item: Record<string, AttributeValue>): number {
  let size = 0;
  for (const [name, value] of Object.entries(item)) {
    size += name.length;
    if (value.B) size += value.B.length;
    else if (value.S !== undefined) size += Buffer.byteLength(value.S);
    else if (value.N !== undefined) size += value.N.length;
  }
  return size;
}

/** DynamoDB's item size limit. */
export const MAX_ITEM_BYTES = 400 * 1024;
