import { randomBytes } from "node:crypto";
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { discard, sameBytes } from "../bytes.js";
import { open, seal, TAG_BYTES } from "../crypto/envelope.js";
import type { ItemKeys, KeyRef } from "../crypto/item-key.js";
import { ErrorCode, errorMessage, KvError } from "../errors.js";
import type { Logger } from "../log.js";
import { Counter, type Counters } from "../metrics.js";
import { BatchReader } from "./batch-reader.js";
import { BatchWriter, MAX_BATCH_WRITE_ITEMS } from "./batch-writer.js";
import { chunkBuffers } from "./chunk-buffers.js";
import { ChunkUpload } from "./chunk-upload.js";
import type { DataPlane } from "./data-plane.js";
import { DynamoCallError, type UpdateItemJson } from "./dynamo-data-client.js";
import type { AttributeMap } from "./dynamo-json.js";
import {
  decodeCursor,
  encodeCursor,
  freshPosition,
  type ListPosition,
  listKeys,
  type ScanIndexPage,
} from "./index-scan.js";
import {
  Attr,
  CHUNK_BYTES,
  chunkAad,
  chunkedHeadItem,
  chunkItem,
  chunkPk,
  HEAD_ATTRS,
  type Head,
  headPk,
  ItemFormat,
  itemSize,
  KEYS_INDEX,
  MAX_ITEM_BYTES,
  parseHead,
  singleItem,
  VERSION_BYTES,
  valueAad,
  versionOf,
} from "./item-format.js";
import {
  type Cancel,
  CollectingSink,
  conflict,
  firstVersion,
  type KvStore,
  type ListEntry,
  type ListPage,
  type ListRequest,
  MAX_PAGE_VALUE_BYTES,
  type ValueSink,
  type ValueStream,
  type Versioned,
  type WriteCondition,
} from "./kv-store.js";
import { type SweepResult, sweepOrphans } from "./orphan-sweeper.js";
import { DEFAULT_RETRY, type RetryPolicy, retrying, retryingCall } from "./retry.js";
import { Semaphore } from "./semaphore.js";

/** Batching settings; 1-item batches give the unbatched PutItem/GetItem path. */
export interface BatchSettings {
  /** Items per BatchWriteItem (1..25). */
  writeBatchItems: number;
  /** Keys per BatchGetItem (1..100). */
  readBatchKeys: number;
  /** How long a partial batch waits while others are in flight, in ms; 0 sends at once. */
  windowMs: number;
}

/** Test hooks for injecting failures at the points that matter for atomicity. */
export interface StoreFaults {
  /** Runs after a chunked value's chunks are written and before its head is switched. */
  beforeCommit?(key: Uint8Array): void | Promise<void>;
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
  /** Operations accepted and not finished; more wait, so memory stays bounded when DynamoDB is slow. */
  maxPending: number;
  faults?: StoreFaults;
}

/**
 * Chunks encrypted and in flight at once per whole (not streamed) value of
 * a chunked size (3 MiB of plaintext): the window, not the value, sets the
 * transient memory of a set held whole.
 */
const CHUNK_WINDOW = 8;

/**
 * A chunked set that has not committed this long after its first chunk gives
 * up rather than commit: the orphan sweep may delete chunks older than
 * {@link ORPHAN_GRACE_MS}, and a head must never point at swept chunks.
 */
const COMMIT_DEADLINE_MS = 5 * 60_000;

/** Chunks younger than this are never swept: they may belong to a set still in progress. */
export const ORPHAN_GRACE_MS = 15 * 60_000;

/** Scan rounds a page of a listing makes before it answers with what it found. */
const LIST_ROUNDS = 8;

/** Values a page of a listing reads at once. */
const LIST_VALUE_READS = 16;

/** Scan segments a clear works through at once, each one page at a time. */
const CLEAR_SEGMENTS = 8;

/**
 * Deletes one clear segment has in flight: two BatchWriteItems, so at most
 * 16 over the clear. Unbounded, a segment's whole 1,000-key page would be
 * queued at once, and on a slow or throttled table the queued calls outlived
 * their retry budget and failed the clear (measured on DynamoDB Local).
 */
const CLEAR_DELETES_IN_FLIGHT = 2 * MAX_BATCH_WRITE_ITEMS;

/**
 * How long after a clear starts its second pass over the keys index may
 * begin: the index is updated asynchronously, so a key set just before the
 * clear may reach it late.
 */
