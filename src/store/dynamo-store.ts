import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { open, seal } from "../crypto/envelope.js";
import type { DataKeyCache } from "../crypto/key-cache.js";
import { ErrorCode, KvError } from "../errors.js";
import type { Counters } from "../metrics.js";
import { BatchReader } from "./batch-reader.js";
import { BatchWriter } from "./batch-writer.js";
import { fromItem, headPk, itemSize, MAX_ITEM_BYTES, toItem, valueAad } from "./item-format.js";
import type { KvStore } from "./kv-store.js";
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

/** DynamoDB store settings. */
export interface DynamoStoreOptions extends BatchSettings {
  client: DynamoDBClient;
  table: string;
  keys: DataKeyCache;
  counters: Counters;
  /** Strongly consistent reads (default true): an acked set is visible to every later get. */
  consistentRead?: boolean;
  /** Concurrent DynamoDB calls; more wait in FIFO order. Match the client's maxSockets. */
  maxConcurrency: number;
  /** Operations accepted and not finished; more wait, so memory stays bounded when DynamoDB is slow. */
  maxPending: number;
}

/**
 * Values in DynamoDB under envelope encryption: each value is sealed with
 * AES-256-GCM under a cached KMS data key, and only ciphertext, IV and the
 * wrapped data key are written (see item-format.ts). Concurrent operations
 * are coalesced into BatchWriteItem and BatchGetItem calls.
 */
export class DynamoStore implements KvStore {
  readonly #table: string;
  readonly #keys: DataKeyCache;
  readonly #writer: BatchWriter;
  readonly #reader: BatchReader;
  readonly #admission: Semaphore;

  constructor(options: DynamoStoreOptions) {
    this.#table = options.table;
    this.#keys = options.keys;
    const calls = new Semaphore(options.maxConcurrency);
    const common = { client: options.client, table: options.table, counters: options.counters, calls };
    this.#writer = new BatchWriter({ ...common, maxItems: options.writeBatchItems, windowMs: options.windowMs });
    this.#reader = new BatchReader({
      ...common,
      maxKeys: options.readBatchKeys,
      windowMs: options.windowMs,
      consistentRead: options.consistentRead ?? true,
    });
    this.#admission = new Semaphore(options.maxPending);
  }

  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.#admission.run(async () => {
      const item = await this.#reader.get(headPk(key));
      if (item === undefined) return undefined;
      const stored = fromItem(item);
      const dataKey = await this.#keys.decryptionKey(stored.wrappedKey);
      return open(dataKey, { iv: stored.iv, ciphertext: stored.ciphertext }, valueAad(this.#table, key));
    });
  }

  set(key: Uint8Array, value: Uint8Array): Promise<void> {
    return this.#admission.run(async () => {
      const dataKey = await this.#keys.encryptionKey(1, value.length);
      const sealed = seal(dataKey.plaintext, value, valueAad(this.#table, key));
      const item = toItem(key, { wrappedKey: dataKey.wrapped, iv: sealed.iv, ciphertext: sealed.ciphertext });
      const size = itemSize(item);
      if (size > MAX_ITEM_BYTES) {
        throw new KvError(
          ErrorCode.ValueTooLarge,
          `value of ${value.length} bytes makes a ${size}-byte item, over DynamoDB's ${MAX_ITEM_BYTES}`,
        );
      }
      await this.#writer.put(item);
    });
  }

  /** Waits until every accepted write has landed or failed. */
  async close(): Promise<void> {
    await this.#writer.drained();
  }
}
