import { type AttributeValue, type DynamoDBClient, ScanCommand } from "@aws-sdk/client-dynamodb";
import { byteString } from "../bytes.js";
import { Counter, type Counters } from "../metrics.js";
import type { BatchReader } from "./batch-reader.js";
import type { BatchWriter } from "./batch-writer.js";
import { Attr, headPk, ItemFormat, ItemKind, parseHead, versionOfChunkPk } from "./item-format.js";
import type { Semaphore } from "./semaphore.js";

/** What one sweep did. */
export interface SweepResult {
  /** Chunk items looked at. */
  scanned: number;
  /** Chunk items deleted because no head points to their version. */
  deleted: number;
}

/** What a sweep needs. */
export interface SweepOptions {
  client: DynamoDBClient;
  table: string;
  counters: Counters;
  calls: Semaphore;
  reader: BatchReader;
  writer: BatchWriter;
  /** Chunks written more recently than this are left alone: their set may still commit. */
  olderThanMs: number;
}

/**
 * Finds chunk items that no head points to and deletes them. They come from
 * chunked sets that failed or crashed before their commit, from replaced
 * versions whose cleanup failed, and from chunked values overwritten by small
 * ones (a batched write cannot return the item it replaced).
 *
 * It scans the table for chunk items (a Scan reads every item: its cost grows
 * with the table, so it runs rarely, by default hourly), reads each one's
 * head, and deletes chunks whose version the head does not name. A head it
 * cannot parse keeps its chunks. Deleting is idempotent, so several servers
 * sweeping at once is harmless.
 */
export async function sweepOrphans(o: SweepOptions): Promise<SweepResult> {
  const cutoff = Date.now() - o.olderThanMs;
  const live = new Map<string, string | null>();
  let scanned = 0;
  let deleted = 0;
  let start: Record<string, AttributeValue> | undefined;
  do {
    o.counters.add(Counter.dynamoScan);
    const page = await o.calls.run(() =>
      o.client.send(
        new ScanCommand({
          TableName: o.table,
          FilterExpression: "begins_with(#pk, :chunk)",
          ProjectionExpression: "#pk, #k, #ts",
          ExpressionAttributeNames: { "#pk": Attr.pk, "#k": Attr.k, "#ts": Attr.ts },
          ExpressionAttributeValues: { ":chunk": { B: Uint8Array.of(ItemKind.chunk) } },
          ExclusiveStartKey: start,
          ConsistentRead: true,
        }),
      ),
    );
    start = page.LastEvaluatedKey;
    const deletes: Promise<void>[] = [];
    for (const item of page.Items ?? []) {
      scanned++;
      const pk = item[Attr.pk]?.B;
      const key = item[Attr.k]?.B;
      const ts = Number(item[Attr.ts]?.N ?? Number.NaN);
      if (!pk || !key || !(ts < cutoff)) continue;
      const keyId = byteString(key);
      if (!live.has(keyId)) {
        const headItem = await o.reader.get(headPk(key));
        let ver: string | null = "";
        if (headItem !== undefined) {
          try {
            const head = parseHead(headItem);
            ver = head.format === ItemFormat.chunked ? byteString(head.ver) : "";
          } catch {
            ver = null;
          }
        }
        live.set(keyId, ver);
      }
      const liveVer = live.get(keyId);
      if (liveVer === null || liveVer === byteString(versionOfChunkPk(pk))) continue;
      deleted++;
      deletes.push(o.writer.delete({ [Attr.pk]: { B: pk } }));
    }
    await Promise.all(deletes);
  } while (start !== undefined);
  return { scanned, deleted };
}
