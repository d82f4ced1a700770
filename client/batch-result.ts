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
