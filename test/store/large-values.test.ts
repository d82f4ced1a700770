import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { type AttributeValue, GetItemCommand, PutItemCommand, ScanCommand } from "@aws-sdk/client-dynamodb";
import { KvClient } from "../../client/kv-client.js";
import { Attr, CHUNK_BYTES, chunkPk, headPk, ItemKind } from "../../src/store/item-format.js";
import { ErrorCode } from "../../src/wire/errors.js";
import { onBackends, useBackends } from "../support/backends.js";
import { startTestServer } from "../support/harness.js";
import { spawnServer } from "../support/process.js";
import { patterned, same } from "../support/values.js";
import { expectInternal } from "../support/wire.js";

// Starts DynamoDB Local and moves tens of MiB through it; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(120_000);

const backends = useBackends();
const enc = new TextEncoder();
const MiB = 1024 * 1024;

function config(table: string, extra: Record<string, unknown> = {}) {
  return { ...onBackends(backends, table), ...extra };
}

/** Flags for a `bun run server` child on the shared backends. */
function childArgs(table: string): string[] {
  return [
    "--port",
    "0",
    "--table",
    table,
    "--kms-key-id",
    "alias/kvs-test",
    "--dynamodb-endpoint",
    backends.ddb.endpoint,
    "--kms-endpoint",
    backends.kms.endpoint,
    "--log-level",
    "error",
  ];
}

function freshTable(): string {
  return `large-${randomBytes(4).toString("hex")}`;
}

async function chunkItems(table: string): Promise<Record<string, AttributeValue>[]> {
  const items: Record<string, AttributeValue>[] = [];
  let start: Record<string, AttributeValue> | undefined;
  do {
    const page = await backends.client.send(new ScanCommand({ TableName: table, ExclusiveStartKey: start }));
    for (const item of page.Items ?? []) if (item.pk?.B?.[0] === ItemKind.chunk) items.push(item);
    start = page.LastEvaluatedKey;
  } while (start);
  return items;
}

async function head(table: string, key: string): Promise<Record<string, AttributeValue> | undefined> {
  return (
    await backends.client.send(new GetItemCommand({ TableName: table, Key: { pk: { B: headPk(enc.encode(key)) } } }))
  ).Item;
}

