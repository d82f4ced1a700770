import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { CreateTableCommand, ScanCommand } from "@aws-sdk/client-dynamodb";
import { KvClient } from "../../client/kv-client.js";
import { dynamoClient } from "../../src/aws-clients.js";
import type { Config } from "../../src/config.js";
import { startDynamoDbLocal } from "../../src/local/dynamodb-local.js";
import { Counter } from "../../src/metrics.js";
import { KEYS_INDEX } from "../../src/store/item-format.js";
import { storeConfigs, useBackends } from "../support/backends.js";
import { startTestServer } from "../support/harness.js";
import { rejection } from "../support/rejection.js";

// Starts DynamoDB Local and servers; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(120_000);

const backends = useBackends();
const enc = new TextEncoder();
const dec = new TextDecoder();

function table(): string {
  return `api-${randomBytes(6).toString("hex")}`;
}

const STORES = storeConfigs(backends, "api");

async function allKeys(c: KvClient, options: { prefix?: string; pageSize?: number } = {}): Promise<string[]> {
  const keys: string[] = [];
  for await (const k of c.keys(options)) keys.push(dec.decode(k));
  return keys;
}

/** Items in a table whose partition key starts with `kind` (0 heads, 1 chunks). */
async function itemsOfKind(name: string, kind: number): Promise<number> {
  let n = 0;
  let start: Record<string, never> | undefined;
  do {
    const page = await backends.client.send(new ScanCommand({ TableName: name, ExclusiveStartKey: start }));
    n += (page.Items ?? []).filter((i) => i.pk?.B?.[0] === kind).length;
    start = page.LastEvaluatedKey as typeof start;
  } while (start !== undefined);
  return n;
}

for (const [name, config] of Object.entries(STORES)) {
  describe(`the key-value API on the ${name} store`, () => {
    test("delete answers ok, then not_found; the key is gone for get and exists", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      await c.set("k", "v");
      expect(await c.exists("k")).toBe(true);
      expect(await c.delete("k")).toBe(true);
      expect(await c.delete("k")).toBe(false);
      expect(await c.get("k")).toBeUndefined();
      expect(await c.exists("k")).toBe(false);
      expect(await c.exists("never set")).toBe(false);
      const binary = Uint8Array.of(0xff, 0x00, 0xfe);
      await c.set(binary, "x");
      expect(await c.exists(binary)).toBe(true);
      expect(await c.delete(binary)).toBe(true);
    });

    test("mset, mget and mdelete pipeline many keys and settle per key: one refused key fails alone", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      const long = "x".repeat(1025);
      const set = await c.mset([
        ["m1", "one"],
        [long, "refused"],
        ["m2", "two"],
      ]);
      expect(set.map((r) => r.ok)).toEqual([true, false, true]);
      expect(set[1]).toMatchObject({ key: long, ok: false, error: { code: "KV_ERR_KEY_TOO_LARGE" } });
      const got = await c.mget(["m1", "absent", long, "m2"]);
      expect(
        got.map((r) => (r.ok ? (r.value === undefined ? null : new TextDecoder().decode(r.value)) : r.error.code)),
      ).toEqual(["one", null, "KV_ERR_KEY_TOO_LARGE", "two"]);
      const gone = await c.mdelete(["m1", "m1", "absent"]);
      expect(gone.map((r) => r.ok && r.value)).toEqual([true, false, false]);
      expect(await c.get("m1")).toBeUndefined();
    });

    test("set, delete, get pipelined on one connection answer ok, ok, not_found", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      const results = await Promise.all([c.set("p", "1"), c.delete("p"), c.get("p"), c.exists("p"), c.set("p", "2")]);
      expect(results.slice(1, 4)).toEqual([true, undefined, false]);
      expect(await c.getString("p")).toBe("2");
    });

    test("set, clear, get pipelined on one connection: the get sees the clear, a set after it stays", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      const [, removed, after, , kept] = await Promise.all([
        c.set("a", "1"),
        c.clear(),
        c.get("a"),
        c.set("b", "2"),
        c.getString("b"),
      ]);
      expect(removed).toBe(1);
      expect(after).toBeUndefined();
      expect(kept).toBe("2");
      expect(await allKeys(c)).toEqual(["b"]);
    });

    test("a listing in pages of every size returns every key exactly once, with or without values", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      const n = 257;
      await Promise.all(Array.from({ length: n }, (_, i) => c.set(`key:${i}`, `value:${i}`)));
      const expected = Array.from({ length: n }, (_, i) => `key:${i}`).sort();
      for (const pageSize of [1, 7, 100, 1000]) {
        const keys = await allKeys(c, { pageSize });
        expect(keys.sort()).toEqual(expected);
      }
      const entries: [string, string][] = [];
      for await (const e of c.entries({ pageSize: 50 })) entries.push([dec.decode(e.key), dec.decode(e.value)]);
      expect(entries.sort()).toEqual(expected.map((k): [string, string] => [k, k.replace("key", "value")]).sort());
    });

    test("a prefix lists exactly the keys that start with its bytes", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      await Promise.all(["a/1", "a/2", "a", "ab/1", "b/1"].map((k) => c.set(k, k)));
      await c.set(Uint8Array.of(0x61, 0x2f, 0xff), "binary under a/");
      const keys = await allKeys(c, { prefix: "a/", pageSize: 2 });
      expect(keys.sort()).toEqual(["a/1", "a/2", dec.decode(Uint8Array.of(0x61, 0x2f, 0xff))].sort());
      expect(await allKeys(c, { prefix: "zzz" })).toEqual([]);
    });

    test("a cursor the store did not make is refused with bad_cursor, and the connection keeps serving", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      await c.set("k", "v");
      for (const cursor of [
        Uint8Array.of(1, 2, 3),
        new Uint8Array(0),
        Uint8Array.of(0x44, 1, 4, 9, 0),
        enc.encode("x"),
      ]) {
        expect(await rejection(c.listPage({ cursor }))).toMatchObject({ code: "KV_ERR_BAD_CURSOR" });
      }
      expect(await c.getString("k")).toBe("v");
    });

    test("clear removes every key, large values included, and answers how many", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      await Promise.all(Array.from({ length: 60 }, (_, i) => c.set(`k${i}`, `v${i}`)));
      await c.set("large", new Uint8Array(randomBytes(1024 * 1024)));
      expect(await c.clear()).toBe(61);
      expect(await allKeys(c)).toEqual([]);
      expect(await c.get("large")).toBeUndefined();
      expect(await c.clear()).toBe(0);
    });
  });
}

