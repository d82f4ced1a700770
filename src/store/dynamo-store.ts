import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { sameBytes } from "../bytes.js";
import { open, seal } from "../crypto/envelope.js";
import type { ItemKeys } from "../crypto/item-key.js";
import type { Logger } from "../log.js";
import { Counter, type Counters } from "../metrics.js";
import { ErrorCode, KvError } from "../wire/errors.js";
import { BatchReader } from "./batch-reader.js";
import { BatchWriter } from "./batch-writer.js";
import { MISSING } from "./chunk-stream.js";
import { type ChunkedHead, ChunkedValues, ORPHAN_GRACE_MS, type StoreFaults } from "./chunked-values.js";
import type { DataPlane } from "./data-plane.js";
import { FairAdmission, INTERNAL_OWNER } from "./fair-admission.js";
import { type TableCalls, writeHead } from "./head-write.js";
import {
  Attr,
  authenticated,
  headPk,
  ItemFormat,
  itemSize,
  MAX_ITEM_BYTES,
  parseHead,
  singleItem,
  unpackFmt,
  valueAad,
} from "./item-format.js";
import { KeyListing } from "./key-listing.js";
import type {
  Cancel,
  Clock,
  KvStore,
  ListPage,
  ListRequest,
  ValueSink,
  ValueStream,
  Versioned,
  WriteCondition,
} from "./kv-store.js";
import { CollectingSink, expiryOf, isExpired, versioned } from "./kv-store.js";
import { type SweepResult, sweepOrphans } from "./orphan-sweeper.js";
import { DEFAULT_RETRY, type RetryPolicy, retryingCall } from "./retry.js";
import { Semaphore } from "./semaphore.js";
import { versions } from "./version-clock.js";

export type { StoreFaults } from "./chunked-values.js";

/** Batching settings; 1-item batches give the unbatched PutItem/GetItem path. */
export interface BatchSettings {
  /** Items per BatchWriteItem (1..25). */
  writeBatchItems: number;
  /** Keys per BatchGetItem (1..100). */
  readBatchKeys: number;
  /** How long a partial batch waits while others are in flight, in ms; 0 sends at once. */
  windowMs: number;
}

/** DynamoDB store settings. */
export interface DynamoStoreOptions extends BatchSettings {
  /** The SDK client, for the control plane: the orphan sweep's Scan. */
  client: DynamoDBClient;
  /** The request path's calls. */
  data: DataPlane;
  /** Retry budget of each DynamoDB step; its `maxElapsedMs` is the request deadline. */
  retry?: RetryPolicy;
  table: string;
  /**
   * The table name bound into every AAD: the table's own name, except when
   * serving a restored copy of a table, whose items name the original.
   */
  encryptionScope: string;
  keys: ItemKeys;
  counters: Counters;
  log: Logger;
  /** Strongly consistent reads (default true): an acked set is visible to every later get. */
  consistentRead?: boolean;
  /** Concurrent DynamoDB calls; more wait in FIFO order. Match the client's maxSockets. */
  maxConcurrency: number;
  /**
   * Operations accepted and not finished; more wait, taking turns between
   * connections (see fair-admission.ts), so memory stays bounded when
   * DynamoDB is slow and no connection starves the others.
   */
  maxPending: number;
  /** The clock expiry is measured on (see kv-store.ts `Clock`); default `Date.now`. */
  clock?: Clock;
  faults?: StoreFaults;
}

/**
 * Values at least this large are answered by {@link DynamoStore.getStream}
 * as a stream, a few chunks at a time; smaller ones whole. Below it a read
 * that finds its version replaced restarts invisibly, as before.
 */
export const STREAM_FROM_BYTES = 4 * 1024 * 1024;

/** Times a get re-reads the head after finding the version it was reading replaced. */
const MAX_VERSION_RETRIES = 5;

/** A read's value alone, for {@link DynamoStore.get}. */
const valueOnly = (value: Uint8Array | ValueStream): Uint8Array | ValueStream => value;

