import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { DeleteTableCommand, GetItemCommand, PutItemCommand, ScanCommand } from "@aws-sdk/client-dynamodb";
import { KvClient } from "../../client/kv-client.js";
import { Counter } from "../../src/metrics.js";
import { headPk } from "../../src/store/item-format.js";
import type { KvStore } from "../../src/store/kv-store.js";
import { ErrorCode } from "../../src/wire/errors.js";
import { onBackends, useBackends } from "../support/backends.js";
import { codeOf } from "../support/code-of.js";
import { FaultProxy } from "../support/fault-proxy.js";
import { startTestServer } from "../support/harness.js";
import { wrapping } from "../support/stores.js";
import { expectInternal } from "../support/wire.js";

// Starts DynamoDB Local or server processes; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

const backends = useBackends();
const enc = new TextEncoder();

function dynamoConfig(table?: string) {
  return onBackends(backends, table || undefined);
}

describe("the server on DynamoDB Local and the local KMS endpoint", () => {
  test("sets, gets, overwrites and reports missing keys", async () => {
    await using server = await startTestServer(dynamoConfig());
    await using c = await KvClient.connect({ port: server.port });
    await c.set("a", "1");
    expect(await c.getString("a")).toBe("1");
    await c.set("a", "2");
    expect(await c.getString("a")).toBe("2");
    expect(await c.get("missing")).toBeUndefined();
    // The empty key is refused on both front ends (see bad-input.test.ts); an empty value is a value.
    expect(await codeOf(c.set("", "no"))).toBe("KV_ERR_BAD_REQUEST");
    await c.set("empty value", "");
    expect(await c.get("empty value")).toEqual(new Uint8Array(0));
  });

  test("values over 4 KB and bytes that are not UTF-8 round-trip exactly", async () => {
    await using server = await startTestServer(dynamoConfig());
    await using c = await KvClient.connect({ port: server.port });
    const big = new Uint8Array(randomBytes(300 * 1024));
    await c.set("big", big);
    expect(await c.get("big")).toEqual(big);
    const key = Uint8Array.of(0xff, 0x00, 0xc3, 0x28);
    const value = Uint8Array.of(0xed, 0xa0, 0x80, 0xf8);
    await c.set(key, value);
    expect(await c.get(key)).toEqual(value);
  });

  test("pipelined gets see the set just before them on the same connection", async () => {
    await using server = await startTestServer(dynamoConfig());
    await using c = await KvClient.connect({ port: server.port });
    const ops: Promise<unknown>[] = [];
    const gets: Promise<string | undefined>[] = [];
    for (let i = 0; i < 200; i++) {
      ops.push(c.set(`k${i % 5}`, `v${i}`));
      gets.push(c.getString(`k${i % 5}`));
    }
    await Promise.all(ops);
    const values = await Promise.all(gets);
    values.forEach((v, i) => {
      expect(v).toBe(`v${i}`);
    });
    for (let j = 0; j < 5; j++) expect(await c.getString(`k${j}`)).toBe(`v${195 + j}`);
  });

  test("a scan of the table shows only ciphertext, never a plaintext value", async () => {
    const table = `scan-${randomBytes(4).toString("hex")}`;
    await using server = await startTestServer(dynamoConfig(table));
    await using c = await KvClient.connect({ port: server.port });
    const marker = "PLAINTEXT-MARKER-";
    for (let i = 0; i < 20; i++) await c.set(`key-${i}`, `${marker}${i}`.repeat(1 + i * 50));
    const scan = await backends.client.send(new ScanCommand({ TableName: table }));
    const items = scan.Items ?? [];
    const heads = items.filter((item) => item.pk?.B?.[0] === 0);
    expect(heads.length).toBe(20);
    // Besides the values: branch-key version 1 and the active copy, KMS ciphertext only.
    expect(items.length).toBe(22);
    const needle = Buffer.from(marker);
    for (const item of heads) expect(Object.keys(item).sort()).toEqual(["bs", "bv", "ct", "fmt", "iv", "pk", "v"]);
    for (const item of items) {
      for (const attr of Object.values(item)) {
        const raw = attr.B ? Buffer.from(attr.B) : Buffer.from(attr.S ?? attr.N ?? "");
        expect(raw.includes(needle)).toBe(false);
      }
    }
  });

  test("steady traffic makes no KMS call per request", async () => {
    const table = `kms-${randomBytes(4).toString("hex")}`;
    {
      await using server = await startTestServer(dynamoConfig(table));
      await using c = await KvClient.connect({ port: server.port });
      await Promise.all(Array.from({ length: 300 }, (_, i) => c.set(`k${i}`, `v${i}`)));
      await Promise.all(Array.from({ length: 300 }, (_, i) => c.getString(`k${i}`)));
      // One GenerateDataKey at startup makes branch-key version 1, which serves every set and get.
      expect(server.counters.get(Counter.kmsGenerateDataKey)).toBe(1);
      expect(server.counters.get(Counter.kmsDecrypt)).toBe(0);
      // Pipelined sets are coalesced into BatchWriteItem calls of up to 25 (they carry versions
      // chosen by the server, so need no UpdateItem); gets into BatchGetItem calls of up to 100.
      expect(server.counters.get(Counter.dynamoUpdateItem)).toBe(0);
      expect(server.counters.get(Counter.dynamoBatchWriteItem)).toBeGreaterThanOrEqual(12);
      expect(server.counters.get(Counter.dynamoBatchWriteItem)).toBeLessThan(150);
      expect(server.counters.get(Counter.dynamoBatchGetItem)).toBeGreaterThanOrEqual(3);
      expect(server.counters.get(Counter.dynamoBatchGetItem)).toBeLessThan(150);
    }
    // A new process has an empty cache: one Decrypt of the branch key at startup serves every read.
    await using second = await startTestServer(dynamoConfig(table));
    await using c2 = await KvClient.connect({ port: second.port });
    const values = await Promise.all(Array.from({ length: 300 }, (_, i) => c2.getString(`k${i}`)));
    expect(values).toEqual(Array.from({ length: 300 }, (_, i) => `v${i}`));
    expect(second.counters.get(Counter.kmsDecrypt)).toBe(1);
  });

  test("the unbatched, uncached configuration makes one DynamoDB call and one KMS call per request", async () => {
    await using server = await startTestServer({
      ...dynamoConfig(),
      writeBatch: 1,
      readBatch: 1,
      keyring: "kms",
      dataKeyMaxAgeMs: 0,
    });
    await using c = await KvClient.connect({ port: server.port });
    await Promise.all(Array.from({ length: 50 }, (_, i) => c.set(`n${i}`, `v${i}`)));
    const values = await Promise.all(Array.from({ length: 50 }, (_, i) => c.getString(`n${i}`)));
    expect(values).toEqual(Array.from({ length: 50 }, (_, i) => `v${i}`));
    expect(server.counters.get(Counter.dynamoPutItem)).toBe(50);
    expect(server.counters.get(Counter.dynamoUpdateItem)).toBe(0);
    expect(server.counters.get(Counter.dynamoGetItem)).toBe(50);
    expect(server.counters.get(Counter.dynamoBatchWriteItem)).toBe(0);
    // One key for the startup check, then one per set.
    expect(server.counters.get(Counter.kmsGenerateDataKey)).toBe(51);
    expect(server.counters.get(Counter.kmsDecrypt)).toBe(50);
  });

  test("sets from many connections are coalesced into BatchWriteItem calls, counted on the wire to DynamoDB", async () => {
    await using proxy = new FaultProxy(backends.ddb.endpoint);
    const calls = new Map<string, number>();
    proxy.rule = (op) => {
      calls.set(op, (calls.get(op) ?? 0) + 1);
      return undefined;
    };
    await using server = await startTestServer({ ...dynamoConfig(), dynamodbEndpoint: proxy.endpoint });
    const clients = await Promise.all(Array.from({ length: 20 }, () => KvClient.connect({ port: server.port })));
    calls.clear();
    // Twenty connections, each with ten sets in flight: 200 sets of 200 keys.
    const versions = await Promise.all(
      clients.flatMap((c, i) => Array.from({ length: 10 }, (_, j) => c.set(`w${i}-${j}`, `v${i}-${j}`))),
    );
    const sets = 200;
    const batches = calls.get("BatchWriteItem") ?? 0;
    expect(calls.get("UpdateItem") ?? 0).toBe(0);
    expect(calls.get("PutItem") ?? 0).toBe(0);
    // 25 items a call at best; far fewer calls than sets means batches carried several connections' sets.
    expect(batches).toBeGreaterThanOrEqual(sets / 25);
    expect(batches).toBeLessThanOrEqual(sets / 4);
    // Every set answered its own version, and every value reads back with it.
    expect(new Set(versions).size).toBe(sets);
    const read = await clients[0]?.getVersioned("w7-3");
    expect(read?.version).toBe(versions[7 * 10 + 3] as number);
    expect(await clients[3]?.getString("w19-9")).toBe("v19-9");
    await Promise.all(clients.map((c) => c.close()));
  });

  test("gets from many connections are coalesced into BatchGetItem calls", async () => {
    await using server = await startTestServer(dynamoConfig());
    const clients = await Promise.all(Array.from({ length: 20 }, () => KvClient.connect({ port: server.port })));
    await Promise.all(clients.map((c, i) => c.set(`m${i}`, `v${i}`)));
    const before = server.counters.get(Counter.dynamoBatchGetItem);
    const singleBefore = server.counters.get(Counter.dynamoGetItem);
    const got = await Promise.all(clients.flatMap((c) => Array.from({ length: 20 }, (_, i) => c.getString(`m${i}`))));
    expect(got).toEqual(Array.from({ length: 20 }).flatMap(() => Array.from({ length: 20 }, (_, i) => `v${i}`)));
    expect(server.counters.get(Counter.dynamoGetItem) - singleBefore).toBe(0);
    expect(server.counters.get(Counter.dynamoBatchGetItem) - before).toBeLessThan(400);
    await Promise.all(clients.map((c) => c.close()));
  });

  test("a graceful stop answers sets in flight, and another server on the table reads them", async () => {
    const table = `durable-${randomBytes(4).toString("hex")}`;
    const n = 100;
    const arrived = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    let seen = 0;
    // Holds every write at the store until the stop has begun, so all n are in flight during it.
    const hold = (inner: KvStore): KvStore =>
      wrapping(inner, {
        set: async (k, v) => {
          if (++seen === n) arrived.resolve();
          await gate.promise;
          return inner.set(k, v);
        },
      });
    const server = await startTestServer(dynamoConfig(table), { wrapStore: hold });
    const c = await KvClient.connect({ port: server.port });
    const pending = Array.from({ length: n }, (_, i) => c.set(`d${i}`, `value ${i}`));
    await arrived.promise;
    const stopped = server.stop();
    gate.resolve();
    await Promise.all(pending);
    await stopped;
    await c.close();
    await using again = await startTestServer(dynamoConfig(table));
    await using c2 = await KvClient.connect({ port: again.port });
    for (let i = 0; i < n; i++) expect(await c2.getString(`d${i}`)).toBe(`value ${i}`);
  });

  test("a tampered ciphertext answers internal, never wrong bytes", async () => {
    const table = `tamper-${randomBytes(4).toString("hex")}`;
    await using server = await startTestServer(dynamoConfig(table));
    await using c = await KvClient.connect({ port: server.port });
    await c.set("victim", "original value");
    const key = { pk: { B: headPk(enc.encode("victim")) } };
    const item = (await backends.client.send(new GetItemCommand({ TableName: table, Key: key }))).Item;
    const ct = Uint8Array.from(item?.ct?.B ?? []);
    ct[0] = (ct[0] as number) ^ 0x01;
    await backends.client.send(new PutItemCommand({ TableName: table, Item: { ...item, ct: { B: ct } } }));
    await expectInternal(c.get("victim"), ErrorCode.Integrity);
    // The connection stays usable.
    await c.set("other", "fine");
    expect(await c.getString("other")).toBe("fine");
  });

  test("an item copied to another key answers internal, so ciphertext cannot be moved", async () => {
    const table = `move-${randomBytes(4).toString("hex")}`;
    await using server = await startTestServer(dynamoConfig(table));
    await using c = await KvClient.connect({ port: server.port });
    await c.set("alice", "alice's secret");
    await c.set("bob", "bob's value");
    const alice = (
      await backends.client.send(
        new GetItemCommand({ TableName: table, Key: { pk: { B: headPk(enc.encode("alice")) } } }),
      )
    ).Item;
    await backends.client.send(
      new PutItemCommand({ TableName: table, Item: { ...alice, pk: { B: headPk(enc.encode("bob")) } } }),
    );
    await expectInternal(c.get("bob"), ErrorCode.Integrity);
  });

  test("an item of an unknown format or with a corrupted data key answers internal", async () => {
    const table = `fmt-${randomBytes(4).toString("hex")}`;
    await using server = await startTestServer(dynamoConfig(table));
    await using c = await KvClient.connect({ port: server.port });
    await c.set("x", "y");
    const key = { pk: { B: headPk(enc.encode("x")) } };
    const item = (await backends.client.send(new GetItemCommand({ TableName: table, Key: key }))).Item;
    await backends.client.send(new PutItemCommand({ TableName: table, Item: { ...item, fmt: { N: "99" } } }));
    await expectInternal(c.get("x"), ErrorCode.Integrity);
    const dk = Uint8Array.from(item?.dk?.B ?? []);
    dk[dk.length - 1] = (dk[dk.length - 1] as number) ^ 0x01;
    await backends.client.send(new PutItemCommand({ TableName: table, Item: { ...item, dk: { B: dk } } }));
    await expectInternal(c.get("x"), ErrorCode.Integrity);
  });

  test("when DynamoDB fails, sets and gets answer internal, never a false ok", async () => {
    const table = `gone-${randomBytes(4).toString("hex")}`;
    await using server = await startTestServer(dynamoConfig(table));
    await using c = await KvClient.connect({ port: server.port });
    await c.set("k", "v");
    await backends.client.send(new DeleteTableCommand({ TableName: table }));
    await expectInternal(c.set("k", "v2"), ErrorCode.Storage);
    await expectInternal(c.get("k"), ErrorCode.Storage);
  });

  test("a restored copy of a table is readable with --encryption-table naming the original, and only then", async () => {
    const original = `orig-${randomBytes(4).toString("hex")}`;
    const restored = `restored-${randomBytes(4).toString("hex")}`;
    const big = new Uint8Array(randomBytes(900 * 1024));
    {
      await using server = await startTestServer(dynamoConfig(original));
      await using c = await KvClient.connect({ port: server.port });
      await c.set("small", "kept across the restore");
      await c.set("big", big);
    }
    // A point-in-time restore creates a new table with the same items; copy them to simulate one.
    await using copy = await startTestServer(dynamoConfig(restored));
    const items = (await backends.client.send(new ScanCommand({ TableName: original }))).Items ?? [];
    for (const item of items) await backends.client.send(new PutItemCommand({ TableName: restored, Item: item }));

    await using c1 = await KvClient.connect({ port: copy.port });
    await expectInternal(c1.get("small"), ErrorCode.Integrity);

    await using served = await startTestServer({ ...dynamoConfig(restored), encryptionTable: original });
    await using c2 = await KvClient.connect({ port: served.port });
    expect(await c2.getString("small")).toBe("kept across the restore");
    expect(await c2.get("big")).toEqual(big);
    await c2.set("after", "written to the restored table");
    expect(await c2.getString("after")).toBe("written to the restored table");
  });

  test("a server whose KMS key does not exist fails to start with a clear reason", async () => {
    let caught: unknown;
    try {
      await startTestServer({ ...dynamoConfig(), kmsKeyId: "0b1c2d3e-0000-0000-0000-000000000000" });
    } catch (err) {
      caught = err;
    }
    expect((caught as Error).name).toBe("NotFoundException");
  });
});