describe("values of any size up to the maximum", () => {
  test("round-trip byte-exact from 1 byte through the single-item limit to 20 MB", async () => {
    const table = freshTable();
    await using server = await startTestServer(config(table));
    await using c = await KvClient.connect({ port: server.port });
    const sizes = [
      1,
      399 * 1000,
      399 * 1024,
      400 * 1000,
      400 * 1024,
      401 * 1024,
      CHUNK_BYTES,
      CHUNK_BYTES + 1,
      MiB,
      20 * MiB,
    ];
    for (const size of sizes) {
      const v = new Uint8Array(randomBytes(size));
      await c.set(`size-${size}`, v);
      expect(same(await c.get(`size-${size}`), v)).toBe(true);
    }
    // Small values stay one item; the rest are chunked.
    expect((await head(table, "size-1"))?.fmt?.N).toBe("1");
    expect((await head(table, `size-${399 * 1000}`))?.fmt?.N).toBe("1");
    expect((await head(table, `size-${401 * 1024}`))?.fmt?.N).toBe("2");
    expect((await head(table, `size-${20 * MiB}`))?.n?.N).toBe(String(Math.ceil((20 * MiB) / CHUNK_BYTES)));
  });

  test("the default maximum, 64 MiB exactly, round-trips, and one byte more is refused cleanly", async () => {
    const table = freshTable();
    await using server = await startTestServer(config(table));
    await using c = await KvClient.connect({ port: server.port });
    const max = new Uint8Array(64 * MiB);
    for (let i = 0; i < max.length; i += 997) max[i] = i & 0xff;
    await c.set("max", max);
    expect(same(await c.get("max"), max)).toBe(true);
    const chunksBefore = (await chunkItems(table)).length;

    await c.set("other", "kept");
    const over = new Uint8Array(64 * MiB + 1);
    await expectInternal(c.set("other", over), ErrorCode.ValueTooLarge);
    // No partial write, and the connection is still usable.
    expect(await c.getString("other")).toBe("kept");
    expect((await chunkItems(table)).length).toBe(chunksBefore);
  });

  test("overwrites switch between small and large values and clean up replaced chunks", async () => {
    const table = freshTable();
    await using server = await startTestServer(config(table));
    await using c = await KvClient.connect({ port: server.port });
    const big1 = patterned(3 * MiB, 1);
    const big2 = patterned(2 * MiB, 2);
    await c.set("k", "small");
    await c.set("k", big1);
    expect(same(await c.get("k"), big1)).toBe(true);
    await c.set("k", big2);
    expect(same(await c.get("k"), big2)).toBe(true);
    // The replaced version's chunks are deleted after the commit; once writes settle only big2's remain.
    await server.stop();
    expect((await chunkItems(table)).length).toBe(Math.ceil((2 * MiB) / CHUNK_BYTES));

    await using again = await startTestServer(config(table));
    await using c2 = await KvClient.connect({ port: again.port });
    await c2.set("k", "small again");
    expect(await c2.getString("k")).toBe("small again");
    // A batched small write cannot learn what it replaced: big2's chunks are orphans until the sweep.
    const result = await again.sweepOrphans(0);
    expect(result.deleted).toBe(Math.ceil((2 * MiB) / CHUNK_BYTES));
    expect((await chunkItems(table)).length).toBe(0);
    expect(await c2.getString("k")).toBe("small again");
  });
});

describe("atomic replace", () => {
  test("concurrent overwrites and reads of one large key, through two server processes, never see a torn value", async () => {
    const table = freshTable();
    // Writers go through a separate OS process, readers through this one: reads cannot be served from
    // the writing process's pending writes, so every read goes to DynamoDB.
    await using writerServer = await spawnServer(childArgs(table));
    await using readerServer = await startTestServer(config(table));
    const values = [patterned(1 * MiB + 5, 1), patterned(1 * MiB + 5, 2), patterned(1 * MiB + 5, 3)];
    await using setup = await KvClient.connect({ port: writerServer.port });
    await setup.set("hot", values[0] as Uint8Array);

    const writers = await Promise.all([1, 2].map(() => KvClient.connect({ port: writerServer.port })));
    const readers = await Promise.all([1, 2, 3].map(() => KvClient.connect({ port: readerServer.port })));
    let done = false;
    const writes = writers.map(async (w, wi) => {
      for (let i = 0; i < 6; i++) await w.set("hot", values[(i + wi) % values.length] as Uint8Array);
    });
    let reads = 0;
    const readLoops = readers.map(async (r) => {
      while (!done) {
        const got = await r.get("hot");
        reads++;
        expect(values.some((v) => same(got, v))).toBe(true);
      }
    });
    await Promise.all(writes);
    done = true;
    await Promise.all(readLoops);
    expect(reads).toBeGreaterThan(0);
    await Promise.all([...writers, ...readers].map((c) => c.close()));
  });

  test("two server processes writing the same large key leave exactly one whole value and no stray chunks", async () => {
    const table = freshTable();
    await using a = await startTestServer(config(table));
    // The second server is a separate OS process on the same table, key and endpoints.
    await using b = await spawnServer(childArgs(table));
    await using ca = await KvClient.connect({ port: a.port });
    await using cb = await KvClient.connect({ port: b.port });
    const va = patterned(900 * 1024, 7);
    const vb = patterned(1300 * 1024, 8);
    await Promise.all([
      (async () => {
        for (let i = 0; i < 4; i++) await ca.set("shared", va);
      })(),
      (async () => {
        for (let i = 0; i < 4; i++) await cb.set("shared", vb);
      })(),
    ]);
    const final = await ca.get("shared");
    expect(same(final, va) || same(final, vb)).toBe(true);
    await a.sweepOrphans(0);
    const liveChunks = Number((await head(table, "shared"))?.n?.N);
    expect((await chunkItems(table)).length).toBe(liveChunks);
  });

  test("a failure between writing the chunks and switching the head leaves the old value, and the sweep removes the orphans", async () => {
    const table = freshTable();
    let fail = false;
    await using server = await startTestServer(config(table), {
      faults: {
        beforeCommit: () => {
          if (fail) throw new Error("injected crash before commit");
        },
      },
    });
    await using c = await KvClient.connect({ port: server.port });
    const old = patterned(2 * MiB, 1);
    await c.set("k", old);
    fail = true;
    await expectInternal(c.set("k", patterned(3 * MiB, 2)), ErrorCode.Storage);
    expect(same(await c.get("k"), old)).toBe(true);

    const oldChunks = Math.ceil((2 * MiB) / CHUNK_BYTES);
    const orphans = Math.ceil((3 * MiB) / CHUNK_BYTES);
    expect((await chunkItems(table)).length).toBe(oldChunks + orphans);
    // Young chunks are left alone: they may belong to a set still in progress.
    expect((await server.sweepOrphans()).deleted).toBe(0);
    expect((await server.sweepOrphans(0)).deleted).toBe(orphans);
    expect((await chunkItems(table)).length).toBe(oldChunks);
    expect(same(await c.get("k"), old)).toBe(true);
  });
});

