import { describe, expect, test } from "bun:test";
import { hkdfSync, randomBytes } from "node:crypto";
import { open, seal } from "../../src/crypto/envelope.js";
import { deriveItemKey } from "../../src/crypto/item-key.js";
import { type DataKey, DataKeyCache, type DataKeyProvider } from "../../src/crypto/key-cache.js";
import { valueAad } from "../../src/store/item-format.js";
import { ErrorCode } from "../../src/wire/errors.js";
import { anError, rejection } from "../support/rejection.js";
import { expectKvError } from "../support/wire.js";

const enc = new TextEncoder();

function integrityError(fn: () => unknown): void {
  expectKvError(fn, ErrorCode.Integrity);
}

describe("envelope", () => {
  const key = new Uint8Array(randomBytes(32));
  const aad = valueAad("table", enc.encode("k"));

  test("sealed bytes open to the plaintext, and the ciphertext does not contain it", () => {
    const plaintext = enc.encode("secret value ".repeat(100));
    const sealed = seal(key, plaintext, aad);
    expect(Buffer.from(sealed.ciphertext).includes(Buffer.from("secret value"))).toBe(false);
    expect(open(key, sealed, aad)).toEqual(plaintext);
  });

  test("an empty value seals and opens", () => {
    expect(open(key, seal(key, new Uint8Array(0), aad), aad)).toEqual(new Uint8Array(0));
  });

  test("a flipped ciphertext bit, a wrong key or IV, or another AAD fails authentication", () => {
    const sealed = seal(key, enc.encode("hello"), aad);
    const flipped = sealed.ciphertext.slice();
    flipped[0] = (flipped[0] as number) ^ 1;
    integrityError(() => open(key, { iv: sealed.iv, ciphertext: flipped }, aad));
    integrityError(() => open(new Uint8Array(32), sealed, aad));
    integrityError(() => open(key, { iv: new Uint8Array(12), ciphertext: sealed.ciphertext }, aad));
    integrityError(() => open(key, sealed, valueAad("table", enc.encode("other key"))));
    integrityError(() => open(key, sealed, valueAad("other-table", enc.encode("k"))));
    integrityError(() => open(key, { iv: sealed.iv, ciphertext: sealed.ciphertext.subarray(0, 10) }, aad));
  });

  test("the AAD encoding is injective over table and key boundaries", () => {
    expect(valueAad("ab", enc.encode("c"))).not.toEqual(valueAad("a", enc.encode("bc")));
  });
});

/** A provider that counts calls; pure logic, no KMS. */
class FakeProvider implements DataKeyProvider {
  generated = 0;
  unwrapped = 0;
  failNext = false;
  readonly #keys = new Map<string, Uint8Array>();
  #gate: Promise<void> = Promise.resolve();
  release: () => void = () => {};

  hold(): void {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#gate = promise;
    this.release = resolve;
  }

  async generate(): Promise<DataKey> {
    this.generated++;
    await this.#gate;
    if (this.failNext) {
      this.failNext = false;
      throw new Error("kms down");
    }
    const plaintext = new Uint8Array(randomBytes(32));
    const wrapped = new Uint8Array(randomBytes(16));
    this.#keys.set(Buffer.from(wrapped).toString("hex"), plaintext);
    return { plaintext, wrapped };
  }

  async unwrap(wrapped: Uint8Array): Promise<Uint8Array> {
    this.unwrapped++;
    await this.#gate;
    const k = this.#keys.get(Buffer.from(wrapped).toString("hex"));
    if (!k) throw new Error("unknown key");
    return k;
  }
}

describe("per-item keys", () => {
  test("an item's key is RFC 5869 HKDF-SHA256 of the branch key, binding table, version and the item's salt", () => {
    const branchKey = new Uint8Array(randomBytes(32));
    const salt = new Uint8Array(randomBytes(16));
    const info = Buffer.concat([
      Buffer.from("kvs/item-key"),
      Buffer.from([0, 5]),
      Buffer.from("table"),
      Buffer.from([0, 0, 0, 7]),
      salt,
    ]);
    const expected = new Uint8Array(hkdfSync("sha256", branchKey, Buffer.from("kvs/branch-key"), info, 32));
    expect(deriveItemKey(branchKey, salt, "table", 7)).toEqual(expected);
    // Any input changed gives another key.
    const others = [
      deriveItemKey(branchKey, salt, "tablf", 7),
      deriveItemKey(branchKey, salt, "table", 8),
      deriveItemKey(branchKey, new Uint8Array(randomBytes(16)), "table", 7),
      deriveItemKey(new Uint8Array(randomBytes(32)), salt, "table", 7),
    ];
    for (const other of others) expect(Buffer.from(other).equals(Buffer.from(expected))).toBe(false);
  });
});