const INDEX_SETTLE_MS = 1_000;

/** A clear logs its progress this often. */
const CLEAR_PROGRESS_MS = 5_000;

/**
 * Values at least this large are answered by {@link DynamoStore.getStream}
 * as a stream, a few chunks at a time; smaller ones whole. Below it a read
 * that finds its version replaced restarts invisibly, as before.
 */
export const STREAM_FROM_BYTES = 4 * 1024 * 1024;

/** Chunks a streamed read keeps read and decrypted ahead of its reader (1.5 MiB of plaintext). */
const READ_AHEAD_CHUNKS = 4;

/**
 * A replaced value's chunks are deleted this long after the commit, not at
 * once, so a streamed read that started on the old version can finish it.
 * A process that stops deletes what it has retired at once (close); one that
 * dies leaves them to the orphan sweep.
 */
export const RETIRED_CHUNKS_GRACE_MS = 5 * 60_000;

/** Least time between two {@link collectSoon} requests. */
const COLLECT_EVERY_MS = 20;
let lastCollect = 0;

/**
 * Large-value traffic allocates about a megabyte of short-lived buffers per
 * chunk (socket reads, DynamoDB answers, cipher output). This asks JSC for a
 * young-generation collection without waiting for it: `Bun.gc(false)`
 * schedules one and returns (measured: 0.05 ms), where `Bun.gc(true)`, used
 * before, ran a full collection on the request path and paused every
 * connection (7-9 ms per call). Without it a 64 MiB get peaked 15-30 MiB
 * higher. Buffers that live across such a collection (a chunk's plaintext
 * and ciphertext while its write or send is in flight) come from
 * {@link chunkBuffers} instead, since promoted garbage waits for a full
 * collection.
 */
function collectSoon(): void {
  const now = performance.now();
  if (now - lastCollect < COLLECT_EVERY_MS) return;
  lastCollect = now;
  Bun.gc(false);
}

/** Times a get re-reads the head after finding the version it was reading replaced. */
const MAX_VERSION_RETRIES = 5;

const MISSING = Symbol("missing chunk");

/**
 * Values in DynamoDB under envelope encryption (see item-format.ts).
 *
 * A value that fits in one item is one item, written through the batched
 * writer. A larger value is split into chunk items under a fresh version id
 * and committed by switching its head item to that version with one
 * conditional PutItem; the previous version's chunks are deleted after. So:
 * - a get sees the old value or the new one in full: a reader whose version
 *   is replaced mid-read finds chunks missing, re-reads the head and starts
 *   over, and every chunk's AAD names its version, index and count;
 * - a set that fails before the switch leaves the old value readable; its
 *   chunks are orphans that {@link sweepOrphans} removes later.
 */
export class DynamoStore implements KvStore {
  readonly #o: DynamoStoreOptions;
  readonly #writer: BatchWriter;
  readonly #reader: BatchReader;
  /**
   * Chunks are read one per GetItem, not batched: a batch of four is a 2 MB
   * answer whose text and values are alive at once, and young-generation
   * collections falling in that moment promote them (measured: a 64 MiB get
   * peaked ~20 MiB higher batched). GetItem and BatchGetItem cost the same
   * read units per item. Each read's item is its own, so its ciphertext is
   * freed once decrypted (32 gets of 1 MiB in a row: +16 MiB peak, against
   * +28-33 batched, where items may be shared and are left to the collector).
   */
  readonly #chunkReader: BatchReader;
  readonly #calls: Semaphore;
  readonly #admission: Semaphore;
  readonly #retry: RetryPolicy;
  /** Replaced versions whose chunks are due for deletion, by timer. */
  readonly #retired = new Map<Timer, { ver: Uint8Array; count: number }>();
  /** Streamed sets not yet settled (writing chunks, or deleting an abandoned upload's). */
  readonly #uploads = new Set<Promise<void>>();

