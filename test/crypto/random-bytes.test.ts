import { describe, expect, test } from "bun:test";
import { randomBytes } from "../../src/crypto/random-bytes.js";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("pooled random bytes", () => {
  test("each call returns the length asked for, in an array of its own", () => {
    for (const n of [0, 1, 12, 16, 255, 256, 257, 5000]) {
      const b = randomBytes(n);
      expect(b.length).toBe(n);
      expect(b.byteOffset).toBe(0);
      expect(b.buffer.byteLength).toBe(n);
    }
  });

  test("no two IVs repeat across many refills of the pool", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20_000; i++) seen.add(hex(randomBytes(12)));
    expect(seen.size).toBe(20_000);
  });

  test("bytes already handed out do not change when the pool refills", () => {
    const kept = Array.from({ length: 400 }, () => randomBytes(16));
    const copies = kept.map(hex);
    for (let i = 0; i < 2_000; i++) randomBytes(16);
    expect(kept.map(hex)).toEqual(copies);
  });

  test("consecutive draws are not copies of each other, whether or not the pool refills between them", () => {
    const seen = new Set<string>();
    // 7-byte draws do not divide the pool evenly, so some straddle a refill.
    for (let i = 0; i < 3_000; i++) seen.add(hex(randomBytes(7)));
    expect(seen.size).toBe(3_000);
  });
});
