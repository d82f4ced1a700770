/**
 * The storage seam. Keys and values are bytes; a store never decodes them.
 *
 * Contract: `set` resolves only once the value is durable in the store's
 * backend, and rejects (with a KvError) otherwise; `get` resolves `undefined`
 * only when the key is absent. Neither may resolve with wrong bytes: a value
 * that fails authentication rejects with `KV_ERR_INTEGRITY`.
 */
export interface KvStore {
  /**
   * True when every call takes effect before it returns, so a later call can
   * never overtake an earlier one and the store needs no OrderedStore above it.
   */
  readonly appliesInOrder?: boolean;
  /**
   * `cancel` tells a store that queues work that the requester is gone: work
   * not yet started when `cancel.aborted` is true is dropped (rejected with
   * `KV_ERR_UNAVAILABLE`) instead of being sent to the backend.
   */
  get(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | undefined>;
  set(key: Uint8Array, value: Uint8Array, cancel?: Cancel): Promise<void>;
  /**
   * Present on stores that answer at once (the memory store): `get` without
   * a Promise, so the front end makes no Promise per request.
   */
  readonly getSync?: (key: Uint8Array) => Uint8Array | undefined;
  /** Present on stores that apply a set at once: `set` without a Promise. */
  readonly setSync?: (key: Uint8Array, value: Uint8Array) => void;
  /** Waits for in-flight work, then releases resources. */
  close(): Promise<void>;
}

/** Whether the requester of an operation is gone (an AbortSignal fits). */
export interface Cancel {
  readonly aborted: boolean;
}

/** Hard limit on key length: DynamoDB allows 2,048 bytes of partition key, and items need room for a prefix. */
export const MAX_KEY_BYTES = 1024;
