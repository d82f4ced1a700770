import type { AttributeMap } from "./dynamo-json.js";

/*
 * The seam owns its types: the calls' arguments and answers and the error a
 * failed call rejects with, so callers and the batching tests depend on this
 * module only, never on the client that implements it.
 */

/**
 * The DynamoDB calls on the request path, one attempt each; retrying is the
 * caller's. `DynamoDataClient` (dynamo-data-client.ts) implements it; the batching unit tests
 * script it. Every call takes the caller's remaining budget in ms, and a
 * failed call rejects with a {@link DynamoCallError} saying whether it is
 * worth repeating.
 */
export interface DataPlane {
  /** Returns the requests DynamoDB left unprocessed. */
  batchWriteItem(table: string, requests: readonly WriteRequestJson[], timeoutMs?: number): Promise<WriteRequestJson[]>;
  /** Returns the items found and the keys left unprocessed. */
  batchGetItem(
    table: string,
    keys: readonly AttributeMap[],
    consistentRead: boolean,
    timeoutMs?: number,
  ): Promise<{ items: AttributeMap[]; unprocessed: AttributeMap[] }>;
  /** With `projection`, the item holds only those attributes. */
  getItem(
    table: string,
    key: AttributeMap,
    consistentRead: boolean,
    timeoutMs?: number,
    projection?: string,
  ): Promise<AttributeMap | undefined>;
  putItem(input: PutItemJson, timeoutMs?: number): Promise<void>;
  /** With `returnOld`, resolves the item as it was; a failed condition rejects, with the item if `oldOnConflict`. */
  updateItem(input: UpdateItemJson, timeoutMs?: number): Promise<AttributeMap | undefined>;
  /** With `returnOld`, resolves the item deleted. */
  deleteItem(
    table: string,
    key: AttributeMap,
    timeoutMs?: number,
    returnOld?: boolean,
  ): Promise<AttributeMap | undefined>;
  /** One page of one segment of a table or index. */
  scan(input: ScanJson, timeoutMs?: number): Promise<ScanPage>;
}

/**
 * A failed data-plane call. `name` is the AWS error code (for example
 * `ProvisionedThroughputExceededException`), or `TimeoutError`,
 * `NetworkError` or `CRC32CheckFailed` for failures before an answer.
 */
export class DynamoCallError extends Error {
  /** HTTP status, when an answer arrived. */
  readonly status: number | undefined;
  /** Whether repeating the call may succeed: throttling, 5xx, network faults, timeouts, damaged bodies. */
  readonly retryable: boolean;
  /** The item as it stood, on a failed condition of a call that asked for it (`oldOnConflict`). */
  readonly item: AttributeMap | undefined;

  constructor(
    code: string,
    message: string,
    options: { status?: number; retryable: boolean; cause?: unknown; item?: AttributeMap },
  ) {
    super(message, { cause: options.cause });
    this.name = code;
    this.status = options.status;
    this.retryable = options.retryable;
    this.item = options.item;
  }
}

/** One entry of a BatchWriteItem: an item to put or a key to delete. */
export type WriteRequestJson = { put: AttributeMap; delete?: undefined } | { delete: AttributeMap; put?: undefined };

/** A Scan call: one page of one segment. */
export interface ScanJson {
  table: string;
  /** A secondary index to scan instead of the table. */
  index?: string;
  segment?: number;
  totalSegments?: number;
  /** Items to evaluate, at most. */
  limit: number;
  startKey?: AttributeMap;
  consistentRead?: boolean;
  returnConsumedCapacity?: boolean;
}

/** One Scan page: no `lastKey` means the segment is done. */
export interface ScanPage {
  items: AttributeMap[];
  lastKey: AttributeMap | undefined;
  /** Read capacity the page consumed, when asked for. */
  capacityUnits: number;
}

/** A PutItem call. */
export interface PutItemJson {
  table: string;
  item: AttributeMap;
}

/** An UpdateItem call. Every name and value the expressions use goes in `names` and `values`. */
export interface UpdateItemJson {
  table: string;
  key: AttributeMap;
  update: string;
  condition?: string;
  names: Record<string, string>;
  values: AttributeMap;
  /** Resolve the item as it was before the update. */
  returnOld?: boolean;
  /** On a failed condition, carry the item as it stands in the error ({@link DynamoCallError.item}). */
  oldOnConflict?: boolean;
}