  constructor(options: DynamoStoreOptions) {
    this.#o = options;
    this.#calls = new Semaphore(options.maxConcurrency);
    this.#retry = options.retry ?? DEFAULT_RETRY;
    const common = {
      client: options.data,
      table: options.table,
      counters: options.counters,
      calls: this.#calls,
      retry: this.#retry,
    };
    this.#writer = new BatchWriter({ ...common, maxItems: options.writeBatchItems, windowMs: options.windowMs });
    this.#reader = new BatchReader({
      ...common,
      maxKeys: options.readBatchKeys,
      windowMs: options.windowMs,
      consistentRead: options.consistentRead ?? true,
    });
    this.#chunkReader = new BatchReader({
      ...common,
      maxKeys: 1,
      windowMs: 0,
      consistentRead: options.consistentRead ?? true,
    });
    this.#admission = new Semaphore(options.maxPending);
  }

  async get(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | undefined> {
    return (await this.#read(key, Number.POSITIVE_INFINITY, cancel))?.value as Uint8Array | undefined;
  }

  async getStream(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | ValueStream | undefined> {
    return (await this.#read(key, STREAM_FROM_BYTES, cancel))?.value;
  }

  getVersioned(key: Uint8Array, cancel?: Cancel): Promise<Versioned | undefined> {
    return this.#read(key, STREAM_FROM_BYTES, cancel);
  }

  /** Reads `key`'s value and version: the value whole, or as a stream when it has at least `streamFrom` bytes. */
  #read(key: Uint8Array, streamFrom: number, cancel?: Cancel): Promise<Versioned | undefined> {
    return this.#admission.run(async () => {
      notCancelled(cancel);
      for (let attempt = 0; ; attempt++) {
        const item = await this.#reader.get(headPk(key));
        if (item === undefined) return undefined;
        const head = parseHead(item);
        const { version } = head;
        const dataKey = await this.#o.keys.decryptionKey(head.keyRef);
        if (head.format === ItemFormat.single) {
          const aad = valueAad(this.#o.encryptionScope, key);
          return { value: open(dataKey, { iv: head.iv, ciphertext: head.ciphertext }, aad), version };
        }
        if (head.size < streamFrom) {
          const value = await this.#readChunks(key, head, dataKey);
          if (value !== MISSING) return { value, version };
        } else {
          const stream = new ChunkStream(head.count, head.size, (i, into) =>
            this.#readChunk(key, head, dataKey, i, into),
          );
          // The first chunk is read before answering, so a version replaced before the read began is retried here.
          if (await stream.ready()) return { value: stream, version };
        }
        // A chunk is gone: either the version was replaced (retry) or the data is damaged.
        await this.#checkReplaced(key, head, attempt);
      }
    });
  }

  /** After a chunk went missing: throws unless the head now names another version and retries are left. */
  async #checkReplaced(key: Uint8Array, head: Extract<Head, { format: 2 }>, attempt: number): Promise<void> {
    const again = await this.#reader.get(headPk(key));
    const now = again === undefined ? undefined : parseHead(again);
    const replaced = now === undefined || now.format !== ItemFormat.chunked || !sameBytes(now.ver, head.ver);
    if (!replaced) throw new KvError(ErrorCode.Integrity, "a chunk of the current version is missing");
    if (attempt >= MAX_VERSION_RETRIES)
      throw new KvError(ErrorCode.Storage, "the value changed under every read attempt");
  }

  set(key: Uint8Array, value: Uint8Array, cancel?: Cancel): Promise<void> {
    return this.#admission.run(async () => {
      notCancelled(cancel);
      await this.#put(key, value, undefined);
    });
  }

  setIf(key: Uint8Array, value: Uint8Array, condition: WriteCondition, cancel?: Cancel): Promise<number> {
    return this.#admission.run(async () => {
      notCancelled(cancel);
      return (await this.#put(key, value, condition)) as number;
    });
  }

  /** Writes a value in one item or in chunks; resolves the version written when `condition` is given. */
  async #put(key: Uint8Array, value: Uint8Array, condition: WriteCondition | undefined): Promise<number | undefined> {
    if (value.length + key.length + 512 <= MAX_ITEM_BYTES) {
      const dataKey = await this.#o.keys.encryptionKey(1, value.length);
      const sealed = seal(dataKey.plaintext, value, valueAad(this.#o.encryptionScope, key));
      const item = singleItem(key, { keyRef: dataKey.ref, iv: sealed.iv, ciphertext: sealed.ciphertext });
      if (itemSize(item) <= MAX_ITEM_BYTES) {
        // The IV is fresh per seal: it tells this write apart from any other on a retried condition.
        return (await this.#writeHead(key, item, { attr: Attr.iv, bytes: sealed.iv }, condition, false)).version;
      }
    }
    return this.#setChunked(key, value, condition);
  }

  /**
   * Writes `key`'s head item with UpdateItem, the one call that can raise
   * its version atomically: the item's attributes are set, the other
   * format's removed, and `v` raised by one (or, under `condition`, set to
   * the next version after the one the condition names).
   *
   * A conditional write retried after a lost answer may find its own first
   * attempt landed: the condition then fails on its own write, which
   * `identity` (an attribute only this write has) recognises as success. A
   * condition that fails on a retry against someone else's write leaves the
   * outcome unknown, and says so rather than claim a conflict.
   */
  async #writeHead(
    key: Uint8Array,
    item: AttributeMap,
    identity: { attr: string; bytes: Uint8Array },
    condition: WriteCondition | undefined,
    returnOld: boolean,
  ): Promise<{ version: number | undefined; old: AttributeMap | undefined }> {
    const { table, counters, data } = this.#o;
    const { input, next } = headUpdate(table, item, condition, returnOld);
    let version = next;
    let old: AttributeMap | undefined;
    let attempts = 0;
    await retrying(this.#retry, "write", async (budgetMs) => {
      counters.add(Counter.dynamoUpdateItem);
      attempts++;
      try {
        old = await this.#calls.run(() => data.updateItem(input, budgetMs));
      } catch (err) {
        if (!(err instanceof DynamoCallError && err.name === "ConditionalCheckFailedException") || !condition)
          throw err;
        const now = err.item;
        if (now !== undefined && sameBytes(now[identity.attr]?.B ?? EMPTY, identity.bytes)) {
          version = versionOf(now);
        } else if (attempts === 1) {
          throw conflict(key, condition);
        } else {
          throw new KvError(
            ErrorCode.Storage,
            "a conditional write was retried after an unanswered attempt and its condition no longer holds: " +
              "whether the first attempt landed is unknown",
          );
        }
      }
      return true;
    });
    return { version, old };
  }

  delete(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    return this.#admission.run(async () => {
      notCancelled(cancel);
      return this.#deleteHead(headPk(key));
    });
  }

  exists(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    return this.#admission.run(async () => {
      notCancelled(cancel);
      const { table, data, counters, consistentRead } = this.#o;
      // Only `fmt` comes back: no value bytes, no data key, no chunk.
      const item = await retryingCall(this.#retry, "exists", (budgetMs) => {
        counters.add(Counter.dynamoGetItem);
        return this.#calls.run(() =>
          data.getItem(table, { [Attr.pk]: { B: headPk(key) } }, consistentRead ?? true, budgetMs, Attr.fmt),
        );
      });
      return item !== undefined;
    });
  }

  /**
   * A page of keys from the keys index, which is eventually consistent: a
   * key set or deleted within about a second before the page may be missing
   * or still listed. Values are read like gets (strongly consistent,
   * decrypted through the data-key cache), and a key whose value is gone by
   * then is left out.
   */
  async list(request: ListRequest, cancel?: Cancel): Promise<ListPage> {
    notCancelled(cancel);
    const position = request.cursor === undefined ? freshPosition() : decodeCursor(request.cursor);
    const page = await listKeys(this.#scanIndex, position, {
      prefix: request.prefix,
      limit: request.limit,
      maxRounds: LIST_ROUNDS,
    });
    if (!request.values) {
      const after = page.positionAfter(page.keys.length);
      return { entries: page.keys.map((k) => ({ key: k.key })), cursor: after && encodeCursor(after) };
    }
    const entries: ListEntry[] = [];
    let bytes = 0;
    let answered = 0;
    while (answered < page.keys.length && bytes < MAX_PAGE_VALUE_BYTES) {
      const window = page.keys.slice(answered, answered + LIST_VALUE_READS);
      const values = await Promise.all(window.map((k) => this.get(k.key, cancel)));
      for (const [i, { key }] of window.entries()) {
        if (bytes >= MAX_PAGE_VALUE_BYTES) break;
        const value = values[i];
        answered++;
        if (value === undefined) continue;
        entries.push({ key, value });
        bytes += value.length;
      }
    }
    const after = page.positionAfter(answered);
    return { entries, cursor: after && encodeCursor(after) };
  }

  /**
   * Deletes every key the keys index lists, segments in parallel, small
   * heads in batches and chunked ones with their chunks; then, once the
   * index has had time to settle, makes a second pass for keys set just
   * before the clear that reached the index late. Keys set while it runs
   * may or may not be removed.
   */
  async clear(): Promise<number> {
    const started = Date.now();
    const progress = { removed: 0, logged: started };
    await this.#clearPass(progress);
    const settle = started + INDEX_SETTLE_MS - Date.now();
    if (settle > 0) await Bun.sleep(settle);
    await this.#clearPass(progress);
    this.#o.log.info("clear done", { removed: progress.removed, ms: Date.now() - started });
    return progress.removed;
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
        calls: this.#calls,
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
    const retired = [...this.#retired];
    this.#retired.clear();
    await Promise.all(
      retired.map(([timer, { ver, count }]) => {
        clearTimeout(timer);
        return this.#deleteRetired(ver, count);
      }),
    );
    // Every connection has closed by now, so every upload has finished or been abandoned.
    await Promise.all(this.#uploads);
    await this.#writer.drained();
  }

  readonly #scanIndex: ScanIndexPage = (segment, totalSegments, start, limit) =>
    retryingCall(this.#retry, "scan of the keys index", (budgetMs) => {
      this.#o.counters.add(Counter.dynamoScan);
      return this.#calls.run(() =>
        this.#o.data.scan(
          { table: this.#o.table, index: KEYS_INDEX, segment, totalSegments, startKey: start, limit },
          budgetMs,
        ),
      );
    });

  /** Deletes a head and, if it was chunked, its chunks; resolves whether there was one. */
  async #deleteHead(pk: Uint8Array): Promise<boolean> {
    const { table, data, counters, log } = this.#o;
    const old = await retryingCall(this.#retry, "delete", (budgetMs) => {
      counters.add(Counter.dynamoDeleteItem);
      return this.#calls.run(() => data.deleteItem(table, { [Attr.pk]: { B: pk } }, budgetMs, true));
    });
    if (old === undefined) return false;
    const head = safeHead(old);
    if (head?.format === ItemFormat.chunked) {
      try {
        await this.#deleteChunks(head.ver, head.count);
      } catch (err) {
        // The head is gone, so the value is; its chunks are orphans the sweep removes.
        log.warn("could not delete a deleted value's chunks; the orphan sweep will", { reason: errorMessage(err) });
      }
    }
    return true;
  }

  #deleteChunks(ver: Uint8Array, count: number): Promise<unknown> {
    const deletes: Promise<void>[] = [];
    for (let i = 0; i < count; i++) deletes.push(this.#writer.delete({ [Attr.pk]: { B: chunkPk(ver, i) } }));
    return Promise.all(deletes);
  }

  /** One pass of a clear over every segment of the keys index. */
  async #clearPass(progress: { removed: number; logged: number }): Promise<void> {
    const { log } = this.#o;
    const segment = async (position: ListPosition | undefined): Promise<void> => {
      while (position !== undefined) {
        const page = await listKeys(this.#scanIndex, position, { prefix: undefined, limit: 1000, maxRounds: 1 });
        for (let first = 0; first < page.keys.length; first += CLEAR_DELETES_IN_FLIGHT) {
          const removed = await Promise.all(
            page.keys.slice(first, first + CLEAR_DELETES_IN_FLIGHT).map(async (k) => {
              const pk = k.indexKey[Attr.pk]?.B as Uint8Array;
              if (k.format === ItemFormat.chunked) return this.#deleteHead(pk);
              await this.#writer.delete({ [Attr.pk]: { B: pk } });
              return true;
            }),
          );
          for (const r of removed) if (r) progress.removed++;
        }
        if (Date.now() - progress.logged >= CLEAR_PROGRESS_MS) {
          progress.logged = Date.now();
          log.info("clear in progress", { removed: progress.removed });
        }
        position = page.positionAfter(page.keys.length);
      }
    };
    const all = freshPosition(CLEAR_SEGMENTS);
    await Promise.all(all.segments.map((s) => segment({ totalSegments: CLEAR_SEGMENTS, segments: [s] })));
  }

  async #setChunked(key: Uint8Array, value: Uint8Array, condition?: WriteCondition): Promise<number | undefined> {
    const { encryptionScope, keys } = this.#o;
    const size = value.length;
    const count = Math.max(1, Math.ceil(size / CHUNK_BYTES));
    const ver = new Uint8Array(randomBytes(VERSION_BYTES));
    const started = Date.now();
    const dataKey = await keys.encryptionKey(count, size);

    for (let first = 0; first < count; first += CHUNK_WINDOW) {
      const puts: Promise<void>[] = [];
      for (let i = first; i < Math.min(count, first + CHUNK_WINDOW); i++) {
        const plain = value.subarray(i * CHUNK_BYTES, Math.min(size, (i + 1) * CHUNK_BYTES));
        const sealed = seal(dataKey.plaintext, plain, chunkAad(encryptionScope, key, ver, i, count, size));
        puts.push(this.#writer.put(chunkItem(key, ver, i, { ...sealed, ts: started })));
      }
      await Promise.all(puts);
      collectSoon();
    }
    try {
      return await this.#commitChunked(key, ver, dataKey.ref, count, size, started, condition);
    } catch (err) {
      // Not committed (a conflict, or a commit that failed): the chunks are nobody's.
      if (err instanceof KvError && err.code === ErrorCode.Conflict) {
        await this.#deleteChunksOrLeave(ver, count, "a conflicting write's");
      }
      throw err;
    }
  }

  /**
   * A sink that writes a large value's chunks as its bytes arrive (see
   * {@link ChunkUpload}); a value small enough for one item is collected
   * and set whole. The upload holds one admission slot until its chunks
   * are written; the commit, a single PutItem, needs none, so a commit
   * waiting its turn behind another write of the key never holds one.
   */
  setStream(key: Uint8Array, size: number, cancel?: Cancel): ValueSink {
    if (size + key.length + 512 <= MAX_ITEM_BYTES)
      return new CollectingSink(size, (value) => this.set(key, value, cancel));
    const count = Math.max(1, Math.ceil(size / CHUNK_BYTES));
    const ver = new Uint8Array(randomBytes(VERSION_BYTES));
    const admitted = Promise.withResolvers<void>();
    const settled = Promise.withResolvers<void>();
    this.#uploads.add(settled.promise);
    settled.promise.then(() => this.#uploads.delete(settled.promise));
    this.#admission
      .run(() => {
        admitted.resolve();
        return settled.promise;
      })
      .catch(() => {});
    const upload = new ChunkUpload({
      key,
      size,
      ver,
      scope: this.#o.encryptionScope,
      dataKey: admitted.promise.then(() => this.#o.keys.encryptionKey(count, size)),
      put: (item) => this.#writer.put(item).finally(collectSoon),
      commit: async (keyRef, n, started) => {
        await this.#commitChunked(key, ver, keyRef, n, size, started);
      },
      discard: (n) => this.#deleteChunksOrLeave(ver, n, "an abandoned upload's"),
      settled: () => settled.resolve(),
      deadlineMs: COMMIT_DEADLINE_MS,
    });
    return upload;
  }

  /**
   * Switches `key`'s head to version `ver`, whose `count` chunks are written:
   * the commit point of a chunked set, conditional when `condition` is
   * given. Refused once the chunks are older than {@link COMMIT_DEADLINE_MS}.
   */
  async #commitChunked(
    key: Uint8Array,
    ver: Uint8Array,
    keyRef: KeyRef,
    count: number,
    size: number,
    started: number,
    condition?: WriteCondition,
  ): Promise<number | undefined> {
    if (Date.now() - started > COMMIT_DEADLINE_MS) {
      throw new KvError(ErrorCode.Storage, "chunks took too long to write; the set was not committed");
    }
    await this.#o.faults?.beforeCommit?.(key);

    const head = chunkedHeadItem(key, { keyRef, ver, count, size, ts: Date.now() });
    const { version, old } = await this.#writeHead(key, head, { attr: Attr.ver, bytes: ver }, condition, true);
    // A retried commit that had landed returns our own head as the old one: nothing to retire then.
    const previous = old === undefined ? undefined : safeHead(old);
    if (previous?.format === ItemFormat.chunked && !sameBytes(previous.ver, ver)) {
      // Not at once: a streamed read of the old version may still be going.
      this.#retire(previous.ver, previous.count);
    }
    return version;
  }

  /** Reads and decrypts every chunk of `head`, or returns MISSING if one is gone. */
  async #readChunks(
    key: Uint8Array,
    head: Extract<Head, { format: 2 }>,
    dataKey: Uint8Array,
  ): Promise<Uint8Array | typeof MISSING> {
    const out = new Uint8Array(head.size);
    for (let first = 0; first < head.count; first += CHUNK_WINDOW) {
      const last = Math.min(head.count, first + CHUNK_WINDOW);
      const reads: Promise<Uint8Array | typeof MISSING>[] = [];
      for (let i = first; i < last; i++) {
        reads.push(this.#readChunk(key, head, dataKey, i, out.subarray(i * CHUNK_BYTES)));
      }
      const plains = await Promise.all(reads);
      if (plains.includes(MISSING)) return MISSING;
    }
    return out;
  }

  /**
   * Reads and decrypts chunk `i` of `head` into `into`, checking its AAD and
   * length; MISSING if the item is gone. Resolves a view of `into`. The
   * ciphertext is freed as soon as it is decrypted (see `discard`).
   */
  async #readChunk(
    key: Uint8Array,
    head: Extract<Head, { format: 2 }>,
    dataKey: Uint8Array,
    i: number,
    into: Uint8Array,
  ): Promise<Uint8Array | typeof MISSING> {
    const item = await this.#chunkReader.get(chunkPk(head.ver, i));
    if (item === undefined) return MISSING;
    const iv = item[Attr.iv]?.B;
    const ciphertext = item[Attr.ct]?.B;
    if (!iv || !ciphertext) throw new KvError(ErrorCode.Integrity, `chunk ${i} lacks iv or ct`);
    const expected = Math.min(CHUNK_BYTES, head.size - i * CHUNK_BYTES);
    if (ciphertext.length !== expected + TAG_BYTES) {
      throw new KvError(ErrorCode.Integrity, `chunk ${i} has the wrong length`);
    }
    const aad = chunkAad(this.#o.encryptionScope, key, head.ver, i, head.count, head.size);
    try {
      return open(dataKey, { iv, ciphertext }, aad, into);
    } finally {
      // The chunk reader (maxKeys 1) never shares an item, so this ciphertext has no other reader.
      discard(ciphertext);
    }
  }

  /** Deletes a replaced version's chunks after {@link RETIRED_CHUNKS_GRACE_MS}, or at close. */
  #retire(ver: Uint8Array, count: number): void {
    const timer = setTimeout(() => {
      this.#retired.delete(timer);
      this.#deleteRetired(ver, count);
    }, RETIRED_CHUNKS_GRACE_MS);
    timer.unref();
    this.#retired.set(timer, { ver, count });
  }

  #deleteRetired(ver: Uint8Array, count: number): Promise<void> {
    return this.#deleteChunksOrLeave(ver, count, "a replaced value's");
  }

  /** Deletes chunks `0..count-1` of `ver`; what cannot be deleted is logged and left to the orphan sweep. Never rejects. */
  #deleteChunksOrLeave(ver: Uint8Array, count: number, whose: string): Promise<void> {
    return this.#deleteChunks(ver, count).then(
      () => {},
      (err: unknown) => {
        this.#o.log.warn(`could not delete ${whose} chunks; the orphan sweep will`, { reason: errorMessage(err) });
      },
    );
  }
}