describe("the key-value API on DynamoDB: costs and layout", () => {
  test("deleting a large value deletes its chunks too", async () => {
    const config = STORES.dynamodb?.() as Partial<Config>;
    await using server = await startTestServer(config);
    await using c = await KvClient.connect({ port: server.port });
    await c.set("large", new Uint8Array(randomBytes(1024 * 1024)));
    expect(await itemsOfKind(config.table as string, 1)).toBe(3);
    expect(await c.delete("large")).toBe(true);
    expect(await itemsOfKind(config.table as string, 1)).toBe(0);
    expect(await itemsOfKind(config.table as string, 0)).toBe(0);
  });

  test("exists on a large value reads one head and calls KMS not at all", async () => {
    const config = STORES.dynamodb?.() as Partial<Config>;
    await using server = await startTestServer(config);
    await using c = await KvClient.connect({ port: server.port });
    await c.set("large", new Uint8Array(randomBytes(2 * 1024 * 1024)));
    const before = server.counters.snapshot();
    expect(await c.exists("large")).toBe(true);
    const after = server.counters.snapshot();
    expect(after[Counter.dynamoGetItem] ?? 0).toBe((before[Counter.dynamoGetItem] ?? 0) + 1);
    expect(after[Counter.dynamoBatchGetItem]).toBe(before[Counter.dynamoBatchGetItem]);
    expect(after[Counter.kmsDecrypt]).toBe(before[Counter.kmsDecrypt]);
  });

  test("listing keys scans the keys index only: no chunk is read, and large values cost what small ones do", async () => {
    const costs: number[] = [];
    for (const size of [10, 1024 * 1024]) {
      const config = STORES.dynamodb?.() as Partial<Config>;
      await using server = await startTestServer(config);
      await using c = await KvClient.connect({ port: server.port });
      const value = new Uint8Array(size);
      for (let i = 0; i < 20; i++) await c.set(`key-${String(i).padStart(4, "0")}`, value);
      const reads = server.counters.get(Counter.dynamoBatchGetItem) + server.counters.get(Counter.dynamoGetItem);
      expect((await allKeys(c)).length).toBe(20);
      expect(server.counters.get(Counter.dynamoBatchGetItem) + server.counters.get(Counter.dynamoGetItem)).toBe(reads);
      let capacity = 0;
      let start: Record<string, never> | undefined;
      do {
        const page = await backends.client.send(
          new ScanCommand({
            TableName: config.table,
            IndexName: KEYS_INDEX,
            ReturnConsumedCapacity: "TOTAL",
            ExclusiveStartKey: start,
          }),
        );
        capacity += page.ConsumedCapacity?.CapacityUnits ?? 0;
        start = page.LastEvaluatedKey as typeof start;
      } while (start !== undefined);
      costs.push(capacity);
    }
    // 20 keys of 1 MiB are 20 MiB of chunks; reading them would cost thousands of units.
    expect(costs[1]).toBeLessThanOrEqual((costs[0] as number) * 2 + 1);
  });

  test("a table made before the keys index gets it at startup, and values stored before it list and read", async () => {
    // A DynamoDB Local of its own: one that holds 8 or more tables with both an index and TTL (every
    // table this file made) never finishes adding an index to another table (DynamoDB Local 2026-05-28).
    await using ddb = await startDynamoDbLocal();
    const client = dynamoClient({ region: "us-east-1", endpoint: ddb.endpoint, localCredentials: true });
    const name = table();
    const config = { ...(STORES.dynamodb?.() as Partial<Config>), dynamodbEndpoint: ddb.endpoint, table: name };
    await client.send(
      new CreateTableCommand({
        TableName: name,
        AttributeDefinitions: [{ AttributeName: "pk", AttributeType: "B" }],
        KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }],
        BillingMode: "PAY_PER_REQUEST",
      }),
    );
    client.destroy();
    const large = new Uint8Array(randomBytes(500 * 1024));
    {
      // Items written into the old table, before any server knew of the index.
      await using server = await startTestServer(config, { skipIndex: true });
      await using c = await KvClient.connect({ port: server.port });
      await c.set("small", "s");
      await c.set("large", large);
      expect(await rejection(c.listPage({}))).toMatchObject({ code: "KV_ERR_STORAGE" });
    }
    await using server = await startTestServer(config);
    await using c = await KvClient.connect({ port: server.port });
    expect((await allKeys(c)).sort()).toEqual(["large", "small"]);
    expect(await c.getString("small")).toBe("s");
    expect(await c.get("large")).toEqual(large);
  });

  test("listing values decrypts through the data-key cache: KMS calls grow with data keys, not items", async () => {
    const config = STORES.dynamodb?.() as Partial<Config>;
    {
      await using server = await startTestServer(config);
      await using c = await KvClient.connect({ port: server.port });
      await Promise.all(Array.from({ length: 300 }, (_, i) => c.set(`k${i}`, `v${i}`)));
    }
    // A fresh server has an empty cache: every wrapped key it meets costs one Decrypt.
    await using server = await startTestServer(config);
    await using c = await KvClient.connect({ port: server.port });
    let n = 0;
    for await (const _ of c.entries()) n++;
    expect(n).toBe(300);
    expect(server.counters.get(Counter.kmsDecrypt)).toBeLessThanOrEqual(2);
  });

  test("a key whose format changes during a listing is still listed once, as are keys that never change", async () => {
    const config = STORES.dynamodb?.() as Partial<Config>;
    await using server = await startTestServer(config);
    await using c = await KvClient.connect({ port: server.port });
    const stable = Array.from({ length: 120 }, (_, i) => `stable:${i}`);
    await Promise.all(stable.map((k) => c.set(k, "small")));
    await using writer = await KvClient.connect({ port: server.port });
    const big = new Uint8Array(randomBytes(500 * 1024));
    const seen: string[] = [];
    let cursor: Uint8Array | undefined;
    let round = 0;
    do {
      const page = await c.listPage({ pageSize: 5, cursor });
      for (const e of page.entries) seen.push(dec.decode(e.key));
      // Between pages: flip keys between small and chunked (their index entries move), add and delete others.
      const flip = stable[(round * 7) % stable.length] as string;
      await writer.set(flip, round % 2 === 0 ? big : enc.encode("small"));
      await writer.set(`churn:${round}`, "x");
      if (round > 0) await writer.delete(`churn:${round - 1}`);
      round++;
      cursor = page.cursor;
    } while (cursor !== undefined);
    const stableSeen = seen.filter((k) => k.startsWith("stable:"));
    expect(stableSeen.sort()).toEqual([...stable].sort());
    expect(new Set(seen).size).toBe(seen.length);
  });
});
