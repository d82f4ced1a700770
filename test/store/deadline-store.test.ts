import { describe, expect, test } from "bun:test";
import { DEADLINE_STEP_BYTES, DeadlineStore } from "../../src/store/deadline-store.js";
import type { KvStore, ListPage } from "../../src/store/kv-store.js";

/** An inner store whose every call waits until the test settles it: pure logic, no backend. */
class HeldStore implements KvStore {
  readonly calls: { settle: (v?: Uint8Array) => void; fail: (e: unknown) => void }[] = [];
  #call<T>(): Promise<T> {
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    this.calls.push({ settle: (v) => resolve(v as T), fail: reject });
    return promise;
  }
  get(): Promise<Uint8Array | undefined> {
    return this.#call();
  }
  set(): Promise<number> {
    return this.#call();
  }
  getVersioned(): Promise<undefined> {
    return this.#call();
  }
  setIf(): Promise<number> {
    return this.#call();
  }
  delete(): Promise<boolean> {
    return this.#call();
  }
  exists(): Promise<boolean> {
    return this.#call();
  }
  list(): Promise<ListPage> {
    return this.#call();
  }
  clear(): Promise<number> {
    return this.#call();
  }
  async close(): Promise<void> {}
}

const key = new TextEncoder().encode("k");

describe("DeadlineStore", () => {
  test("a get the backend never answers rejects with KV_ERR_TIMEOUT, no sooner than the deadline", async () => {
    const store = new DeadlineStore(new HeldStore(), { timeoutMs: 30 });
    const started = performance.now();
    await expect(store.get(key)).rejects.toMatchObject({ code: "KV_ERR_TIMEOUT" });
    expect(performance.now() - started).toBeGreaterThanOrEqual(25);
  });

  test("answers and failures that come in time pass through unchanged", async () => {
    const inner = new HeldStore();
    const store = new DeadlineStore(inner, { timeoutMs: 10_000 });
    const value = Uint8Array.of(1, 2, 3);
    const got = store.get(key);
    inner.calls[0]?.settle(value);
    expect(await got).toBe(value);
    const set = store.set(key, value);
    const failure = new Error("backend said no");
    inner.calls[1]?.fail(failure);
    await expect(set).rejects.toBe(failure);
  });

  test("a large set gets one more deadline per 16 MiB", async () => {
    const inner = new HeldStore();
    const store = new DeadlineStore(inner, { timeoutMs: 20 });
    const started = performance.now();
    const big = store.set(key, new Uint8Array(DEADLINE_STEP_BYTES * 2));
    await expect(big).rejects.toMatchObject({ code: "KV_ERR_TIMEOUT", message: expect.stringContaining("60 ms") });
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
  });

  test("a timed-out operation is not abandoned: the inner store still sees it through", async () => {
    const inner = new HeldStore();
    const store = new DeadlineStore(inner, { timeoutMs: 5 });
    await expect(store.set(key, key)).rejects.toMatchObject({ code: "KV_ERR_TIMEOUT" });
    expect(inner.calls).toHaveLength(1);
    // Settling it later is harmless: no unhandled rejection, no second answer.
    inner.calls[0]?.fail(new Error("late"));
    inner.calls.length = 0;
  });
});