/**
 * The chunks of one version, read in order with {@link READ_AHEAD_CHUNKS}
 * read and decrypted ahead of the reader. A chunk found missing after the
 * first (the version was deleted, or swept, while being read) rejects.
 *
 * Chunks are decrypted into pooled buffers ({@link chunkBuffers}); a piece
 * the reader releases goes back to the pool, one it never releases is left
 * to the collector.
 */
class ChunkStream implements ValueStream {
  readonly size: number;
  readonly #count: number;
  readonly #read: (i: number, into: Uint8Array) => Promise<Uint8Array | typeof MISSING>;
  readonly #ahead: Promise<Uint8Array | typeof MISSING>[] = [];
  /**
   * Pieces handed out and not released, with the pooled buffer each is a
   * view of. Weak: a reader that never releases (one that fails midway) must not
   * have every piece of the value kept alive here until the stream ends.
   */
  readonly #lent = new WeakMap<Uint8Array, Uint8Array>();
  /** Index of the next chunk to start reading. */
  #started = 0;
  /** Index of the next chunk to hand out. */
  #handed = 0;
  #cancelled = false;

  constructor(
    count: number,
    size: number,
    read: (i: number, into: Uint8Array) => Promise<Uint8Array | typeof MISSING>,
  ) {
    this.#count = count;
    this.size = size;
    this.#read = read;
    this.#fill();
  }

