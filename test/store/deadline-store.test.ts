import { describe, expect, test } from "bun:test";
import { DEADLINE_STEP_BYTES, DeadlineStore } from "../../src/store/deadline-store.js";
import type { KvStore, ListPage, ValueStream } from "../../src/store/kv-store.js";
import { rejection } from "../support/rejection.js";

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

/** A large value's stream whose first piece comes at once and whose second never does. */
function stallingStream(): ValueStream & { cancelled: boolean } {
  let pieces = 0;
  const stream = {
    size: 2,
    cancelled: false,
    next: (): Promise<Uint8Array> => (pieces++ === 0 ? Promise.resolve(Uint8Array.of(1)) : new Promise(() => {})),
    cancel: () => {
      stream.cancelled = true;
    },
  };
  return stream;
}

/** An inner store whose streamed reads answer {@link stallingStream}s. */
class StreamingStore extends HeldStore {
  readonly streams: ReturnType<typeof stallingStream>[] = [];
  getStream(): Promise<ValueStream> {
    const s = stallingStream();
    this.streams.push(s);
    return Promise.resolve(s);
  }
  override getVersioned(): Promise<undefined> {
    const s = stallingStream();
    this.streams.push(s);
    return Promise.resolve({ value: s, version: 7 }) as unknown as Promise<undefined>;
  }
}

describe("DeadlineStore", () => {
  test("a get the backend never answers rejects with KV_ERR_TIMEOUT, no sooner than the deadline", async () => {
    const store = new DeadlineStore(new HeldStore(), { timeoutMs: 30 });
    const started = performance.now();
    expect(await rejection(store.get(key))).toMatchObject({ code: "KV_ERR_TIMEOUT" });
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
    expect(await rejection(set)).toBe(failure);
  });

  test("a streamed get's pieces each get the deadline: a piece the backend never sends rejects with KV_ERR_TIMEOUT", async () => {
    const store = new DeadlineStore(new StreamingStore(), { timeoutMs: 20 });
    const stream = (await store.getStream(key)) as ValueStream;
    expect(await stream.next()).toEqual(Uint8Array.of(1));
    expect(await rejection(stream.next())).toMatchObject({
      code: "KV_ERR_TIMEOUT",
      message: expect.stringContaining("a piece of a large value"),
    });
    const versioned = await store.getVersioned(key);
    expect(versioned?.version).toBe(7);
    const piecewise = versioned?.value as ValueStream;
    expect(await piecewise.next()).toEqual(Uint8Array.of(1));
    expect(await rejection(piecewise.next())).toMatchObject({ code: "KV_ERR_TIMEOUT" });
  });

  test("a large set gets one more deadline per 16 MiB", async () => {
    const inner = new HeldStore();
    const store = new DeadlineStore(inner, { timeoutMs: 20 });
    const started = performance.now();
    const big = store.set(key, new Uint8Array(DEADLINE_STEP_BYTES * 2));
    expect(await rejection(big)).toMatchObject({ code: "KV_ERR_TIMEOUT", message: expect.stringContaining("60 ms") });
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
  });

  test("a timed-out operation is not abandoned: the inner store still sees it through", async () => {
    const inner = new HeldStore();
    const store = new DeadlineStore(inner, { timeoutMs: 5 });
    expect(await rejection(store.set(key, key))).toMatchObject({ code: "KV_ERR_TIMEOUT" });
    expect(inner.calls).toHaveLength(1);
    // Settling it later is harmless: no unhandled rejection, no second answer.
    inner.calls[0]?.fail(new Error("late"));
    inner.calls.length = 0;
  });
});
