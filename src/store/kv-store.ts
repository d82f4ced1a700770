import { ErrorCode, KvError } from "../wire/errors.js";
import type { WriteCondition } from "../wire/write-condition.js";

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
  /**
   * Resolves the version written (see {@link Versioned}). With `ttlMs` the
   * value expires that many ms after the store applies the write (see
   * {@link Clock}); without, it lives until overwritten or deleted, and an
   * expiry the key had is gone.
   */
  set(key: Uint8Array, value: Uint8Array, cancel?: Cancel, ttlMs?: number): Promise<number>;
  /**
   * Present on stores that answer at once (the memory store): `get` without
   * a Promise, so the front end makes no Promise per request.
   */
  readonly getSync?: (key: Uint8Array) => Uint8Array | undefined;
  /** Present on stores that apply a set at once: `set` without a Promise; returns the version written. */
  readonly setSync?: (key: Uint8Array, value: Uint8Array, ttlMs?: number) => number;
  /**
   * Present on stores that can read a large value piece by piece: resolves
   * a small value whole, a large one as a {@link ValueStream}, or undefined
   * when the key is absent. Same ordering and consistency as `get`; the
   * stream reads the version the head named when it was called.
   */
  getStream?(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | ValueStream | undefined>;
  /**
   * Present on stores that can take a large value piece by piece: a sink
   * for a value of exactly `size` bytes under `key`. Nothing is visible
   * until its `end` resolves; ordering and durability as `set`, the write
   * being issued when `end` is called.
   */
  setStream?(key: Uint8Array, size: number, cancel?: Cancel, ttlMs?: number): ValueSink;
  /**
   * `key`'s value with its version, or undefined when the key is absent.
   * Waits for writes of the key issued before it, then reads the store (never
   * a value still in flight), so the version is the one stored. A large
   * value comes as a stream where the store can stream it.
   */
  getVersioned(key: Uint8Array, cancel?: Cancel): Promise<Versioned | undefined>;
  /**
   * Writes `value` only if `condition` holds, atomically with the check:
   * resolves the version written, or rejects with `KV_ERR_CONFLICT`, having
   * written nothing, when the condition fails.
   */
  setIf(
    key: Uint8Array,
    value: Uint8Array,
    condition: WriteCondition,
    cancel?: Cancel,
    ttlMs?: number,
  ): Promise<number>;
  /** Removes `key` (for a large value, its chunks too); resolves false when it was absent. */
  delete(key: Uint8Array, cancel?: Cancel): Promise<boolean>;
  /** Whether `key` has a value. Reads no value bytes and decrypts nothing. */
  exists(key: Uint8Array, cancel?: Cancel): Promise<boolean>;
  /**
   * One page of a listing. Pages come in no particular order. Every key
   * present for the whole listing appears in exactly one page; a key set or
   * deleted during the listing may or may not appear. A page may hold fewer
   * than `limit` entries, even none, and still have a cursor: only a page
   * without one ends the listing. A cursor the store did not make rejects
   * with `KV_ERR_BAD_CURSOR`.
   */
  list(request: ListRequest, cancel?: Cancel): Promise<ListPage>;
  /**
   * Removes every key that existed when it started and resolves how many it
   * removed. A key set while it runs may or may not be removed.
   */
  clear(): Promise<number>;
  /** Waits for in-flight work, then releases resources. */
  close(): Promise<void>;
}

/**
 * A value read piece by piece, in order. The pieces add up to `size` bytes.
 * A piece that cannot be had (a chunk that fails authentication, was
 * deleted, or cannot be read in time) rejects `next`, and the stream is over.
 */
export interface ValueStream {
  readonly size: number;
  /** The next piece, or undefined after the last. One call at a time. */
  next(): Promise<Uint8Array | undefined>;
  /** Stops reading ahead; the reader will not call `next` again. */
  cancel(): void;
  /**
   * Says a piece from `next` is no longer read, so the stream may reuse its
   * memory. Optional for the reader: a piece never released is not reused.
   */
  release?(piece: Uint8Array): void;
}

/**
 * A value written piece by piece. The writer calls `write` with the value's
 * bytes in order, then `end` once, after exactly `size` bytes; or `abort`
 * instead, at any point before `end`.
 *
 * A sink that fails midway (a chunk that cannot be written, a deadline)
 * takes and drops the rest of the bytes, and `end` rejects: nothing is
 * committed, so the old value, if any, stays.
 */