describe("DataKeyCache", () => {
  test("steady traffic uses one data key", async () => {
    const p = new FakeProvider();
    const cache = new DataKeyCache(p);
    const first = await cache.encryptionKey(1, 100);
    for (let i = 0; i < 10_000; i++) expect(await cache.encryptionKey(1, 100)).toBe(first);
    expect(p.generated).toBe(1);
  });

  test("concurrent misses share one GenerateDataKey", async () => {
    const p = new FakeProvider();
    p.hold();
    const cache = new DataKeyCache(p);
    const all = Promise.all(Array.from({ length: 100 }, () => cache.encryptionKey()));
    p.release();
    const keys = await all;
    expect(p.generated).toBe(1);
    expect(new Set(keys).size).toBe(1);
  });

  test("a key is replaced after its message limit", async () => {
    const p = new FakeProvider();
    const cache = new DataKeyCache(p, { maxMessages: 3 });
    const a = await cache.encryptionKey();
    await cache.encryptionKey();
    await cache.encryptionKey();
    const b = await cache.encryptionKey();
    expect(b).not.toBe(a);
    expect(p.generated).toBe(2);
  });

  test("a key is replaced after its byte limit, and one oversized request still gets a key", async () => {
    const p = new FakeProvider();
    const cache = new DataKeyCache(p, { maxBytes: 1000 });
    const a = await cache.encryptionKey(1, 600);
    const b = await cache.encryptionKey(1, 600);
    expect(b).not.toBe(a);
    const c = await cache.encryptionKey(1, 5000);
    expect(c).not.toBe(b);
    expect(p.generated).toBe(3);
  });

  test("a key is replaced after its maximum age", async () => {
    const p = new FakeProvider();
    let now = 0;
    const cache = new DataKeyCache(p, { maxAgeMs: 1000 }, () => now);
    const a = await cache.encryptionKey();
    now = 999;
    expect(await cache.encryptionKey()).toBe(a);
    now = 1000;
    expect(await cache.encryptionKey()).not.toBe(a);
  });

  test("a key's successor is generated in the background before it expires, so a stalled KMS delays no set", async () => {
    const p = new FakeProvider();
    let now = 0;
    const cache = new DataKeyCache(p, { maxAgeMs: 1000, refreshAheadMs: 400 }, () => now);
    const a = await cache.encryptionKey();
    p.hold();
    now = 599;
    expect(await cache.encryptionKey()).toBe(a);
    expect(p.generated).toBe(1);
    now = 600;
    // Due for refresh: the old key still answers at once while KMS is held.
    expect(await cache.encryptionKey()).toBe(a);
    now = 900;
    expect(await cache.encryptionKey()).toBe(a);
    expect(p.generated).toBe(2);
    p.release();
    await Promise.resolve();
    now = 1000;
    const b = await cache.encryptionKey();
    expect(b).not.toBe(a);
    expect(p.generated).toBe(2);
  });

  test("a failed background refresh is tried again by the next encryption", async () => {
    const p = new FakeProvider();
    let now = 0;
    const cache = new DataKeyCache(p, { maxAgeMs: 1000, refreshAheadMs: 400 }, () => now);
    const a = await cache.encryptionKey();
    p.failNext = true;
    now = 700;
    expect(await cache.encryptionKey()).toBe(a);
    await Promise.resolve();
    await Promise.resolve();
    expect(await cache.encryptionKey()).toBe(a);
    expect(p.generated).toBe(3);
  });

  test("a generated key decrypts without a KMS call, and unwraps are shared and cached", async () => {
    const p = new FakeProvider();
    const writer = new DataKeyCache(p);
    const key = await writer.encryptionKey();
    expect(await writer.decryptionKey(key.wrapped)).toEqual(key.plaintext);
    expect(p.unwrapped).toBe(0);

    const reader = new DataKeyCache(p);
    p.hold();
    const all = Promise.all(Array.from({ length: 50 }, () => reader.decryptionKey(key.wrapped)));
    p.release();
    for (const k of await all) expect(k).toEqual(key.plaintext);
    await reader.decryptionKey(key.wrapped);
    expect(p.unwrapped).toBe(1);
  });

  test("a failed KMS call is not cached: the next request tries again", async () => {
    const p = new FakeProvider();
    p.failNext = true;
    const cache = new DataKeyCache(p);
    expect(await rejection(cache.encryptionKey())).toEqual(anError("kms down"));
    await cache.encryptionKey();
    expect(p.generated).toBe(2);
    expect(await rejection(cache.decryptionKey(Uint8Array.of(1, 2)))).toEqual(anError("unknown key"));
    expect(await rejection(cache.decryptionKey(Uint8Array.of(1, 2)))).toEqual(anError("unknown key"));
    expect(p.unwrapped).toBe(2);
  });
});
