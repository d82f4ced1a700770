import { byteString } from "../bytes.js";
import { Counter, type Counters } from "../metrics.js";
import type { DataPlane, WriteRequestJson } from "./data-plane.js";
import type { AttributeMap } from "./dynamo-json.js";
import { FlushScheduler } from "./flush-scheduler.js";
import { Attr, itemSize } from "./item-format.js";
import { DEFAULT_RETRY, type RetryPolicy, untilProcessed } from "./retry.js";
import type { Semaphore } from "./semaphore.js";

/** DynamoDB's BatchWriteItem limits. */
export const MAX_BATCH_WRITE_ITEMS = 25;
const MAX_BATCH_WRITE_BYTES = 16 * 1024 * 1024;

/** Batched writer settings. */
export interface BatchWriterOptions {
  client: DataPlane;
  table: string;
  counters: Counters;
  /** Shared bound on concurrent DynamoDB calls. */
  calls: Semaphore;
  /** Items per BatchWriteItem, 1..25. 1 sends each write alone with PutItem/DeleteItem. */
  maxItems: number;
  /** How long a partial batch waits for company while other batches are in flight, in ms. */
  windowMs: number;
  retry?: RetryPolicy;
}

interface Entry {
  id: string;
  request: WriteRequestJson;
  bytes: number;
  waiters: { resolve: () => void; reject: (err: unknown) => void }[];
}

function pkId(request: WriteRequestJson): string {
  const pk = (request.put ?? request.delete)[Attr.pk]?.B;
  if (pk === undefined) throw new Error("write request without a binary pk");
  return byteString(pk);
}

/**
 * Coalesces concurrent writes, from any connection, into BatchWriteItem calls.
 *
 * Invariants:
 * - A write resolves only after DynamoDB accepted it (it was not among the
 *   UnprocessedItems of any attempt); it rejects once retrying has used up
 *   `retry.maxElapsedMs`. Nothing is acknowledged early or dropped.
 * - A batch goes out when it is full; otherwise at the end of the
 *   event-loop turn when no batch is in flight (an idle writer adds no latency),
 *   or after `windowMs` while others are in flight, so load fills batches.
 * - Two writes of one item never travel in the same or in concurrent batches:
 *   a write of an item already pending replaces it (its waiters are answered
 *   with the write that lands), and a write of an item in flight waits for
 *   that flight to end.
 * - UnprocessedItems and throttling are retried with full-jitter exponential backoff.
 */
export class BatchWriter {
  readonly #o: Required<BatchWriterOptions>;
  readonly #pending = new Map<string, Entry>();
  readonly #inFlightIds = new Set<string>();
  /** Pending entries whose item is in flight, so cannot be sent yet. */
  #blocked = 0;
  #inFlight = 0;
  readonly #scheduler: FlushScheduler;
  readonly #idle: (() => void)[] = [];

  constructor(options: BatchWriterOptions) {
    if (!Number.isInteger(options.maxItems) || options.maxItems < 1 || options.maxItems > MAX_BATCH_WRITE_ITEMS) {
      throw new RangeError(`maxItems must be 1..${MAX_BATCH_WRITE_ITEMS}, got ${options.maxItems}`);
    }
    this.#o = { retry: DEFAULT_RETRY, ...options };
    this.#scheduler = new FlushScheduler(options.windowMs, (partial) => this.#flush(partial));
  }

  /** Puts `item` (a full item with its pk). */
  put(item: AttributeMap): Promise<void> {
    return this.#enqueue({ put: item }, itemSize(item));
  }

  /** Deletes the item whose key is `key`. */
  delete(key: AttributeMap): Promise<void> {
    return this.#enqueue({ delete: key }, 64);
  }

  /** Requests waiting for a batch. */
  get queued(): number {
    return this.#pending.size;
  }

  /** Batches sent and not yet settled. */
  get batchesInFlight(): number {
    return this.#inFlight;
  }

  /** Resolves once nothing is pending or in flight. */
  drained(): Promise<void> {
    if (this.#pending.size === 0 && this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #enqueue(request: WriteRequestJson, bytes: number): Promise<void> {
    const id = pkId(request);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const existing = this.#pending.get(id);
    if (existing) {
      existing.request = request;
      existing.bytes = bytes;
      existing.waiters.push({ resolve, reject });
    } else {
      this.#pending.set(id, { id, request, bytes, waiters: [{ resolve, reject }] });
      if (this.#inFlightIds.has(id)) this.#blocked++;
    }
    this.#scheduler.schedule(this.#readyCount(), this.#o.maxItems, this.#inFlight);
    return promise;
  }

  #readyCount(): number {
    return this.#pending.size - this.#blocked;
  }

  /** Sends full batches, and with `partial` the remainder too. */
  #flush(partial: boolean): void {
    for (;;) {
      const batch: Entry[] = [];
      let bytes = 0;
      for (const entry of this.#pending.values()) {
        if (this.#inFlightIds.has(entry.id)) continue;
        if (batch.length > 0 && bytes + entry.bytes > MAX_BATCH_WRITE_BYTES) break;
        batch.push(entry);
        bytes += entry.bytes;
        if (batch.length === this.#o.maxItems) break;
      }
      if (batch.length === 0 || (!partial && batch.length < this.#o.maxItems)) return;
      for (const e of batch) {
        this.#pending.delete(e.id);
        this.#inFlightIds.add(e.id);
      }
      this.#inFlight++;
      void untilProcessed(
        batch,
        this.#o.retry,
        (entries, budgetMs) => this.#attempt(entries, budgetMs),
        "write",
      ).finally(() => {
        this.#inFlight--;
        for (const e of batch) {
          this.#inFlightIds.delete(e.id);
          if (this.#pending.has(e.id)) this.#blocked--;
        }
        if (this.#pending.size > 0) this.#scheduler.afterBatch(this.#readyCount(), this.#o.maxItems, this.#inFlight);
        else if (this.#inFlight === 0) for (const fn of this.#idle.splice(0)) fn();
      });
    }
  }

  /** One call; resolves the entries it wrote and returns those left unprocessed. */
  async #attempt(batch: Entry[], budgetMs: number): Promise<Entry[]> {
    const { client, table, counters, calls } = this.#o;
    if (batch.length === 1 && this.#o.maxItems === 1) {
      const entry = batch[0] as Entry;
      const { put, delete: del } = entry.request;
      if (put !== undefined) {
        counters.add(Counter.dynamoPutItem);
        await calls.run(() => client.putItem({ table, item: put }, budgetMs));
      } else {
        counters.add(Counter.dynamoDeleteItem);
        await calls.run(() => client.deleteItem(table, del, budgetMs));
      }
      for (const w of entry.waiters) w.resolve();
      return [];
    }
    counters.add(Counter.dynamoBatchWriteItem);
    const unprocessed = await calls.run(() =>
      client.batchWriteItem(
        table,
        batch.map((e) => e.request),
        budgetMs,
      ),
    );
    const left = new Set(unprocessed.map(pkId));
    const rest: Entry[] = [];
    for (const e of batch) {
      if (left.has(e.id)) rest.push(e);
      else for (const w of e.waiters) w.resolve();
    }
    return rest;
  }
}