export interface ValueSink {
  /**
   * Takes the next bytes: a view valid only during the call, copied if
   * kept. Returns false when the sink's window is full: the writer waits for
   * `ready` before writing again.
   */
  write(bytes: Uint8Array): boolean;
  /** Settles when the window has room again (or the sink has failed); never rejects. */
  ready(): Promise<void>;
  /**
   * Commits the value once every byte is durable and resolves the version
   * written; rejects, committing nothing, if any step failed.
   */
  end(): Promise<number>;
  /**
   * Writes every byte, then resolves the commit without making it, where the
   * sink can split the two: the ordering layer issues the commit in turn.
   */
  finish?(): Promise<() => Promise<number>>;
  /** Gives up: nothing is committed, and what was written is deleted or left to the orphan sweep. */
  abort(): void;
  /** Bytes of the value held in memory now: a partial chunk and chunks in flight. */
  readonly heldBytes: number;
}

/**
 * A sink for `size` bytes under `key`: the store's own when it can stream,
 * else one that collects the value and sets it whole at `end`.
 */
export function writeValue(store: KvStore, key: Uint8Array, size: number, cancel?: Cancel, ttlMs?: number): ValueSink {
  return store.setStream !== undefined
    ? store.setStream(key, size, cancel, ttlMs)
    : new CollectingSink(size, (value) => store.set(key, value, cancel, ttlMs));
}

/**
 * A sink that forwards every call to `inner` except those in `overrides`:
 * the layers over a store (ordering, deadlines) change one or two calls of
 * the sink below. `finish` is never forwarded: a wrapper's `end` is its own.
 */
export function forwardingSink(
  inner: ValueSink,
  overrides: Partial<Omit<ValueSink, "heldBytes" | "finish">>,
): ValueSink {
  return {
    get heldBytes() {
      return inner.heldBytes;
    },
    write: (bytes) => inner.write(bytes),
    ready: () => inner.ready(),
    end: () => inner.end(),
    abort: () => inner.abort(),
    ...overrides,
  };
}

/** Collects a value whole, then hands it to `commit` at `end`: the sink of a store that cannot stream. */
export class CollectingSink implements ValueSink {
  #value: Uint8Array | null;
  #filled = 0;
  readonly #commit: (value: Uint8Array) => Promise<number>;

  constructor(size: number, commit: (value: Uint8Array) => Promise<number>) {
    this.#value = new Uint8Array(size);
    this.#commit = commit;
  }

  get heldBytes(): number {
    return this.#value?.length ?? 0;
  }

