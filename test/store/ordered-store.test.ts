import { describe, expect, test } from "bun:test";
import type { KvStore, ListPage } from "../../src/store/kv-store.js";
import { OrderedStore } from "../../src/store/ordered-store.js";
import { anError, rejection } from "../support/rejection.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A store whose writes complete only when the test says so; pure logic, no I/O. */
class GatedStore implements KvStore {
  readonly data = new Map<string, string>();
  /** Writes in the order they reached the store; a delete has value null. */
  readonly writes: { key: string; value: string | null; finish: (ok: boolean) => void }[] = [];
  reads = 0;
  versions = 0;
  /** When set, reads wait in `heldReads` until the test releases them. */
  holdReads = false;
  readonly heldReads: (() => void)[] = [];

  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.reads++;
    const answer = () => {
      const v = this.data.get(dec.decode(key));
      return v === undefined ? undefined : enc.encode(v);
    };
    if (!this.holdReads) return Promise.resolve(answer());
    const { promise, resolve } = Promise.withResolvers<Uint8Array | undefined>();
    this.heldReads.push(() => resolve(answer()));
    return promise;
  }

  /** Versions count up from 1 here, one per write that reaches the store. */
  set(key: Uint8Array, value: Uint8Array): Promise<number> {
    const version = ++this.versions;
    return this.#write(dec.decode(key), dec.decode(value)).then(() => version);
  }

  delete(key: Uint8Array): Promise<boolean> {
    return this.#write(dec.decode(key), null) as Promise<boolean>;
  }

  async getVersioned(key: Uint8Array) {
    const value = await this.get(key);
    return value && { value, version: 1 };
  }

  setIf(key: Uint8Array, value: Uint8Array): Promise<number> {
    return this.#write(dec.decode(key), dec.decode(value)).then(() => 2);
  }

  exists(key: Uint8Array): Promise<boolean> {
    this.reads++;
    return Promise.resolve(this.data.has(dec.decode(key)));
  }

  list(): Promise<ListPage> {
    return Promise.resolve({ entries: [], cursor: undefined });
  }

  clear(): Promise<number> {
    return Promise.resolve(0);
  }

  #write(key: string, value: string | null): Promise<unknown> {
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    this.writes.push({
      key,
      value,
      finish: (ok: boolean) => {
        if (!ok) return reject(new Error("write failed"));
        if (value !== null) return resolve(this.data.set(key, value) && undefined);
        resolve(this.data.delete(key));
      },
    });
    return promise;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Three sets of one key on a gated store: the first runs, the other two queue and collapse. */