  /** Whether the first chunk is there (false: it is missing, and the caller may retry on a newer version). */
  async ready(): Promise<boolean> {
    const first = this.#ahead[0];
    return first !== undefined && (await first) !== MISSING;
  }

  async next(): Promise<Uint8Array | undefined> {
    if (this.#handed === this.#count || this.#cancelled) return undefined;
    const read = this.#ahead.shift() as Promise<Uint8Array | typeof MISSING>;
    const index = this.#handed++;
    this.#fill();
    const plain = await read;
    collectSoon();
    if (plain === MISSING) {
      this.cancel();
      throw new KvError(ErrorCode.Storage, `chunk ${index} was deleted while the value was being read`);
    }
    return plain;
  }

  release(piece: Uint8Array): void {
    const buffer = this.#lent.get(piece);
    if (buffer === undefined) return;
    this.#lent.delete(piece);
    chunkBuffers.give(buffer);
  }

  cancel(): void {
    this.#cancelled = true;
    // Reads in flight finish on their own; their results are dropped. Rejections are the reader's to see, or no one's.
    for (const read of this.#ahead) read.catch(() => {});
    this.#ahead.length = 0;
  }

  #fill(): void {
    while (!this.#cancelled && this.#started < this.#count && this.#ahead.length < READ_AHEAD_CHUNKS) {
      const buffer = chunkBuffers.take();
      // A read that fails leaves its buffer to the collector.
      const read = this.#read(this.#started++, buffer).then((plain) => {
        if (plain === MISSING) chunkBuffers.give(buffer);
        else this.#lent.set(plain, buffer);
        return plain;
      });
      // Until the reader awaits it, a failure must not count as unhandled.
      read.catch(() => {});
      this.#ahead.push(read);
    }
  }
}

