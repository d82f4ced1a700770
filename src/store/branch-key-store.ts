import {
  type AttributeValue,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  type PutItemCommandInput,
} from "@aws-sdk/client-dynamodb";
import { writeUint32 } from "../bytes.js";
import { type BranchKeyRecord, type BranchKeyStorage, MAX_BRANCH_VERSION } from "../crypto/branch-keys.js";
import { Counter, type Counters } from "../metrics.js";
import { asKvError, ErrorCode, KvError } from "../wire/errors.js";
import { Attr, ItemKind } from "./item-format.js";

/** The active item's partition key: the kind byte alone. */
const ACTIVE_PK = Uint8Array.of(ItemKind.branchKey);

/** A version item's partition key: the kind byte ‖ u32 version. */
export function branchKeyPk(version: number): Uint8Array {
  const pk = new Uint8Array(5);
  pk[0] = ItemKind.branchKey;
  writeUint32(pk, 1, version);
  return pk;
}

/** The active item's partition key. */
export function activeBranchKeyPk(): Uint8Array {
  return ACTIVE_PK.slice();
}

/**
 * Branch keys in the service's own table (item layout in item-format.ts):
 * one item per version, `pk = 0x02 ‖ u32 version`, and one active item,
 * `pk = 0x02`, a copy of the active version's item so one read finds both
 * the number and the key. Neither has `fmt`, so neither is in the keys
 * index: listing, counting and clearing never see them, so `clear` removes
 * values and keeps every key version.
 *
 * The same table rather than a second one: one resource to deploy, back up,
 * restore and grant, and a restored table brings its keys with it.
 *
 * Rotation writes the new version item (`attribute_not_exists(pk)`), then
 * points the active item at it (`bv = expected`). A writer that finds the
 * version item already made promotes that one instead, so a rotation that
 * crashed between its two writes is finished by the next, and concurrent
 * rotations from the same active version make one version between them.
 */
export class DynamoBranchKeyStore implements BranchKeyStorage {
  readonly #client: DynamoDBClient;
  readonly #table: string;
  readonly #counters: Counters;
  readonly #timeoutMs: number;

  /** @param timeoutMs bound on one call, the SDK's own attempts included. */
  constructor(client: DynamoDBClient, table: string, counters: Counters, timeoutMs: number) {
    this.#client = client;
    this.#table = table;
    this.#counters = counters;
    this.#timeoutMs = timeoutMs;
  }

  async active(): Promise<BranchKeyRecord | undefined> {
    const item = await this.#get(ACTIVE_PK);
    return item === undefined ? undefined : parseRecord(item, undefined);
  }

  async version(version: number): Promise<BranchKeyRecord | undefined> {
    const item = await this.#get(branchKeyPk(version));
    return item === undefined ? undefined : parseRecord(item, version);
  }

  async rotate(
    expected: number,
    createdAt: number,
    make: (version: number) => Promise<Uint8Array>,
  ): Promise<BranchKeyRecord> {
    const version = expected + 1;
    if (version > MAX_BRANCH_VERSION) throw new KvError(ErrorCode.Storage, "branch-key versions are exhausted");
    let record: BranchKeyRecord | undefined;
    const made = { version, wrapped: await make(version), createdAt };
    if (await this.#putIf(branchKeyPk(version), made, "attribute_not_exists(#pk)", {})) record = made;
    // Made by another writer (or by our own attempt whose answer was lost): promote what is stored.
    record ??= await this.version(version);
    if (record === undefined) throw new KvError(ErrorCode.Storage, `branch-key version ${version} vanished`);
    const condition = expected === 0 ? "attribute_not_exists(#pk)" : "#bv = :expected";
    const values: Record<string, AttributeValue> = expected === 0 ? {} : { ":expected": { N: String(expected) } };
    // A failed condition means another writer promoted this version or a later one: the read below tells.
    await this.#putIf(ACTIVE_PK, record, condition, values);
    const active = await this.active();
    if (active === undefined) throw new KvError(ErrorCode.Storage, "the active branch key vanished");
    return active;
  }

  async #get(pk: Uint8Array): Promise<Record<string, AttributeValue> | undefined> {
    this.#counters.add(Counter.dynamoGetItem);
    try {
      const out = await this.#client.send(
        new GetItemCommand({ TableName: this.#table, Key: { [Attr.pk]: { B: pk } }, ConsistentRead: true }),
        { abortSignal: AbortSignal.timeout(this.#timeoutMs) },
      );
      return out.Item;
    } catch (err) {
      this.#counters.outcome("dynamodb", "GetItem", "error");
      throw asKvError(err, ErrorCode.Storage, "reading a branch key failed");
    }
  }

  /** Writes `record` at `pk` if `condition` holds; false if it did not. */
  async #putIf(
    pk: Uint8Array,
    record: BranchKeyRecord,
    condition: string,
    values: Record<string, AttributeValue>,
  ): Promise<boolean> {
    const input: PutItemCommandInput = {
      TableName: this.#table,
      Item: {
        [Attr.pk]: { B: pk },
        [Attr.bv]: { N: String(record.version) },
        [Attr.bk]: { B: record.wrapped },
        [Attr.ts]: { N: String(record.createdAt) },
      },
      ConditionExpression: condition,
      // DynamoDB refuses names the expression does not use.
      ExpressionAttributeNames: condition.includes("#bv") ? { "#bv": Attr.bv } : { "#pk": Attr.pk },
      ...(Object.keys(values).length > 0 ? { ExpressionAttributeValues: values } : {}),
    };
    this.#counters.add(Counter.dynamoPutItem);
    try {
      await this.#client.send(new PutItemCommand(input), { abortSignal: AbortSignal.timeout(this.#timeoutMs) });
      return true;
    } catch (err) {
      if (err instanceof Error && err.name === "ConditionalCheckFailedException") return false;
      this.#counters.outcome("dynamodb", "PutItem", "error");
      throw asKvError(err, ErrorCode.Storage, "writing a branch key failed");
    }
  }
}

/** Parses a branch-key item; `version` is the one its key names (undefined for the active item). */
function parseRecord(item: Record<string, AttributeValue>, version: number | undefined): BranchKeyRecord {
  const bad = (what: string) => new KvError(ErrorCode.Integrity, `stored branch key has a bad ${what}`);
  const v = Number(item[Attr.bv]?.N);
  if (!Number.isSafeInteger(v) || v < 1 || v > MAX_BRANCH_VERSION) throw bad("version");
  if (version !== undefined && v !== version) throw bad("version: it is stored under another");
  const wrapped = item[Attr.bk]?.B;
  if (wrapped === undefined || wrapped.length === 0) throw bad("ciphertext");
  const createdAt = Number(item[Attr.ts]?.N);
  if (!Number.isSafeInteger(createdAt) || createdAt < 0) throw bad("creation time");
  return { version: v, wrapped, createdAt };
}
