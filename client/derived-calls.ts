/**
 * Calls both clients build from their basic ones (get, set, delete, listPage), written once:
 * the batch helpers that settle per key, and the listing iterators.
 */
import { deferred } from "../src/wire/deferred.js";
import { asKvError, ErrorCode, type KvError } from "../src/wire/errors.js";
import type { Bytes, ExpiryOptions, ListOptions, ListPage, RequestOptions, SetOptions } from "./options.js";

/** The outcome of one key of a batch call (`mget`, `mset`, `mdelete`): each key settles on its own. */
export type BatchResult<T> =
  | { readonly key: Uint8Array | string; readonly ok: true; readonly value: T }
  | { readonly key: Uint8Array | string; readonly ok: false; readonly error: KvError };

/**
 * Issues `call` for every item at once (so they are pipelined on the
 * connection, in order) and resolves one result per item, in their order,
 * once every one has settled; an item that failed does not fail the others.
 */
export async function settleEach<I, T>(
  items: readonly I[],
  keyOf: (item: I) => Uint8Array | string,
  call: (item: I) => Promise<T>,
): Promise<BatchResult<T>[]> {
  const settled = await Promise.allSettled(items.map((item) => call(item)));
  return settled.map((s, i) => {
    const key = keyOf(items[i] as I);
    return s.status === "fulfilled"
      ? { key, ok: true, value: s.value }
      : { key, ok: false, error: asKvError(s.reason, ErrorCode.Protocol, "the call failed") };
  });
}

/**
 * What both clients build from their basic calls, written once: each client
 * extends this and provides get, set, delete, listPage and getTo.
 */
export abstract class DerivedCalls {
  abstract get(key: Bytes, options?: RequestOptions): Promise<Uint8Array | undefined>;
  abstract set(key: Bytes, value: Bytes, options?: SetOptions): Promise<number | undefined>;
  abstract delete(key: Bytes, options?: RequestOptions): Promise<boolean>;
  abstract listPage(
    options?: ListOptions & { values?: boolean },
  ): Promise<ListPage<{ key: Uint8Array; value?: Uint8Array }>>;
  abstract getTo(key: Bytes, sink: (piece: Uint8Array) => void | Promise<void>): Promise<boolean>;

  /** The values of `keys`, pipelined, one result per key in their order: a key's failure does not fail the others. */
  mget(keys: readonly Bytes[], options?: RequestOptions): Promise<BatchResult<Uint8Array | undefined>[]> {
    return settleEach(
      keys,
      (k) => k,
      (key) => this.get(key, options),
    );
  }

  /**
   * Sets every `[key, value]`, pipelined, one result per entry (the version
   * written) in their order; with `ttlMs`, each value expires (see {@link ExpiryOptions}).
   */
  mset(
    entries: Iterable<readonly [Bytes, Bytes]>,
    options?: RequestOptions & ExpiryOptions,
  ): Promise<BatchResult<number | undefined>[]> {
    return settleEach(
      [...entries],
      ([key]) => key,
      ([key, value]) => this.set(key, value, options),
    );
  }

  /** Deletes `keys`, pipelined, one result per key (whether it had a value) in their order. */
  mdelete(keys: readonly Bytes[], options?: RequestOptions): Promise<BatchResult<boolean>[]> {
    return settleEach(
      keys,
      (k) => k,
      (key) => this.delete(key, options),
    );
  }

  /**
   * Every key (optionally under a prefix), page by page, as an async
   * iterator: only one page is held at a time, so `for await` over a store
   * of millions of keys runs in constant memory. Keys come in no particular
   * order. Every key present for the whole listing comes exactly once; keys
   * set or deleted meanwhile may or may not. Pages may come from different
   * connections: a cursor is not tied to one.
   */
  async *keys(options: ListOptions = {}): AsyncGenerator<Uint8Array> {
    for await (const page of this.#pages(options, false)) for (const e of page.entries) yield e.key;
  }

  /** Every entry, with its value, as {@link keys} lists keys. */
  async *entries(options: ListOptions = {}): AsyncGenerator<{ key: Uint8Array; value: Uint8Array }> {
    for await (const page of this.#pages(options, true)) {
      for (const e of page.entries) yield { key: e.key, value: e.value ?? new Uint8Array(0) };
    }
  }

  /** The value of `key` as a Web `ReadableStream` of pieces as they arrive, or undefined when absent (see {@link streamOf}). */
  getStream(key: Bytes): Promise<ReadableStream<Uint8Array> | undefined> {
    return streamOf(this, key);
  }

  /** Pages of a listing, one request at a time, following cursors to the end. */
  async *#pages(options: ListOptions, values: boolean) {
    let cursor = options.cursor;
    do {
      const page = await this.listPage({ ...options, cursor, values });
      yield page;
      cursor = page.cursor;
    } while (cursor !== undefined);
  }
}

/**
 * `getStream`: the value of `key` as a Web `ReadableStream` of its pieces as
 * they arrive, or undefined when the key has no value. The connection reads
 * no further while the stream's reader is behind (its queue is full), so a
 * slow consumer holds the server to a window, as with `getTo`. Node users
 * can wrap it with `Readable.fromWeb`.
 */
function streamOf(c: DerivedCalls, key: Bytes): Promise<ReadableStream<Uint8Array> | undefined> {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let room: (() => void) | undefined;
  // A cancelled stream takes no more pieces; the rest of the answer is still read, and dropped.
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
      },
      pull() {
        room?.();
        room = undefined;
      },
      cancel() {
        cancelled = true;
        room?.();
      },
    },
    { highWaterMark: 4 },
  );
  const opened = deferred<ReadableStream<Uint8Array> | undefined>();
  let started = false;
  c.getTo(key, async (piece) => {
    if (!started) {
      started = true;
      opened.resolve(stream);
    }
    if (cancelled) return;
    controller.enqueue(piece);
    if ((controller.desiredSize ?? 1) <= 0) await new Promise<void>((resolve) => (room = resolve));
  }).then(
    (found) => {
      if (!found) return opened.resolve(undefined);
      if (!started) opened.resolve(stream);
      if (!cancelled) controller.close();
    },
    (err) => {
      if (!started) opened.reject(err);
      else if (!cancelled) controller.error(err);
    },
  );
  return opened.promise;
}
