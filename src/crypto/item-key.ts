import { KEY_BYTES } from "./envelope.js";

/** Bytes of per-item salt fed to HKDF. 128 random bits: no two items share a key in any realistic table. */
export const SALT_BYTES = 16;

/**
 * How an item's data key is found again; stored in the item beside the
 * ciphertext.
 * - `kms`: the data key itself, wrapped by KMS (the format written before
 *   the hierarchical keyring; still read, and written with `--keyring kms`).
 * - `branch`: the key is derived from branch-key version `version` and the
 *   item's own `salt` (see {@link deriveItemKey}); nothing secret is stored.
 */
export type KeyRef =
  | { readonly kind: "kms"; readonly wrapped: Uint8Array }
  | { readonly kind: "branch"; readonly version: number; readonly salt: Uint8Array };

/** A data key ready to encrypt one item (or one chunked value), and how to find it again. */
export interface ItemKey {
  readonly plaintext: Uint8Array;
  readonly ref: KeyRef;
}

/** Where the store gets data keys: the one seam between storage and key management. */
export interface ItemKeys {
  /** A key to encrypt `messages` messages (a value, or a value's chunks) of `bytes` plaintext bytes. */
  encryptionKey(messages: number, bytes: number): Promise<ItemKey>;
  /** The key `ref` names. Throws `KV_ERR_INTEGRITY` if it cannot be right, `KV_ERR_KMS` if KMS is needed and fails. */
  decryptionKey(ref: KeyRef): Promise<Uint8Array>;
}

const encoder = new TextEncoder();
const LABEL = encoder.encode("kvs/item-key");
/** HKDF-Extract's salt: fixed, as RFC 5869 allows when the input key is already uniformly random. */
const EXTRACT_SALT = encoder.encode("kvs/branch-key");
const ONE = Uint8Array.of(1);

/** Derives the data keys of the items under one branch-key version, from their salts. */
export type ItemKeyDeriver = (salt: Uint8Array) => Uint8Array;

/**
 * The data-key derivation of branch-key version `version` of `table`:
 * HKDF-SHA256 (RFC 5869) with the branch key as input key material and, in
 * HKDF's info, label ‖ u16 len(table) ‖ table ‖ u32 version ‖ the item's
 * salt (an injective encoding: table and version are bound, and each salt
 * gives an independent key).
 *
 * Extract runs here, once per version; each item then costs one HMAC
 * (Expand of one block) instead of a whole HKDF.
 *
 * Each item therefore has its own key, which is what the AWS hierarchical
 * keyring's per-message wrapping key achieves; storing a random key
 * wrapped under it would add 60 bytes per item and no secrecy (whoever can
 * derive the wrapping key can unwrap).
 */
export function itemKeyDeriver(branchKey: Uint8Array, table: string, version: number): ItemKeyDeriver {
  const prk = hmac(EXTRACT_SALT, [branchKey]);
  const t = encoder.encode(table);
  const prefix = new Uint8Array(LABEL.length + 2 + t.length + 4);
  const view = new DataView(prefix.buffer);
  prefix.set(LABEL, 0);
  view.setUint16(LABEL.length, t.length);
  prefix.set(t, LABEL.length + 2);
  view.setUint32(LABEL.length + 2 + t.length, version);
  return (salt) => hmac(prk, [prefix, salt, ONE]);
}

/** The data key of one item (see {@link itemKeyDeriver}); for one-off derivations. */
export function deriveItemKey(branchKey: Uint8Array, salt: Uint8Array, table: string, version: number): Uint8Array {
  return itemKeyDeriver(branchKey, table, version)(salt);
}

function hmac(key: Uint8Array, parts: Uint8Array[]): Uint8Array {
  const h = new Bun.CryptoHasher("sha256", key);
  for (const part of parts) h.update(part);
  const out = new Uint8Array(KEY_BYTES);
  out.set(h.digest());
  return out;
}
