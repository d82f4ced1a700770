import { heapStats } from "bun:jsc";
import { describe, expect, test } from "bun:test";
import { parseDuration } from "../../client/duration.js";
import { Counter, Counters } from "../../src/metrics.js";
import { ExpiryQueue } from "../../src/store/expiry-queue.js";
import { MAX_TTL_MS, refusedTtl } from "../../src/store/kv-store.js";
import { MemoryStore } from "../../src/store/memory-store.js";
import { codeOf } from "../support/code-of.js";

const enc = new TextEncoder();
const dec = new TextDecoder();
const T0 = 1_800_000_000_000;

/** A memory store on a clock the test moves, without the background sweep. */
function store(): { s: MemoryStore; at: (ms: number) => void; counters: Counters } {
  let now = T0;
  const counters = new Counters();
  const s = new MemoryStore({ clock: () => now, counters, sweepIntervalMs: 0 });
  return { s, at: (ms) => (now = T0 + ms), counters };
}

async function keysOf(s: MemoryStore): Promise<string[]> {
  const page = await s.list({ limit: 1000, values: false });
  return page.entries.map((e) => dec.decode(e.key)).sort();
}

describe("expiry on the memory store", () => {
  test("a value is there until the ms before its expiry and gone from the ms it expires, to every call", async () => {
    const { s, at, counters } = store();
    await s.set(enc.encode("k"), enc.encode("v"), undefined, 1000);
    at(999);
    expect(dec.decode(await s.get(enc.encode("k")))).toBe("v");
    expect(await s.exists(enc.encode("k"))).toBe(true);
    expect((await s.getVersioned(enc.encode("k")))?.expiresAt).toBe(T0 + 1000);
    expect(await keysOf(s)).toEqual(["k"]);
    at(1000);
    expect(await s.get(enc.encode("k"))).toBeUndefined();
    expect(s.getSync(enc.encode("k"))).toBeUndefined();
    expect(await s.exists(enc.encode("k"))).toBe(false);
    expect(await s.getVersioned(enc.encode("k"))).toBeUndefined();
    expect(await s.delete(enc.encode("k"))).toBe(false);
    expect(await keysOf(s)).toEqual([]);
    expect(counters.get(Counter.expiredReads)).toBe(1);
  });

  test("a TTL of 1 ms expires one ms later", async () => {
    const { s, at } = store();
    s.setSync(enc.encode("k"), enc.encode("v"), 1);
    expect(s.getSync(enc.encode("k"))).toBeDefined();
    at(1);
    expect(s.getSync(enc.encode("k"))).toBeUndefined();
  });

  test("an overwrite without a TTL removes the expiry, and a change of TTL is a write with a new version", async () => {
    const { s, at } = store();
    const first = await s.set(enc.encode("k"), enc.encode("v1"), undefined, 1000);
    const second = await s.set(enc.encode("k"), enc.encode("v1"), undefined, 5000);
    expect(second).not.toBe(first);
    expect((await s.getVersioned(enc.encode("k")))?.expiresAt).toBe(T0 + 5000);
    await s.set(enc.encode("k"), enc.encode("v2"));
    expect((await s.getVersioned(enc.encode("k")))?.expiresAt).toBeUndefined();
    at(10 * 365 * 86_400_000);
    expect(dec.decode(await s.get(enc.encode("k")))).toBe("v2");
  });

  test("conditional writes and TTLs combine: if-absent succeeds on an expired value, if-version conflicts on it", async () => {
    const { s, at } = store();
    const version = await s.setIf(enc.encode("lock"), enc.encode("a"), { ifAbsent: true }, undefined, 1000);
    expect(await codeOf(s.setIf(enc.encode("lock"), enc.encode("b"), { ifAbsent: true }))).toBe("KV_ERR_CONFLICT");
    at(1000);
    expect(await codeOf(s.setIf(enc.encode("lock"), enc.encode("c"), { ifVersion: version }))).toBe("KV_ERR_CONFLICT");
    const taken = await s.setIf(enc.encode("lock"), enc.encode("d"), { ifAbsent: true }, undefined, 2000);
    const found = await s.getVersioned(enc.encode("lock"));
    expect(found).toEqual({ value: enc.encode("d"), version: taken, expiresAt: T0 + 3000 });
    // A compare-and-set with a TTL on a live value sets the new expiry.
    await s.setIf(enc.encode("lock"), enc.encode("e"), { ifVersion: taken }, undefined, 10_000);
    expect((await s.getVersioned(enc.encode("lock")))?.expiresAt).toBe(T0 + 11_000);
  });

  test("listings leave expired keys out and clear does not count them", async () => {
    const { s, at } = store();
    await s.set(enc.encode("short"), enc.encode("1"), undefined, 100);
    await s.set(enc.encode("long"), enc.encode("2"), undefined, 10_000);
    await s.set(enc.encode("forever"), enc.encode("3"));
    at(100);
    expect(await keysOf(s)).toEqual(["forever", "long"]);
    const withValues = await s.list({ limit: 1000, values: true });
    expect(withValues.entries.map((e) => dec.decode(e.value))).toEqual(["2", "3"]);
    expect(await s.clear()).toBe(2);
  });

  test("the sweep frees expired values no read touches, and leaves a value written again since", async () => {
    const { s, at } = store();
    for (let i = 0; i < 25_000; i++) s.setSync(enc.encode(`k${i}`), enc.encode("v"), 1000);
    s.setSync(enc.encode("k7"), enc.encode("renewed"), 60_000);
    s.setSync(enc.encode("k8"), enc.encode("kept"));
    at(999);
    expect(await s.sweepExpired()).toBe(0);
    // Due once the second it expired in has ended.
    at(2000);
    expect(await s.sweepExpired()).toBe(24_998);
    expect(dec.decode(s.getSync(enc.encode("k7")))).toBe("renewed");
    expect(dec.decode(s.getSync(enc.encode("k8")))).toBe("kept");
    expect(await keysOf(s)).toEqual(["k7", "k8"]);
  });

  test("a key overwritten with a TTL again and again is filed once, and the sweep still frees it at its last expiry", async () => {
    const { s, at } = store();
    // A session refreshed on every request: each write pushes its expiry later.
    for (let i = 0; i < 100_000; i++) {
      at(i / 10);
      s.setSync(enc.encode("session"), enc.encode(`v${i}`), 1000);
    }
    expect(s.expiryFilings).toBe(1);
    // Its first filing comes due while it is still live: filed again under its last expiry, not freed.
    at(3000);
    expect(await s.sweepExpired()).toBe(0);
    expect(dec.decode(s.getSync(enc.encode("session")))).toBe("v99999");
    expect(s.expiryFilings).toBe(1);
    at(20_000);
    expect(await s.sweepExpired()).toBe(1);
    expect(s.expiryFilings).toBe(0);
    // An expiry brought earlier is filed under the earlier second.
    s.setSync(enc.encode("k"), enc.encode("v"), 60_000);
    s.setSync(enc.encode("k"), enc.encode("v"), 1000);
    at(22_000);
    expect(await s.sweepExpired()).toBe(1);
  });

  test("a million values with a 1-second TTL give their memory back once the sweep has run", async () => {
    const { s, at } = store();
    const heapAfterGc = () => {
      Bun.gc(true);
      return heapStats().heapSize;
    };
    const before = heapAfterGc();
    const value = new Uint8Array(32);
    for (let i = 0; i < 1_000_000; i++) s.setSync(enc.encode(`session:${i}`), value, 1000);
    const filled = heapAfterGc();
    expect(filled - before).toBeGreaterThan(50 * 1024 * 1024);
    at(2000);
    expect(await s.sweepExpired()).toBe(1_000_000);
    const swept = heapAfterGc();
    // Everything the million held is collectable: what stays is a few MiB of the store's own arrays.
    expect(swept - before).toBeLessThan((filled - before) / 10);
  });

  test("the background sweep runs on its own, without any read", async () => {
    let now = T0;
    const swept = Promise.withResolvers<number>();
    const s = new MemoryStore({ clock: () => now, sweepIntervalMs: 5, onSwept: swept.resolve });
    try {
      for (let i = 0; i < 100; i++) s.setSync(enc.encode(`k${i}`), enc.encode("v"), 1000);
      now = T0 + 2000;
      expect(await swept.promise).toBe(100);
    } finally {
      await s.close();
    }
  });
});

