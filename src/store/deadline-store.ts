import { ErrorCode, KvError } from "../wire/errors.js";
import { DeadlineQueue } from "./deadline-queue.js";
import {
  type Cancel,
  forwardingSink,
  isValueStream,
  type KvStore,
  type ListPage,
  type ListRequest,
  readValue,
  type ValueSink,
  type ValueStream,
  type Versioned,
  type WriteCondition,
  writeValue,
} from "./kv-store.js";

/** Deadline settings. */
export interface DeadlineOptions {
  /** How long a get, exists, delete, page of a listing, or set of up to {@link DEADLINE_STEP_BYTES} may take, in ms. */
  timeoutMs: number;
}

/** A set gets one more `timeoutMs` for each started step of this many value bytes. */
export const DEADLINE_STEP_BYTES = 16 * 1024 * 1024;

/**
 * Answers every operation within a deadline, whatever its backend does.
 *
 * Invariants:
 * - A get, exists, delete, list page or set settles within `timeoutMs` of
 *   being called (a set of S bytes within `timeoutMs · (1 + ⌊S / 16 MiB⌋)`);
 *   past that it rejects with `KV_ERR_TIMEOUT`, which the wire answers
 *   `internal`. A clear has no deadline: it runs as long as the store is
 *   large, making progress it logs, and each of its calls has its own.
 * - The inner operation is not abandoned: it goes on to its own end (the
 *   retry budget, equal to the deadline, bounds it), so the ordering layer
 *   under this one starts a later set of the same key only after it. A set
 *   answered at its deadline has an unknown outcome: a request DynamoDB
 *   received late may still apply it. Read-modify-write needs conditional
 *   writes, not timing.
 * - Nothing is acknowledged that the inner store did not acknowledge.
 */
export class DeadlineStore implements KvStore {
  readonly #inner: KvStore;
  readonly #timeoutMs: number;
  /** Deadlines of `timeoutMs`: nearly every operation's. */
  readonly #deadlines: DeadlineQueue;
  /** Deadlines of other lengths (large sets), by length. */
  readonly #longer = new Map<number, DeadlineQueue>();

  constructor(inner: KvStore, options: DeadlineOptions) {
    if (!(options.timeoutMs > 0)) throw new RangeError(`timeoutMs must be > 0, got ${options.timeoutMs}`);
    this.#inner = inner;
    this.#timeoutMs = options.timeoutMs;
    this.#deadlines = new DeadlineQueue(options.timeoutMs);
  }

  get appliesInOrder(): boolean | undefined {
    return this.#inner.appliesInOrder;
  }

