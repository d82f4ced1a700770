/**
 * Calls both clients build from their basic ones (get, set, delete, listPage), written once:
 * the batch helpers that settle per key, and the listing iterators.
 */
import { deferred } from "../src/wire/deferred.js";
import { asKvError, ErrorCode, type KvError } from "../src/wire/errors.js";

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

/** The calls the batch helpers are made of; both clients have them. */
export interface KeyCalls<B, O> {
  get(key: B, options?: O): Promise<Uint8Array | undefined>;
  set(key: B, value: B, options?: O): Promise<number | undefined>;
  delete(key: B, options?: O): Promise<boolean>;
}

/** `mget`: the values of `keys`, pipelined, one result per key in their order. */
export function mgetOf<B extends Uint8Array | string, O>(
  c: KeyCalls<B, O>,
  keys: readonly B[],
  options?: O,
): Promise<BatchResult<Uint8Array | undefined>[]> {
  return settleEach(
    keys,
    (k) => k,
    (key) => c.get(key, options),
  );
}

/** `mset`: every `[key, value]` set, pipelined, one result per entry (the version written). */
export function msetOf<B extends Uint8Array | string, O>(
  c: KeyCalls<B, O>,
  entries: Iterable<readonly [B, B]>,
  options?: O,
): Promise<BatchResult<number | undefined>[]> {
  return settleEach(
    [...entries],
    ([key]) => key,
    ([key, value]) => c.set(key, value, options),
  );
}

/** `mdelete`: `keys` deleted, pipelined, one result per key (whether it had a value). */
export function mdeleteOf<B extends Uint8Array | string, O>(
  c: KeyCalls<B, O>,
  keys: readonly B[],
  options?: O,
): Promise<BatchResult<boolean>[]> {
  return settleEach(
    keys,
    (k) => k,
    (key) => c.delete(key, options),
  );
}

/** The listing call the iterators are made of; both clients have it. */
export interface PageCalls<L> {
  listPage(
    options: L & { cursor?: Uint8Array; values?: boolean },
  ): Promise<{ entries: { key: Uint8Array; value?: Uint8Array }[]; cursor: Uint8Array | undefined }>;
}

/** Pages of a listing, one request at a time, following cursors to the end. */
async function* pagesOf<L extends { cursor?: Uint8Array }>(c: PageCalls<L>, options: L, values: boolean) {
  let cursor = options.cursor;
  do {
    const page = await c.listPage({ ...options, cursor, values });
    yield page;
    cursor = page.cursor;
  } while (cursor !== undefined);
}

/** `keys`: every key of a listing, page by page. */
export async function* keysOf<L extends { cursor?: Uint8Array }>(
  c: PageCalls<L>,
  options: L,
): AsyncGenerator<Uint8Array> {
  for await (const page of pagesOf(c, options, false)) for (const e of page.entries) yield e.key;
}

/** `entries`: every key and value of a listing, page by page. */
export async function* entriesOf<L extends { cursor?: Uint8Array }>(
  c: PageCalls<L>,
  options: L,
): AsyncGenerator<{ key: Uint8Array; value: Uint8Array }> {
  for await (const page of pagesOf(c, options, true)) {
    for (const e of page.entries) yield { key: e.key, value: e.value ?? new Uint8Array(0) };
  }
}

/** The streaming read `getStream` is made of; both clients have it. */
export interface StreamCalls<B> {
  getTo(key: B, sink: (piece: Uint8Array) => void | Promise<void>): Promise<boolean>;
}

/**
 * `getStream`: the value of `key` as a Web `ReadableStream` of its pieces as
 * they arrive, or undefined when the key has no value. The connection reads
 * no further while the stream's reader is behind (its queue is full), so a
 * slow consumer holds the server to a window, as with `getTo`. Node users
 * can wrap it with `Readable.fromWeb`.
 */
export function getStreamOf<B>(c: StreamCalls<B>, key: B): Promise<ReadableStream<Uint8Array> | undefined> {
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