/** Work whose requester left while it waited for admission is dropped, not sent to DynamoDB. */
function notCancelled(cancel: Cancel | undefined): void {
  if (cancel?.aborted) throw new KvError(ErrorCode.Unavailable, "the connection closed before the request started");
}

const EMPTY = new Uint8Array(0);

/**
 * The UpdateItem that makes `item` the whole head: its attributes set, the
 * other head attributes removed, and the version raised (see
 * {@link DynamoStore}'s `#writeHead`); with `condition`, also the version it
 * writes. Every name goes through a placeholder, so none can collide with
 * DynamoDB's reserved words.
 */
function headUpdate(
  table: string,
  item: AttributeMap,
  condition: WriteCondition | undefined,
  returnOld: boolean,
): { input: UpdateItemJson; next: number | undefined } {
  const names: Record<string, string> = { "#v": Attr.v };
  const values: AttributeMap = {};
  const sets: string[] = [];
  const removes: string[] = [];
  HEAD_ATTRS.forEach((attr, i) => {
    const value = item[attr];
    names[`#a${i}`] = attr;
    if (value === undefined) removes.push(`#a${i}`);
    else {
      values[`:a${i}`] = value;
      sets.push(`#a${i} = :a${i}`);
    }
  });
  let conditionExpression: string | undefined;
  let next: number | undefined;
  if (condition === undefined) {
    values[":first"] = { N: String(firstVersion() - 1) };
    values[":one"] = { N: "1" };
    sets.push("#v = if_not_exists(#v, :first) + :one");
  } else {
    // DynamoDB refuses names an expression does not use, so `#pk` is named only where it is.
    if (condition.ifAbsent || condition.ifVersion === 0) names["#pk"] = Attr.pk;
    if (condition.ifAbsent) {
      conditionExpression = "attribute_not_exists(#pk)";
      next = firstVersion();
    } else if (condition.ifVersion === 0) {
      // Version 0 is a value written before versions existed: it has no `v`.
      conditionExpression = "attribute_exists(#pk) AND attribute_not_exists(#v)";
      next = firstVersion();
    } else {
      conditionExpression = "#v = :expected";
      values[":expected"] = { N: String(condition.ifVersion) };
      next = condition.ifVersion + 1;
    }
    values[":next"] = { N: String(next) };
    sets.push("#v = :next");
  }
  let update = `SET ${sets.join(", ")}`;
  if (removes.length > 0) update += ` REMOVE ${removes.join(", ")}`;
  const input: UpdateItemJson = {
    table,
    key: { [Attr.pk]: item[Attr.pk] as { B: Uint8Array } },
    update,
    condition: conditionExpression,
    names,
    values,
    returnOld,
    oldOnConflict: condition !== undefined,
  };
  return { input, next };
}

function safeHead(item: AttributeMap): Head | undefined {
  try {
    return parseHead(item);
  } catch {
    return undefined;
  }
}