  get(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | undefined> {
    return this.#bounded("get", this.#timeoutMs, this.#inner.get(key, cancel));
  }

  /**
   * The head and first piece within `timeoutMs`, and each later piece within
   * `timeoutMs` of being asked for: a stream is paced by its reader, so the
   * whole has no deadline, but no piece waits on DynamoDB longer than one.
   */
  getStream(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | ValueStream | undefined> {
    return this.#bounded("get", this.#timeoutMs, readValue(this.#inner, key, cancel), this.#boundValue);
  }

  /** A value as {@link getStream} answers it: a stream's pieces get deadlines of their own. */
  readonly #boundValue = (result: Uint8Array | ValueStream | undefined) =>
    isValueStream(result) ? this.#boundedStream(result) : result;

  /** A versioned value as {@link getVersioned} answers it. */
  readonly #boundVersioned = (result: Versioned | undefined) =>
    result === undefined || !isValueStream(result.value)
      ? result
      : { ...result, value: this.#boundedStream(result.value) };

  #boundedStream(stream: ValueStream): ValueStream {
    return {
      size: stream.size,
      next: () => this.#bounded("get (a piece of a large value)", this.#timeoutMs, stream.next()),
      cancel: () => stream.cancel(),
      release: (piece) => stream.release?.(piece),
    };
  }

  set(key: Uint8Array, value: Uint8Array, cancel?: Cancel, ttlMs?: number): Promise<number> {
    const ms = this.#timeoutMs * (1 + Math.floor(value.length / DEADLINE_STEP_BYTES));
    return this.#bounded("set", ms, this.#inner.set(key, value, cancel, ttlMs));
  }

  /**
   * Each wait for room in the sink's window, and its end (the last chunks
   * and the commit), within `timeoutMs`. A wait that runs out abandons the
   * upload: the rest of the bytes are dropped and `end` rejects with
   * `KV_ERR_TIMEOUT`, so a stalled backend never leaves a connection paused.
   */
  setStream(key: Uint8Array, size: number, cancel?: Cancel, ttlMs?: number): ValueSink {
    const inner = writeValue(this.#inner, key, size, cancel, ttlMs);
    const ms = this.#timeoutMs;
    let failure: KvError | undefined;
    return forwardingSink(inner, {
      write: (bytes) => failure !== undefined || inner.write(bytes),
      ready: () => {
        if (failure !== undefined) return Promise.resolve();
        return this.#bounded("set (room for the next bytes)", ms, inner.ready()).catch((err: unknown) => {
          failure = err as KvError;
          inner.abort();
        });
      },
      end: () => (failure !== undefined ? Promise.reject(failure) : this.#bounded("set", ms, inner.end())),
    });
  }

  /** The head and, for a large value, each piece as {@link getStream}. */
  getVersioned(key: Uint8Array, cancel?: Cancel): Promise<Versioned | undefined> {
    return this.#bounded("get", this.#timeoutMs, this.#inner.getVersioned(key, cancel), this.#boundVersioned);
  }

  setIf(
    key: Uint8Array,
    value: Uint8Array,
    condition: WriteCondition,
    cancel?: Cancel,
    ttlMs?: number,
  ): Promise<number> {
    const ms = this.#timeoutMs * (1 + Math.floor(value.length / DEADLINE_STEP_BYTES));
    return this.#bounded("set", ms, this.#inner.setIf(key, value, condition, cancel, ttlMs));
  }

  delete(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    return this.#bounded("delete", this.#timeoutMs, this.#inner.delete(key, cancel));
  }

  exists(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    return this.#bounded("exists", this.#timeoutMs, this.#inner.exists(key, cancel));
  }

  list(request: ListRequest, cancel?: Cancel): Promise<ListPage> {
    return this.#bounded("list", this.#timeoutMs, this.#inner.list(request, cancel));
  }

  clear(): Promise<number> {
    return this.#inner.clear();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  /**
   * `work`, or `KV_ERR_TIMEOUT` once `ms` have passed; `map` (no closure
   * per call) turns what `work` answered into the answer, so the request
   * waits on no promise beyond this one.
   */
  #bounded<T>(op: string, ms: number, work: Promise<T>, map?: (v: T) => T): Promise<T> {
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    const queue = ms === this.#timeoutMs ? this.#deadlines : this.#queueFor(ms);
    const deadline = queue.add(() =>
      reject(new KvError(ErrorCode.Timeout, `${op}: no answer from DynamoDB or KMS within ${ms} ms`)),
    );
    work.then(
      (v) => {
        queue.settle(deadline);
        if (map === undefined) resolve(v);
        else {
          try {
            resolve(map(v));
          } catch (err) {
            reject(err);
          }
        }
      },
      (err: unknown) => {
        queue.settle(deadline);
        reject(err);
      },
    );
    return promise;
  }

  /** The queue of deadlines `ms` long: the longer ones of large sets are rare, and each length keeps its queue. */
  #queueFor(ms: number): DeadlineQueue {
    let queue = this.#longer.get(ms);
    if (queue === undefined) {
      queue = new DeadlineQueue(ms);
      this.#longer.set(ms, queue);
    }
    return queue;
  }
}