/**
 * Values in DynamoDB under envelope encryption (see item-format.ts).
 *
 * A value that fits in one item is one head item. An unconditional set of
 * one is a blind put through the batched writer, coalesced with puts from
 * every connection into BatchWriteItem calls, carrying a version chosen
 * here (see version-clock.ts); a conditional one is one UpdateItem that
 * checks its condition (see head-write.ts). Larger values are chunked
 * (see chunked-values.ts), and listing and clearing scan the keys index
 * (see key-listing.ts).
 *
 * A blind put that replaces a chunked value cannot see the head it
 * replaces, so that value's chunks are left to the orphan sweep.
 */
export class DynamoStore implements KvStore {
  readonly #o: DynamoStoreOptions;
  readonly #table: TableCalls;
  readonly #writer: BatchWriter;
  readonly #reader: BatchReader;
  readonly #admission: FairAdmission;
  readonly #chunked: ChunkedValues;
  readonly #listing: KeyListing;
  readonly #clock: Clock;

  constructor(options: DynamoStoreOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
    const calls = new Semaphore(options.maxConcurrency);
    const retry = options.retry ?? DEFAULT_RETRY;
    this.#table = { data: options.data, table: options.table, counters: options.counters, calls, retry };
    const common = { client: options.data, table: options.table, counters: options.counters, calls, retry };
    const consistentRead = options.consistentRead ?? true;
    this.#writer = new BatchWriter({ ...common, maxItems: options.writeBatchItems, windowMs: options.windowMs });
    this.#reader = new BatchReader({
      ...common,
      maxKeys: options.readBatchKeys,
      windowMs: options.windowMs,
      consistentRead,
    });
    this.#admission = new FairAdmission(options.maxPending);
    this.#chunked = new ChunkedValues({
      table: this.#table,
      writer: this.#writer,
      /**
       * Chunks are read one per GetItem, not batched: a batch of four is a 2 MB
       * answer whose text and values are alive at once, and young-generation
       * collections falling in that moment promote them, raising a large get's
       * peak (docs/performance.md, *Large values*). GetItem and BatchGetItem cost the same
       * read units per item. Each read's item is its own, so its ciphertext is
       * freed once decrypted.
       */
      chunkReader: new BatchReader({ ...common, maxKeys: 1, windowMs: 0, consistentRead }),
      keys: options.keys,
      scope: options.encryptionScope,
      admission: this.#admission,
      log: options.log,
      clock: this.#clock,
      faults: options.faults,
    });
    this.#listing = new KeyListing({
      table: this.#table,
      writer: this.#writer,
      log: options.log,
      clock: this.#clock,
      get: (key, cancel) => this.get(key, cancel),
      deleteHead: (pk) => this.#deleteHead(pk),
    });
  }

  get(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | undefined> {
    return this.#read(key, Number.POSITIVE_INFINITY, cancel, valueOnly) as Promise<Uint8Array | undefined>;
  }

  getStream(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | ValueStream | undefined> {
    return this.#read(key, STREAM_FROM_BYTES, cancel, valueOnly);
  }

  getVersioned(key: Uint8Array, cancel?: Cancel): Promise<Versioned | undefined> {
    return this.#read(key, STREAM_FROM_BYTES, cancel, versioned);
  }

  /**
   * Reads `key`'s value, whole or as a stream when it has at least
   * `streamFrom` bytes, and answers what `shape` makes of it and its version.
   * (`shape` rather than a `.then` by the caller: each request waiting in the
   * store would hold one more promise and reaction.)
   */
  #read<T>(
    key: Uint8Array,
    streamFrom: number,
    cancel: Cancel | undefined,
    shape: (value: Uint8Array | ValueStream, version: number, expiresAt: number | undefined) => T,
  ): Promise<T | undefined> {
    return this.#admission.run(cancel ?? INTERNAL_OWNER, async () => {
      notCancelled(cancel);
      for (let attempt = 0; ; attempt++) {
        const item = await this.#reader.get(headPk(key), cancel);
        if (item === undefined) return undefined;
        const head = parseHead(item);
        const { version, expiresAt } = head;
        if (this.#expired(expiresAt)) return undefined;
        const dataKey = await this.#o.keys.decryptionKey(head.keyRef);
        if (head.format === ItemFormat.single) {
          const aad = valueAad(this.#o.encryptionScope, key, expiresAt);
          return shape(
            authenticated(() => open(dataKey, { iv: head.iv, ciphertext: head.ciphertext }, aad)),
            version,
            expiresAt,
          );
        }
        const value = await this.#chunked.read(key, head, dataKey, streamFrom);
        if (value !== MISSING) return shape(value, version, expiresAt);
        // A chunk is gone: either the version was replaced (retry) or the data is damaged.
        await this.#checkReplaced(key, head, attempt);
      }
    });
  }

  /** After a chunk went missing: throws unless the head now names another version and retries are left. */
  async #checkReplaced(key: Uint8Array, head: ChunkedHead, attempt: number): Promise<void> {
    const again = await this.#reader.get(headPk(key));
    const now = again === undefined ? undefined : parseHead(again);
    const replaced = now === undefined || now.format !== ItemFormat.chunked || !sameBytes(now.ver, head.ver);
    if (!replaced) throw new KvError(ErrorCode.Integrity, "a chunk of the current version is missing");
    if (attempt >= MAX_VERSION_RETRIES)
      throw new KvError(ErrorCode.Storage, "the value changed under every read attempt");
  }

  /** Whether a head that expires at `expiresAt` is expired now (the clock is read only for one that expires). */
  #expiredNow(expiresAt: number | undefined): boolean {
    return expiresAt !== undefined && isExpired(expiresAt, this.#clock());
  }

  /** {@link #expiredNow}, for a read: counts one that found its value expired. */
  #expired(expiresAt: number | undefined): boolean {
    if (!this.#expiredNow(expiresAt)) return false;
    this.#o.counters.add(Counter.expiredReads);
    return true;
  }

  set(key: Uint8Array, value: Uint8Array, cancel?: Cancel, ttlMs?: number): Promise<number> {
    // Not async: admission turns a throw into a rejection, and each waiting set holds one promise fewer.
    return this.#admission.run(cancel ?? INTERNAL_OWNER, () => {
      notCancelled(cancel);
      return this.#put(key, value, undefined, expiryOf(this.#clock, ttlMs));
    });
  }

  setIf(
    key: Uint8Array,
    value: Uint8Array,
    condition: WriteCondition,
    cancel?: Cancel,
    ttlMs?: number,
  ): Promise<number> {
    return this.#admission.run(cancel ?? INTERNAL_OWNER, () => {
      notCancelled(cancel);
      return this.#put(key, value, condition, expiryOf(this.#clock, ttlMs));
    });
  }

  /**
   * Writes a value in one item or in chunks; resolves the version written.
   * One item without a condition is a blind batched put; with one, an
   * UpdateItem that checks it.
   */
  async #put(
    key: Uint8Array,
    value: Uint8Array,
    condition: WriteCondition | undefined,
    expiresAt: number | undefined,
  ): Promise<number> {
    if (value.length + key.length + 512 <= MAX_ITEM_BYTES) {
      const dataKey = await this.#o.keys.encryptionKey(1, value.length);
      const sealed = seal(dataKey.plaintext, value, valueAad(this.#o.encryptionScope, key, expiresAt));
      const item = singleItem(key, { keyRef: dataKey.ref, iv: sealed.iv, ciphertext: sealed.ciphertext, expiresAt });
      if (itemSize(item) + 32 <= MAX_ITEM_BYTES) {
        if (condition === undefined) {
          const version = versions.next();
          item[Attr.v] = { N: String(version) };
          await this.#writer.put(item);
          return version;
        }
        // The IV is fresh per seal: it tells this write apart from any other on a retried condition.
        const identity = { attr: Attr.iv, bytes: sealed.iv };
        return (await writeHead(this.#table, key, item, identity, condition, false, this.#clock())).version;
      }
    }
    return this.#chunked.set(key, value, condition, expiresAt);
  }

  /**
   * A sink that writes a large value's chunks as its bytes arrive; a value
   * small enough for one item is collected and set whole.
   */
  setStream(key: Uint8Array, size: number, cancel?: Cancel, ttlMs?: number): ValueSink {
    if (size + key.length + 512 <= MAX_ITEM_BYTES)
      return new CollectingSink(size, (value) => this.set(key, value, cancel, ttlMs));
    return this.#chunked.setStream(key, size, cancel, expiryOf(this.#clock, ttlMs));
  }

  delete(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    return this.#admission.run(cancel ?? INTERNAL_OWNER, async () => {
      notCancelled(cancel);
      return this.#deleteHead(headPk(key));
    });
  }

  exists(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    return this.#admission.run(cancel ?? INTERNAL_OWNER, async () => {
      notCancelled(cancel);
      const { table, data, counters, calls, retry } = this.#table;
      // Only `fmt` comes back: no value bytes, no data key, no chunk.
      const item = await retryingCall(retry, "exists", (budgetMs) => {
        counters.add(Counter.dynamoGetItem);
        return calls.run(() =>
          data.getItem(table, { [Attr.pk]: { B: headPk(key) } }, this.#o.consistentRead ?? true, budgetMs, Attr.fmt),
        );
      });
      return item !== undefined && !this.#expired(unpackFmt(item[Attr.fmt]?.N)?.expiresAt);
    });
  }

  /** See {@link KeyListing.list}. */
  list(request: ListRequest, cancel?: Cancel): Promise<ListPage> {
    notCancelled(cancel);
    return this.#listing.list(request, cancel);
  }

  /** See {@link KeyListing.clear}. */
  clear(): Promise<number> {
    return this.#listing.clear();
  }

  /** Deletes chunk items no head points to, older than `olderThanMs`. */
  async sweepOrphans(olderThanMs = ORPHAN_GRACE_MS): Promise<SweepResult> {
    const { counters } = this.#o;
    counters.add(Counter.sweeps);
    try {
      const result = await sweepOrphans({
        client: this.#o.client,
        table: this.#o.table,
        counters,
        calls: this.#table.calls,
        reader: this.#reader,
        writer: this.#writer,
        olderThanMs,
      });
      counters.add(Counter.sweepDeleted, result.deleted);
      return result;
    } catch (err) {
      counters.add(Counter.sweepFailures);
      throw err;
    }
  }

  /** Requests waiting in the batchers for a batch, and batches in flight, for metrics. */
  get batchQueues(): { write: { queued: number; inFlight: number }; read: { queued: number; inFlight: number } } {
    return {
      write: { queued: this.#writer.queued, inFlight: this.#writer.batchesInFlight },
      read: { queued: this.#reader.queued, inFlight: this.#reader.batchesInFlight },
    };
  }

  /** Deletes retired chunks now, then waits until every accepted write has landed or failed. */
  async close(): Promise<void> {
    // Every connection has closed by now, so every upload has finished or been abandoned.
    await this.#chunked.close();
    await this.#writer.drained();
  }

  /** Deletes a head and, if it was chunked, its chunks; resolves whether there was one that had not expired. */
  async #deleteHead(pk: Uint8Array): Promise<boolean> {
    const { table, data, counters, calls, retry } = this.#table;
    const old = await retryingCall(retry, "delete", (budgetMs) => {
      counters.add(Counter.dynamoDeleteItem);
      return calls.run(() => data.deleteItem(table, { [Attr.pk]: { B: pk } }, budgetMs, true));
    });
    if (old === undefined) return false;
    await this.#chunked.deletedHead(old);
    return !this.#expiredNow(unpackFmt(old[Attr.fmt]?.N)?.expiresAt);
  }
}

/** Work whose requester left while it waited for admission is dropped, not sent to DynamoDB. */
function notCancelled(cancel: Cancel | undefined): void {
  if (cancel?.aborted) throw new KvError(ErrorCode.Unavailable, "the connection closed before the request started");
}
