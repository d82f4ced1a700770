import { byteString } from "../bytes.js";
import { Counter, type Counters } from "../metrics.js";
import { ErrorCode, KvError } from "../wire/errors.js";
import type { DataPlane } from "./data-plane.js";
import type { AttributeMap } from "./dynamo-json.js";
import { FlushScheduler } from "./flush-scheduler.js";
import { Attr } from "./item-format.js";
import type { Cancel } from "./kv-store.js";
import { DEFAULT_RETRY, type RetryPolicy, untilProcessed } from "./retry.js";
import type { Semaphore } from "./semaphore.js";

/** DynamoDB's BatchGetItem key limit. */
export const MAX_BATCH_GET_KEYS = 100;

/** A stored item, or undefined when the key has none. */
export type Item = AttributeMap | undefined;

/** Batched reader settings. */
export interface BatchReaderOptions {
  client: DataPlane;
  table: string;
  counters: Counters;
  calls: Semaphore;
  /**
   * Keys per BatchGetItem, 1..100. 1 reads each key alone with GetItem, and
   * then every read has its own call and its own item, which its caller owns
   * (and may free: `discard` in bytes.ts).
   */
  maxKeys: number;
  /** How long a partial batch waits for company while other batches are in flight, in ms. */
  windowMs: number;
  /** Strongly consistent reads (default true). */
  consistentRead?: boolean;
  retry?: RetryPolicy;
}

interface Waiter {
  resolve: (item: Item) => void;
  reject: (err: unknown) => void;
  cancel: Cancel | undefined;
}

interface Entry {
  id: string;
  pk: Uint8Array;
  waiters: Waiter[];
}

/**
 * Coalesces concurrent reads into consistent BatchGetItem calls.
 *
 * Invariants: concurrent reads of one item share a call (BatchGetItem refuses
 * duplicate keys); a batch goes out when full, at the end of the event-loop turn
 * when idle, or after `windowMs` while others are in flight; UnprocessedKeys
 * and throttling are retried with full-jitter backoff, and a read that cannot
 * complete within `retry.maxElapsedMs` rejects rather than reporting not found.
 * A read whose requester left (its `cancel` aborted) before its batch went
 * out is dropped, and a key no one waits for any more is not sent.
 */
export class BatchReader {
  readonly #o: Required<BatchReaderOptions>;
  readonly #pending = new Map<string, Entry>();
  #inFlight = 0;
  readonly #scheduler: FlushScheduler;

  constructor(options: BatchReaderOptions) {
    if (!Number.isInteger(options.maxKeys) || options.maxKeys < 1 || options.maxKeys > MAX_BATCH_GET_KEYS) {
      throw new RangeError(`maxKeys must be 1..${MAX_BATCH_GET_KEYS}, got ${options.maxKeys}`);
    }
    this.#o = { consistentRead: true, retry: DEFAULT_RETRY, ...options };
    this.#scheduler = new FlushScheduler(options.windowMs, (partial) => this.#flush(partial));
  }

  /** Requests waiting for a batch. */
  get queued(): number {
    return this.#pending.size;
  }

  /** Batches sent and not yet settled. */
  get batchesInFlight(): number {
    return this.#inFlight;
  }

  /** The item whose partition key is `pk`; rejects with `KV_ERR_UNAVAILABLE` if `cancel` aborts before it is sent. */
  get(pk: Uint8Array, cancel?: Cancel): Promise<Item> {
    const id = byteString(pk);
    const { promise, resolve, reject } = Promise.withResolvers<Item>();
    const existing = this.#pending.get(id);
    if (existing) existing.waiters.push({ resolve, reject, cancel });
    else this.#pending.set(id, { id, pk, waiters: [{ resolve, reject, cancel }] });
    this.#scheduler.schedule(this.#pending.size, this.#o.maxKeys, this.#inFlight);
    return promise;
  }

  #flush(partial: boolean): void {
    while (this.#pending.size >= (partial ? 1 : this.#o.maxKeys)) {
      const batch: Entry[] = [];
      const dropped: Entry[] = [];
      for (const entry of this.#pending.values()) {
        if (dropLeft(entry)) dropped.push(entry);
        else batch.push(entry);
        if (batch.length === this.#o.maxKeys) break;
      }
      for (const e of dropped) this.#pending.delete(e.id);
      for (const e of batch) this.#pending.delete(e.id);
      if (batch.length === 0) continue;
      this.#inFlight++;
      void untilProcessed(
        batch,
        this.#o.retry,
        (entries, budgetMs) => this.#attempt(entries, budgetMs),
        "read",
      ).finally(() => {
        this.#inFlight--;
        if (this.#pending.size > 0) this.#scheduler.afterBatch(this.#pending.size, this.#o.maxKeys, this.#inFlight);
      });
    }
  }

  async #attempt(batch: Entry[], budgetMs: number): Promise<Entry[]> {
    const { client, table, counters, calls, consistentRead } = this.#o;
    if (batch.length === 1 && this.#o.maxKeys === 1) {
      const entry = batch[0] as Entry;
      counters.add(Counter.dynamoGetItem);
      const item = await calls.run(() =>
        client.getItem(table, { [Attr.pk]: { B: entry.pk } }, consistentRead, budgetMs),
      );
      for (const w of entry.waiters) w.resolve(item);
      return [];
    }
    counters.add(Counter.dynamoBatchGetItem);
    const out = await calls.run(() =>
      client.batchGetItem(
        table,
        batch.map((e) => ({ [Attr.pk]: { B: e.pk } })),
        consistentRead,
        budgetMs,
      ),
    );
    const found = new Map<string, AttributeMap>();
    for (const item of out.items) {
      const pk = item[Attr.pk]?.B;
      if (pk) found.set(byteString(pk), item);
    }
    const unprocessed = new Set(out.unprocessed.map((k) => byteString(k[Attr.pk]?.B ?? new Uint8Array())));
    const left: Entry[] = [];
    for (const e of batch) {
      if (unprocessed.has(e.id)) left.push(e);
      else for (const w of e.waiters) w.resolve(found.get(e.id));
    }
    return left;
  }
}

/** Rejects the waiters of `entry` whose requester left; true when none is left, so the key need not be read. */
function dropLeft(entry: Entry): boolean {
  if (!entry.waiters.some((w) => w.cancel?.aborted)) return false;
  const left = new KvError(ErrorCode.Unavailable, "the connection closed before the read was sent");
  entry.waiters = entry.waiters.filter((w) => {
    if (!w.cancel?.aborted) return true;
    w.reject(left);
    return false;
  });
  return entry.waiters.length === 0;
}
