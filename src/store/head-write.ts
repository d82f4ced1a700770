import { sameBytes } from "../bytes.js";
import { Counter, type Counters } from "../metrics.js";
import { ErrorCode, KvError } from "../wire/errors.js";
import { type DataPlane, DynamoCallError, type UpdateItemJson } from "./data-plane.js";
import type { AttributeMap } from "./dynamo-json.js";
import { Attr, HEAD_ATTRS, ItemFormat, packFmt, versionOf } from "./item-format.js";
import { conflict, type WriteCondition } from "./kv-store.js";
import { type RetryPolicy, retrying } from "./retry.js";
import type { Semaphore } from "./semaphore.js";
import { versions } from "./version-clock.js";

/** The table and the bounds every call on it goes through. */
export interface TableCalls {
  readonly data: DataPlane;
  readonly table: string;
  readonly counters: Counters;
  /** Shared bound on concurrent DynamoDB calls. */
  readonly calls: Semaphore;
  readonly retry: RetryPolicy;
}

/** An attribute only one write has (a fresh IV, a fresh chunk version id): how a retry recognises its own landed write. */
export interface WriteIdentity {
  readonly attr: string;
  readonly bytes: Uint8Array;
}

const EMPTY = new Uint8Array(0);

/**
 * Writes `key`'s head item with one UpdateItem: the item's attributes set,
 * the other format's removed, and `v` set to a version chosen here (see
 * version-clock.ts). Without `condition` the write is blind; with one it
 * is checked atomically, a value expired at `now` counting as absent.
 * Resolves the version written and, with `returnOld`, the item it replaced.
 *
 * This is the path of conditional sets and of chunked values' commits;
 * unconditional single-item sets go through the batched writer instead.
 *
 * A conditional write retried after a lost answer may find its own first
 * attempt landed: the condition then fails on its own write, which
 * `identity` recognises as success. A condition that fails on a retry
 * against someone else's write leaves the outcome unknown, and says so
 * rather than claim a conflict.
 */
export async function writeHead(
  t: TableCalls,
  key: Uint8Array,
  item: AttributeMap,
  identity: WriteIdentity,
  condition: WriteCondition | undefined,
  returnOld: boolean,
  now: number,
): Promise<{ version: number; old: AttributeMap | undefined }> {
  const { input, version } = headUpdate(t.table, item, condition, returnOld, now);
  let written = version;
  let old: AttributeMap | undefined;
  let attempts = 0;
  await retrying(t.retry, "write", async (budgetMs) => {
    t.counters.add(Counter.dynamoUpdateItem);
    attempts++;
    try {
      old = await t.calls.run(() => t.data.updateItem(input, budgetMs));
    } catch (err) {
      if (!(err instanceof DynamoCallError && err.name === "ConditionalCheckFailedException") || !condition) throw err;
      const now = err.item;
      if (now !== undefined && sameBytes(now[identity.attr]?.B ?? EMPTY, identity.bytes)) {
        written = versionOf(now);
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
  return { version: written, old };
}

/**
 * The UpdateItem that makes `item` the whole head at a new version, with
 * `condition` checked when given. Every name goes through a placeholder, so
 * none can collide with DynamoDB's reserved words.
 *
 * A head expired at `now` is absent to a condition: if-absent holds on it,
 * and if-version fails. Expired means a packed `fmt` (item-format.ts) of at
 * least 10, whose expiry is at most `now`: `fmt` from 10 to the largest one
 * `now` makes.
 */
export function headUpdate(
  table: string,
  item: AttributeMap,
  condition: WriteCondition | undefined,
  returnOld: boolean,
  now: number,
): { input: UpdateItemJson; version: number } {
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
  const version = versions.next();
  // DynamoDB refuses names and values an expression does not use, so each is added only where it is.
  if (condition !== undefined) {
    const fmtName = `#a${HEAD_ATTRS.indexOf(Attr.fmt)}`;
    values[":expiredFrom"] = { N: "10" };
    values[":expiredTo"] = { N: packFmt(ItemFormat.chunked, now) };
    const expired = `${fmtName} BETWEEN :expiredFrom AND :expiredTo`;
    if (condition.ifAbsent) {
      names["#pk"] = Attr.pk;
      conditionExpression = `attribute_not_exists(#pk) OR ${expired}`;
    } else if (condition.ifVersion === 0) {
      // Version 0 is a value written before versions existed: it has no `v`.
      names["#pk"] = Attr.pk;
      conditionExpression = `attribute_exists(#pk) AND attribute_not_exists(#v) AND NOT ${expired}`;
    } else {
      conditionExpression = `#v = :expected AND NOT ${expired}`;
      values[":expected"] = { N: String(condition.ifVersion) };
    }
  }
  values[":next"] = { N: String(version) };
  sets.push("#v = :next");
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
  return { input, version };
}