function threeSets() {
  const inner = new GatedStore();
  const store = new OrderedStore(inner);
  const sets = ["1", "2", "3"].map((v) => store.set(enc.encode("k"), enc.encode(v))) as [
    Promise<number>,
    Promise<number>,
    Promise<number>,
  ];
  return { inner, store, sets };
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

describe("OrderedStore", () => {
  test("writes of one key reach the store one at a time, and queued sets collapse to the newest", async () => {
    const inner = new GatedStore();
    const store = new OrderedStore(inner);
    const acks: string[] = [];
    const s1 = store.set(enc.encode("k"), enc.encode("1")).then(() => acks.push("1"));
    const s2 = store.set(enc.encode("k"), enc.encode("2")).then(() => acks.push("2"));
    const s3 = store.set(enc.encode("k"), enc.encode("3")).then(() => acks.push("3"));
    expect(inner.writes.map((w) => w.value)).toEqual(["1"]);
    inner.writes[0]?.finish(true);
    await settle();
    expect(acks).toEqual(["1"]);
    expect(inner.writes.map((w) => w.value)).toEqual(["1", "3"]);
    inner.writes[1]?.finish(true);
    await Promise.all([s1, s2, s3]);
    expect(acks).toEqual(["1", "2", "3"]);
    expect(inner.data.get("k")).toBe("3");
    expect(store.keysInFlight).toBe(0);
  });

  test("collapsed sets answer versions of their own: the one written to the last, never-stored ones to the replaced", async () => {
    const { inner, sets } = threeSets();
    const [s1, s2, s3] = sets;
    inner.writes[0]?.finish(true);
    await settle();
    inner.writes[1]?.finish(true);
    const [v1, v2, v3] = await Promise.all([s1, s2, s3]);
    // The inner store wrote twice: "1" as version 1, then "3" (with "2" collapsed into it) as version 2.
    expect(v1).toBe(1);
    expect(v3).toBe(2);
    expect(v2).not.toBe(v3);
    expect(v2).not.toBe(v1);
  });

  test("a get issued between sets answers the set just before it, not a later one", async () => {
    const inner = new GatedStore();
    const store = new OrderedStore(inner);
    void store.set(enc.encode("k"), enc.encode("a"));
    const g1 = store.get(enc.encode("k"));
    void store.set(enc.encode("k"), enc.encode("b"));
    const g2 = store.get(enc.encode("k"));
    void store.set(enc.encode("k"), enc.encode("c"));
    inner.writes[0]?.finish(true);
    await settle();
    inner.writes[1]?.finish(true);
    expect(dec.decode(await g1)).toBe("a");
    await settle();
    inner.writes[2]?.finish(true);
    expect(dec.decode(await g2)).toBe("b");
    expect(inner.reads).toBe(2);
  });

  test("a get behind a pending set reads the store once the set lands, so another server's later write is seen", async () => {
    const inner = new GatedStore();
    const store = new OrderedStore(inner);
    void store.set(enc.encode("k"), enc.encode("mine"));
    const g = store.get(enc.encode("k"));
    inner.writes[0]?.finish(true);
    // Another server overwrites the key after this set landed and before its answer was read.
    inner.data.set("k", "theirs");
    expect(dec.decode(await g)).toBe("theirs");
  });

  test("a set issued after a get of its key waits until that read has finished", async () => {
    const inner = new GatedStore();
    inner.data.set("k", "old");
    inner.holdReads = true;
    const store = new OrderedStore(inner);
    const g = store.get(enc.encode("k"));
    const s = store.set(enc.encode("k"), enc.encode("new"));
    await settle();
    expect(inner.writes).toHaveLength(0);
    inner.heldReads[0]?.();
    expect(dec.decode(await g)).toBe("old");
    await settle();
    expect(inner.writes.map((w) => w.value)).toEqual(["new"]);
    inner.writes[0]?.finish(true);
    await s;
    expect(store.keysInFlight).toBe(0);
  });

  test("reads in a row run together, and a read issued behind a waiting write runs after it", async () => {
    const inner = new GatedStore();
    inner.data.set("k", "old");
    inner.holdReads = true;
    const store = new OrderedStore(inner);
    const g1 = store.get(enc.encode("k"));
    const g2 = store.get(enc.encode("k"));
    void store.set(enc.encode("k"), enc.encode("new"));
    const g3 = store.get(enc.encode("k"));
    await settle();
    expect(inner.heldReads).toHaveLength(2);
    for (const release of inner.heldReads.splice(0)) release();
    expect([dec.decode(await g1), dec.decode(await g2)]).toEqual(["old", "old"]);
    await settle();
    expect(inner.heldReads).toHaveLength(0);
    inner.writes[0]?.finish(true);
    await settle();
    for (const release of inner.heldReads.splice(0)) release();
    expect(dec.decode(await g3)).toBe("new");
  });

  test("a get does not answer before the write it depends on is durable", async () => {
    const inner = new GatedStore();
    const store = new OrderedStore(inner);
    void store.set(enc.encode("k"), enc.encode("a"));
    let answered = false;
    const g = store.get(enc.encode("k")).then((v) => {
      answered = true;
      return v;
    });
    await settle();
    expect(answered).toBe(false);
    inner.writes[0]?.finish(true);
    expect(dec.decode(await g)).toBe("a");
  });

  test("when the write a get depends on fails, the get reads the store", async () => {
    const inner = new GatedStore();
    inner.data.set("k", "old");
    const store = new OrderedStore(inner);
    const s = store.set(enc.encode("k"), enc.encode("new"));
    const g = store.get(enc.encode("k"));
    inner.writes[0]?.finish(false);
    expect(await rejection(s)).toEqual(anError("write failed"));
    expect(dec.decode(await g)).toBe("old");
  });

  test("a failed write fails every set collapsed into it, and later sets still run", async () => {
    const { inner, store, sets } = threeSets();
    const [s1, s2, s3] = sets;
    inner.writes[0]?.finish(true);
    await s1;
    // Each collapsed set has a promise of its own, so both are watched before the failure comes.
    const failed = Promise.all([s2.then(() => "ok", String), s3.then(() => "ok", String)]);
    inner.writes[1]?.finish(false);
    expect(await failed).toEqual(["Error: write failed", "Error: write failed"]);
    const s4 = store.set(enc.encode("k"), enc.encode("4"));
    inner.writes[2]?.finish(true);
    await s4;
    expect(inner.data.get("k")).toBe("4");
  });

  test("different keys do not wait for each other", () => {
    const inner = new GatedStore();
    const store = new OrderedStore(inner);
    void store.set(enc.encode("a"), enc.encode("1"));
    void store.set(enc.encode("b"), enc.encode("2"));
    expect(inner.writes.map((w) => w.key)).toEqual(["a", "b"]);
  });

  test("set, delete, get on one key: the get answers absent and the store ends without the key", async () => {
    const inner = new GatedStore();
    const store = new OrderedStore(inner);
    const s = store.set(enc.encode("k"), enc.encode("v"));
    const d = store.delete(enc.encode("k"));
    const g = store.get(enc.encode("k"));
    const e = store.exists(enc.encode("k"));
    expect(inner.writes.map((w) => w.value)).toEqual(["v"]);
    inner.writes[0]?.finish(true);
    await s;
    expect(inner.writes.map((w) => w.value)).toEqual(["v", null]);
    inner.writes[1]?.finish(true);
    expect(await d).toBe(true);
    expect(await g).toBeUndefined();
    expect(await e).toBe(false);
    expect(inner.data.has("k")).toBe(false);
  });

  test("deletes never collapse: the second of two deletes answers that the key was already gone", async () => {
    const inner = new GatedStore();
    inner.data.set("k", "v");
    const store = new OrderedStore(inner);
    const d1 = store.delete(enc.encode("k"));
    const d2 = store.delete(enc.encode("k"));
    const s = store.set(enc.encode("k"), enc.encode("again"));
    const e = store.exists(enc.encode("k"));
    inner.writes[0]?.finish(true);
    await settle();
    inner.writes[1]?.finish(true);
    await settle();
    inner.writes[2]?.finish(true);
    expect([await d1, await d2]).toEqual([true, false]);
    await s;
    expect(await e).toBe(true);
    expect(inner.writes.map((w) => w.value)).toEqual([null, null, "again"]);
  });

  test("a set queued behind a delete is not folded into a set queued before it", async () => {
    const inner = new GatedStore();
    const store = new OrderedStore(inner);
    void store.set(enc.encode("k"), enc.encode("1"));
    void store.set(enc.encode("k"), enc.encode("2"));
    void store.delete(enc.encode("k"));
    const last = store.set(enc.encode("k"), enc.encode("3"));
    for (let i = 0; i < 4; i++) {
      inner.writes[i]?.finish(true);
      await settle();
    }
    await last;
    expect(inner.writes.map((w) => w.value)).toEqual(["1", "2", null, "3"]);
    expect(inner.data.get("k")).toBe("3");
  });
});