  write(bytes: Uint8Array): boolean {
    const value = this.#value;
    if (value === null) return true;
    if (bytes.length > value.length - this.#filled) throw new RangeError("more bytes written than the sink's size");
    value.set(bytes, this.#filled);
    this.#filled += bytes.length;
    return true;
  }

  ready(): Promise<void> {
    return Promise.resolve();
  }

  end(): Promise<number> {
    const value = this.#value;
    if (value === null) return Promise.reject(new KvError(ErrorCode.Unavailable, "the value was abandoned"));
    if (this.#filled !== value.length) {
      return Promise.reject(new RangeError(`end after ${this.#filled} of ${value.length} bytes`));
    }
    this.#value = null;
    return this.#commit(value);
  }

  abort(): void {
    this.#value = null;
  }
}

/**
 * Reads `key` from `store` as a stream when the store can stream (a large
 * value then comes as a {@link ValueStream}), else whole with `get`.
 */
export function readValue(
  store: KvStore,
  key: Uint8Array,
  cancel?: Cancel,
): Promise<Uint8Array | ValueStream | undefined> {
  return store.getStream !== undefined ? store.getStream(key, cancel) : store.get(key, cancel);
}

/** Whether a `getStream` result is a stream (else a whole value, or undefined). */
export function isValueStream(v: Uint8Array | ValueStream | undefined): v is ValueStream {
  return v !== undefined && !(v instanceof Uint8Array);
}

/**
 * A value and its version. Versions are chosen by the writer, unique rather
 * than counted or ordered (see store/version-clock.ts): one process never
 * repeats one, two processes share one with a chance of about 2^-52, and
 * every version is a safe integer of at least 2^52, above every version
 * written before versions were chosen this way (counters below 2^51).
 * A value written before versions existed has version 0.
 */
export interface Versioned {
  readonly value: Uint8Array | ValueStream;
  readonly version: number;
  /** When the value expires, in ms since the epoch; undefined: never. */
  readonly expiresAt?: number;
}

/**
 * Expiry. A value written with a time to live expires at the store's clock
 * reading when it applied the write plus the TTL, and is absent to every
 * operation from the first moment the clock reads that instant or later:
 * get, exists and delete answer not found, listings leave it out, clear
 * does not count it, and set-if-absent succeeds on it. A set without a TTL
 * removes the expiry; a change of TTL is a write with a new version.
 */
export type Clock = () => number;

/** The longest time to live a write may ask for: ten years of 365 days, in ms. */
export const MAX_TTL_MS = 3650 * 86_400_000;

/**
 * The refusal of a time to live that is not a whole number of ms from 1 to
 * {@link MAX_TTL_MS}, or undefined for one that is fine. `given` says how
 * the user wrote it, for the reason; it is called only to refuse.
 */
export function refusedTtl(ttlMs: number, given: (ttlMs: number) => string = (ms) => `${ms} ms`): KvError | undefined {
  if (Number.isSafeInteger(ttlMs) && ttlMs >= 1 && ttlMs <= MAX_TTL_MS) return undefined;
  return new KvError(
    ErrorCode.BadRequest,
    `the time to live ${given(ttlMs)} is not allowed: it must be at least 1 ms and at most ${MAX_TTL_MS / 86_400_000} days; nothing was written`,
  );
}

/** When a value written now with `ttlMs` expires; undefined without a TTL. */
export function expiryOf(clock: Clock, ttlMs: number | undefined): number | undefined {
  return ttlMs === undefined ? undefined : clock() + ttlMs;
}

/** A {@link Versioned}, with `expiresAt` present only when the value has an expiry. */
export function versioned(value: Uint8Array | ValueStream, version: number, expiresAt: number | undefined): Versioned {
  return expiresAt === undefined ? { value, version } : { value, version, expiresAt };
}

/** Whether a value that expires at `expiresAt` (undefined: never) is expired at `now`. */
export function isExpired(expiresAt: number | undefined, now: number): boolean {
  return expiresAt !== undefined && now >= expiresAt;
}

export type { WriteCondition } from "../wire/write-condition.js";

/** The refusal of a conditional write whose condition failed. */
export function conflict(key: Uint8Array, condition: WriteCondition): KvError {
  const wanted = condition.ifAbsent ? "absent" : `at version ${condition.ifVersion}`;
  return new KvError(ErrorCode.Conflict, `the key (${key.length} bytes) was not ${wanted}; nothing was written`);
}

/** Whether the requester of an operation is gone (an AbortSignal fits). */
export interface Cancel {
  readonly aborted: boolean;
}

/** What to list. */
export interface ListRequest {
  /** Only keys that start with these bytes; omitted, every key. */
  readonly prefix?: Uint8Array;
  /** Most entries in the page, 1..{@link MAX_LIST_LIMIT}. */
  readonly limit: number;
  /** Where the previous page ended; omitted, the first page. */
  readonly cursor?: Uint8Array;
  /** Whether entries carry their values. */
  readonly values: boolean;
}

/** One listed key, with its value when the listing asked for values. */
export interface ListEntry {
  readonly key: Uint8Array;
  readonly value?: Uint8Array;
}

/** A page of a listing; no `cursor` means the listing is complete. */
export interface ListPage {
  readonly entries: ListEntry[];
  readonly cursor: Uint8Array | undefined;
}

/** Most entries a page holds. */
export const MAX_LIST_LIMIT = 1000;

/**
 * A page with values stops growing once its values reach this many bytes,
 * so a page's memory is bounded by this plus one value, whatever `limit` is.
 */
export const MAX_PAGE_VALUE_BYTES = 1024 * 1024;

/** Hard limit on key length: DynamoDB allows 2,048 bytes of partition key, and items need room for a prefix. */
export const MAX_KEY_BYTES = 1024;

/**
 * The refusal of a key that cannot be stored: empty (no front end can name
 * it: HTTP's `/v1/keys/` is the listing, and DynamoDB refuses empty key
 * attributes elsewhere, so neither does this service), or longer than `max`
 * bytes. Undefined for a key that is fine: one check and one message for
 * every front end.
 */
export function refusedKey(key: Uint8Array, max: number): KvError | undefined {
  if (key.length === 0) return new KvError(ErrorCode.BadRequest, `the key is empty: a key has 1 to ${max} bytes`);
  return oversizedKey(key, max);
}

/**
 * The refusal of a key (or a listing prefix) longer than `max` bytes, or
 * undefined when it fits.
 */
export function oversizedKey(bytes: Uint8Array, max: number, what: "key" | "prefix" = "key"): KvError | undefined {
  if (bytes.length <= max) return undefined;
  return new KvError(ErrorCode.KeyTooLarge, `${what} of ${bytes.length} bytes exceeds the maximum of ${max}`);
}