describe("the expiry queue", () => {
  test("hands out ids only after the second they expire in has ended, at most max at a time", () => {
    const q = new ExpiryQueue();
    q.add("a", 1_500);
    q.add("b", 3_200);
    q.add("c", 1_999);
    q.add("d", 500);
    expect(q.due(1_999, 10)).toEqual(["d"]);
    expect(q.due(2_000, 1)).toHaveLength(1);
    expect(q.due(2_000, 10)).toHaveLength(1);
    expect(q.size).toBe(1);
    expect(q.due(3_999, 10)).toEqual([]);
    expect(q.due(4_000, 10)).toEqual(["b"]);
    expect(q.size).toBe(0);
  });

  test("keeps its seconds in order whatever order they come in", () => {
    const q = new ExpiryQueue();
    const seconds = Array.from({ length: 500 }, (_, i) => (i * 7919) % 500);
    for (const s of seconds) q.add(`id${s}`, s * 1000);
    const out: string[] = [];
    for (let t = 1; t <= 500; t++) out.push(...q.due(t * 1000, 1000));
    expect(out).toEqual(Array.from({ length: 500 }, (_, i) => `id${i}`));
  });
});

describe("TTL limits", () => {
  test("a TTL must be a whole number of ms from 1 to ten years", () => {
    expect(refusedTtl(1)).toBeUndefined();
    expect(refusedTtl(MAX_TTL_MS)).toBeUndefined();
    for (const bad of [0, -1, 1.5, MAX_TTL_MS + 1, Number.NaN, 2 ** 60]) {
      expect(refusedTtl(bad)?.message).toContain("must be at least 1 ms and at most 3650 days");
    }
  });

  test("the CLI's durations take a unit, decimals allowed", () => {
    expect(parseDuration("250ms")).toBe(250);
    expect(parseDuration("30s")).toBe(30_000);
    expect(parseDuration("1.5m")).toBe(90_000);
    expect(parseDuration("2h")).toBe(7_200_000);
    expect(parseDuration("7d")).toBe(604_800_000);
    for (const bad of ["30", "s", "-1s", "1e3s", "0ms", "0.0001s", "1 s", "1w"]) {
      expect(() => parseDuration(bad)).toThrow(RangeError);
    }
  });
});
