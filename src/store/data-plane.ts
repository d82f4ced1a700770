import type {
  DynamoCallError,
  PutItemJson,
  ScanJson,
  ScanPage,
  UpdateItemJson,
  WriteRequestJson,
} from "./dynamo-data-client.js";
import type { AttributeMap } from "./dynamo-json.js";

/**
 * The DynamoDB calls on the request path, one attempt each; retrying is the
 * caller's. {@link DynamoDataClient} implements it; the batching unit tests
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