describe("damaged chunks", () => {
  async function setUp() {
    const table = freshTable();
    const server = await startTestServer(config(table));
    const c = await KvClient.connect({ port: server.port });
    await c.set("v", patterned(2 * MiB, 4));
    const ver = (await head(table, "v"))?.ver?.B as Uint8Array;
    const chunk = async (i: number) =>
      (await backends.client.send(new GetItemCommand({ TableName: table, Key: { pk: { B: chunkPk(ver, i) } } })))
        .Item as Record<string, AttributeValue>;
    const put = (item: Record<string, AttributeValue>) =>
      backends.client.send(new PutItemCommand({ TableName: table, Item: item }));
    return { table, server, c, ver, chunk, put };
  }

  test("a tampered chunk answers internal", async () => {
    const { server, c, chunk, put } = await setUp();
    const item = await chunk(2);
    const ct = Uint8Array.from(item.ct?.B ?? []);
    ct[100] = (ct[100] as number) ^ 0x40;
    await put({ ...item, ct: { B: ct } });
    await expectInternal(c.get("v"), ErrorCode.Integrity);
    await c.set("fine", "still works");
    expect(await c.getString("fine")).toBe("still works");
    await c.close();
    await server.stop();
  });

  test("swapped chunks answer internal", async () => {
    const { server, c, chunk, put } = await setUp();
    const [zero, one] = [await chunk(0), await chunk(1)];
    await put({ ...zero, [Attr.iv]: one[Attr.iv] as AttributeValue, [Attr.ct]: one[Attr.ct] as AttributeValue });
    await put({ ...one, [Attr.iv]: zero[Attr.iv] as AttributeValue, [Attr.ct]: zero[Attr.ct] as AttributeValue });
    await expectInternal(c.get("v"), ErrorCode.Integrity);
    await c.close();
    await server.stop();
  });

  test("a missing chunk of the current version answers internal", async () => {
    const { table, server, c, ver } = await setUp();
    const { DeleteItemCommand } = await import("@aws-sdk/client-dynamodb");
    await backends.client.send(new DeleteItemCommand({ TableName: table, Key: { pk: { B: chunkPk(ver, 3) } } }));
    await expectInternal(c.get("v"), ErrorCode.Integrity);
    await c.close();
    await server.stop();
  });
});
