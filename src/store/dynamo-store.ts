import {
  type DynamoDBClient,
  GetItemCommand,
  type GetItemCommandOutput,
  PutItemCommand,
} from "@aws-sdk/client-dynamodb";
import { open, seal } from "../crypto/envelope.js";
import type { DataKeyCache } from "../crypto/key-cache.js";
import { asKvError, ErrorCode, isKvError, KvError } from "../errors.js";
import { Counter, type Counters } from "../metrics.js";
import { Attr, fromItem, headPk, itemSize, MAX_ITEM_BYTES, toItem, valueAad } from "./item-format.js";
import type { KvStore } from "./kv-store.js";
import { Semaphore } from "./semaphore.js";

/** DynamoDB store settings. */
export interface DynamoStoreOptions {
  client: DynamoDBClient;
  table: string;
  keys: DataKeyCache;
  counters: Counters;
  /** Strongly consistent reads (default true): an acked set is visible to every later get. */
  consistentRead?: boolean;
  /** Concurrent DynamoDB calls; more wait in FIFO order. Match the client's maxSockets. */
  maxConcurrency: number;
}

/**
 * Values in DynamoDB under envelope encryption: each value is sealed with
 * AES-256-GCM under a cached KMS data key, and only ciphertext, IV and the
 * wrapped data key are written. See item-format.ts for the layout.
 */
export class DynamoStore implements KvStore {
  readonly #client: DynamoDBClient;
  readonly #table: string;
  readonly #keys: DataKeyCache;
  readonly #counters: Counters;
  readonly #consistentRead: boolean;
  readonly #calls: Semaphore;

  constructor(options: DynamoStoreOptions) {
    this.#client = options.client;
    this.#table = options.table;
    this.#keys = options.keys;
    this.#counters = options.counters;
    this.#consistentRead = options.consistentRead ?? true;
    this.#calls = new Semaphore(options.maxConcurrency);
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.#counters.add(Counter.dynamoGetItem);
    let item: GetItemCommandOutput;
    try {
      const command = new GetItemCommand({
        TableName: this.#table,
        Key: { [Attr.pk]: { B: headPk(key) } },
        ConsistentRead: this.#consistentRead,
      });
      item = await this.#calls.run(() => this.#client.send(command));
    } catch (err) {
      throw asKvError(err, ErrorCode.Storage, "DynamoDB GetItem failed");
    }
    if (item.Item === undefined) return undefined;
    const stored = fromItem(item.Item);
    const dataKey = await this.#keys.decryptionKey(stored.wrappedKey);
    return open(dataKey, { iv: stored.iv, ciphertext: stored.ciphertext }, valueAad(this.#table, key));
  }

  async set(key: Uint8Array, value: Uint8Array): Promise<void> {
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
    this.#counters.add(Counter.dynamoPutItem);
    try {
      const command = new PutItemCommand({ TableName: this.#table, Item: item });
      await this.#calls.run(() => this.#client.send(command));
    } catch (err) {
      throw isKvError(err) ? err : asKvError(err, ErrorCode.Storage, "DynamoDB PutItem failed");
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
