import { createCipheriv, createDecipheriv } from "node:crypto";
import { ErrorCode, KvError } from "../wire/errors.js";
import { randomBytes } from "./random-bytes.js";

/** AES-256-GCM parameters. */
export const KEY_BYTES = 32;
export const IV_BYTES = 12;
export const TAG_BYTES = 16;

/** A sealed value: ciphertext with the GCM tag appended, and its IV. */
export interface Sealed {
  iv: Uint8Array;
  ciphertext: Uint8Array;
}

/**
 * Encrypts `plaintext` with AES-256-GCM under `key`, authenticating `aad`.
 * The IV is random: with at most 2^32 messages per key (the key cache rotates
 * far earlier) the collision bound of NIST SP 800-38D holds. With `into`
 * (at least `plaintext.length + TAG_BYTES` long), the ciphertext is written
 * there and `ciphertext` is a view of it: for buffers reused chunk after chunk.
 */
export function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, into?: Uint8Array): Sealed {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(aad);
  const ciphertext =
    into === undefined ? new Uint8Array(plaintext.length + TAG_BYTES) : into.subarray(0, plaintext.length + TAG_BYTES);
  const body = cipher.update(plaintext);
  ciphertext.set(body, 0);
  const final = cipher.final();
  ciphertext.set(final, body.length);
  ciphertext.set(cipher.getAuthTag(), body.length + final.length);
  return { iv, ciphertext };
}

/**
 * Decrypts what {@link seal} produced. Throws `KV_ERR_INTEGRITY` if the
 * ciphertext, IV, key or AAD differ in any bit: tampered or moved data never
 * comes back as bytes. With `into` (at least the plaintext's length), the
 * plaintext is written there and the result is a view of it; on failure
 * `into` may hold unauthenticated bytes, which the caller must not use.
 */
export function open(key: Uint8Array, sealed: Sealed, aad: Uint8Array, into?: Uint8Array): Uint8Array {
  const { iv, ciphertext } = sealed;
  if (iv.length !== IV_BYTES || ciphertext.length < TAG_BYTES) {
    throw new KvError(ErrorCode.Integrity, "sealed value has a malformed IV or ciphertext");
  }
  const bodyLength = ciphertext.length - TAG_BYTES;
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, iv);
    decipher.setAAD(aad);
    decipher.setAuthTag(ciphertext.subarray(bodyLength));
    const body = decipher.update(ciphertext.subarray(0, bodyLength));
    const final = decipher.final();
    // GCM's final() yields no bytes: without `into`, the update's output is the plaintext, uncopied.
    if (into === undefined && final.length === 0) return body;
    const out = into === undefined ? new Uint8Array(bodyLength) : into.subarray(0, bodyLength);
    out.set(body, 0);
    out.set(final, body.length);
    return out;
  } catch (err) {
    throw new KvError(ErrorCode.Integrity, "value failed authentication", { cause: err });
  }
}
