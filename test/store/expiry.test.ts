import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { DescribeTimeToLiveCommand, GetItemCommand, ScanCommand, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { KvClient } from "../../client/kv-client.js";
import { Counter } from "../../src/metrics.js";
import { startServer } from "../../src/server.js";
import { CHUNK_BYTES, headPk } from "../../src/store/item-format.js";
import { decodeResponse } from "../../src/wire/client-codec.js";
import { ErrorCode } from "../../src/wire/errors.js";
import { onBackends, storeConfigs, useBackends } from "../support/backends.js";
import { CapturingLog } from "../support/capturing-log.js";
import { codeOf } from "../support/code-of.js";
import { RawConnection, startTestServer, testConfig } from "../support/harness.js";
import { patterned, same } from "../support/values.js";
import { expectInternal } from "../support/wire.js";

// Starts DynamoDB Local and servers; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(120_000);

const backends = useBackends();
const enc = new TextEncoder();
const dec = new TextDecoder();
const T0 = 1_800_000_000_000;

/** A clock the test moves: expiry is decided by it, to the ms. */
function testClock(): { clock: () => number; at: (ms: number) => void } {
  let now = T0;
  return { clock: () => now, at: (ms) => (now = T0 + ms) };
}

const table = () => `exp-${randomBytes(6).toString("hex")}`;

const STORES = storeConfigs(backends, "exp");

for (const [name, config] of Object.entries(STORES)) {
  describe(`expiry over TCP and HTTP on the ${name} store`, () => {
    test("a value set with a TTL is absent to get, exists, delete and listings from the ms it expires", async () => {
      const { clock, at } = testClock();
      await using server = await startTestServer(config(), { clock });
      await using c = await KvClient.connect({ port: server.port });
      await c.set("session", "alive", { ttlMs: 1000 });
      await c.set("config", "forever");
      const batch = await c.mset(
        [
          ["batch-1", "x"],
          ["batch-2", "y"],
        ],
        { ttlMs: 500 },
      );
      expect(batch.every((r) => r.ok)).toBe(true);
      at(999);
      expect(await c.getString("session")).toBe("alive");
      expect(await c.getVersioned("session")).toMatchObject({ expiresAt: T0 + 1000 });
      expect((await c.getVersioned("config"))?.expiresAt).toBeUndefined();
      at(1000);
      expect(await c.get("session")).toBeUndefined();
      expect(await c.getVersioned("session")).toBeUndefined();
      expect(await c.exists("session")).toBe(false);
      expect(await c.delete("session")).toBe(false);
      const keys: string[] = [];
      for await (const k of c.keys()) keys.push(dec.decode(k));
      expect(keys).toEqual(["config"]);
      expect(await c.getString("config")).toBe("forever");
    });

    test("an overwrite without a TTL removes the expiry; set-if-absent takes an expired key; if-version on it conflicts", async () => {
      const { clock, at } = testClock();
      await using server = await startTestServer(config(), { clock });
      await using c = await KvClient.connect({ port: server.port });
      await c.set("k", "v1", { ttlMs: 1000 });
      await c.set("k", "v2");
      at(5000);
      expect(await c.getString("k")).toBe("v2");
      // A conditional write with a TTL, then the same key once it expired.
      const held = (await c.set("lock", "a", { ifAbsent: true, ttlMs: 1000 })) as number;
      expect(await codeOf(c.set("lock", "b", { ifAbsent: true }))).toBe("KV_ERR_CONFLICT");
      at(6000);
      expect(await codeOf(c.set("lock", "c", { ifVersion: held }))).toBe("KV_ERR_CONFLICT");
      const taken = (await c.set("lock", "d", { ifAbsent: true, ttlMs: 500 })) as number;
      expect(await c.getVersioned("lock")).toEqual({ value: enc.encode("d"), version: taken, expiresAt: T0 + 6500 });
      // Compare-and-set without a TTL on a value that has one removes it, conditionally.
      await c.set("lock", "e", { ifVersion: taken });
      at(100_000);
      expect(await c.getString("lock")).toBe("e");
    });

    test("clear does not count expired values", async () => {
      const { clock, at } = testClock();
      await using server = await startTestServer(config(), { clock });
      await using c = await KvClient.connect({ port: server.port });
      await c.set("a", "1", { ttlMs: 10 });
      await c.set("b", "2", { ttlMs: 10_000 });
      await c.set("c", "3");
      at(10);
      expect(await c.clear()).toBe(2);
      expect(await c.get("b")).toBeUndefined();
    });

    test("a TTL out of range is refused with a reason, over TCP and HTTP, and nothing is written", async () => {
      await using server = await startTestServer({ ...config(), httpPort: 0 });
      await using c = await KvClient.connect({ port: server.port });
      await expectInternal(c.set("k", "v", { ttlMs: 3650 * 86_400_000 + 1 }), ErrorCode.BadRequest);
      // ttl_ms 0 as a raw peer sends it: the client refuses to.
      await using raw = await RawConnection.open(server.port);
      raw.send(setFrame(enc.encode("k"), enc.encode("v"), { ttlBefore: 0 }));
      const answer = decodeResponse((await raw.next()) as Uint8Array);
      expect(answer.failure?.reason).toContain("ttl_ms 0");
      expect(await codeOf(Promise.resolve().then(() => c.set("k", "v", { ttlMs: 1.5 })))).toBe("KV_ERR_BAD_REQUEST");
      const http = `http://127.0.0.1:${server.httpPort}`;
      for (const ttl of ["0", "-1", "abc", "1e3", "", "315360000.001", "0.0001"]) {
        const res = await fetch(`${http}/set?k=k&v=v&ttl=${ttl}`);
        expect(res.status).toBe(400);
        expect(((await res.json()) as { message: string }).message).toContain("ttl");
        const put = await fetch(`${http}/v1/keys/k?ttl=${ttl}`, { method: "PUT", body: "v" });
        expect(put.status).toBe(400);
      }
      expect(await c.get("k")).toBeUndefined();
    });

    test("HTTP takes ttl in seconds on /set and PUT, and answers the expiry on GET", async () => {
      const { clock, at } = testClock();
      await using server = await startTestServer({ ...config(), httpPort: 0, adminPort: 0 }, { clock });
      const http = `http://127.0.0.1:${server.httpPort}`;
      expect((await fetch(`${http}/set?k=brief&v=1&ttl=1.5`)).status).toBe(200);
      expect((await fetch(`${http}/v1/keys/rest?ttl=30`, { method: "PUT", body: "2" })).status).toBe(204);
      const got = await fetch(`${http}/v1/keys/brief`);
      expect(got.headers.get("x-expires-at")).toBe(String(T0 + 1500));
      expect(await got.text()).toBe("1");
      at(1500);
      expect((await fetch(`${http}/get?k=brief`)).status).toBe(404);
      expect((await fetch(`${http}/is?k=brief`)).status).toBe(404);
      expect(await (await fetch(`${http}/getKeys`)).json()).toEqual({ keys: ["rest"] });
      expect((await fetch(`${http}/v1/keys/rest`)).headers.get("x-expires-at")).toBe(String(T0 + 30_000));
      // On the memory store the first read frees the value, so later ones find nothing at all to count.
      const metrics = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
      expect(Number(/^kvs_expired_reads_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
    });

    test("large values expire whole, around the streaming threshold, however they were written", async () => {
      const { clock, at } = testClock();
      await using server = await startTestServer({ ...config(), streamFromBytes: 64 * 1024 }, { clock });
      await using c = await KvClient.connect({ port: server.port, maxFrameBytes: 16 * 1024 * 1024 });
      const sizes = [4 * 1024 * 1024 - 1, 4 * 1024 * 1024 + 1, CHUNK_BYTES * 3];
      for (const [i, size] of sizes.entries()) {
        const value = patterned(size, i);
        await c.set(`whole-${i}`, value, { ttlMs: 1000 });
        await c.setFrom(`streamed-${i}`, size, chunksOf(value), { ttlMs: 1000 });
      }
      at(999);
      for (const [i, size] of sizes.entries()) {
        expect(same(await c.get(`whole-${i}`), patterned(size, i))).toBe(true);
        expect(same(await c.get(`streamed-${i}`), patterned(size, i))).toBe(true);
        expect((await c.getVersioned(`streamed-${i}`))?.expiresAt).toBe(T0 + 1000);
      }
      at(1000);
      for (const i of sizes.keys()) {
        expect(await c.get(`whole-${i}`)).toBeUndefined();
        let pieces = 0;
        expect(await c.getTo(`streamed-${i}`, () => void pieces++)).toBe(false);
        expect(pieces).toBe(0);
      }
    });

    test("a streamed set's ttl_ms after its value is refused, not ignored", async () => {
      await using server = await startTestServer({ ...config(), streamFromBytes: 4096 });
      await using raw = await RawConnection.open(server.port);
      raw.send(setFrame(enc.encode("big"), patterned(2 * 1024 * 1024, 1), { ttlAfter: 1000 }));
      const answer = decodeResponse((await raw.next()) as Uint8Array);
      expect(server.counters.get(Counter.streamedFrames)).toBe(1);
      expect(answer.failure?.reason).toContain("ttl_ms must come before its value");
      await using c = await KvClient.connect({ port: server.port });
      expect(await c.get("big")).toBeUndefined();
    });
  });
}

describe("expiry in DynamoDB's items", () => {
  test("the TTL attribute is on the head and every chunk, and DynamoDB's TTL is on for the local table", async () => {
    const name = table();
    const { clock } = testClock();
    await using server = await startTestServer(onBackends(backends, name), { clock });
    await using c = await KvClient.connect({ port: server.port });
    await c.set("small", "v", { ttlMs: 1500 });
    await c.set("large", patterned(CHUNK_BYTES * 2 + 1, 3), { ttlMs: 1500 });
    await c.set("plain", "v");
    const ttl = await backends.client.send(new DescribeTimeToLiveCommand({ TableName: name }));
    expect(ttl.TimeToLiveDescription).toMatchObject({ TimeToLiveStatus: "ENABLED", AttributeName: "ttl" });
    const items = (await backends.client.send(new ScanCommand({ TableName: name }))).Items ?? [];
    const expected = String(Math.ceil((T0 + 1500) / 1000));
    const chunks = items.filter((i) => i.pk?.B?.[0] === 0x01);
    expect(chunks).toHaveLength(3);
    for (const chunk of chunks) expect(chunk.ttl?.N).toBe(expected);
    const head = (key: string) => items.find((i) => same(i.pk?.B, headPk(enc.encode(key))));
    expect(head("small")?.ttl?.N).toBe(expected);
    expect(head("large")?.ttl?.N).toBe(expected);
    expect(head("plain")?.ttl).toBeUndefined();
    // A conditional overwrite without a TTL takes the attribute away (UpdateItem removes it).
    const v = (await c.getVersioned("small"))?.version as number;
    await c.set("small", "w", { ifVersion: v });
    const after = await backends.client.send(
      new GetItemCommand({ TableName: name, Key: { pk: { B: headPk(enc.encode("small")) } } }),
    );
    expect(after.Item?.ttl).toBeUndefined();
    expect(after.Item?.fmt?.N).toBe("1");
  });

  test("an expiry changed in the table makes the get fail authentication instead of reviving the value", async () => {
    const name = table();
    const { clock, at } = testClock();
    const log = new CapturingLog("warn");
    await using server = await startServer(testConfig(onBackends(backends, name)), log.log, { clock });
    await using c = await KvClient.connect({ port: server.port });
    await c.set("small", "secret", { ttlMs: 1000 });
    await c.set("large", patterned(CHUNK_BYTES + 1, 4), { ttlMs: 1000 });
    at(2000);
    expect(await c.get("small")).toBeUndefined();
    // Someone with write access to the table pushes both expiries a day on.
    const revived = String((T0 + 86_400_000) * 10);
    for (const [key, format] of [
      ["small", 1],
      ["large", 2],
    ] as const) {
      await backends.client.send(
        new UpdateItemCommand({
          TableName: name,
          Key: { pk: { B: headPk(enc.encode(key)) } },
          UpdateExpression: "SET fmt = :f",
          ExpressionAttributeValues: { ":f": { N: String(BigInt(revived) + BigInt(format)) } },
        }),
      );
      await expectInternal(c.get(key), ErrorCode.Integrity);
    }
    expect(await log.next(/failed authentication: its ciphertext, or the table, key or expiry/)).toContain(
      "KV_ERR_INTEGRITY",
    );
    // Taking the expiry away altogether fails the same way.
    await backends.client.send(
      new UpdateItemCommand({
        TableName: name,
        Key: { pk: { B: headPk(enc.encode("small")) } },
        UpdateExpression: "SET fmt = :f",
        ExpressionAttributeValues: { ":f": { N: "1" } },
      }),
    );
    await expectInternal(c.get("small"), ErrorCode.Integrity);
  });
});

/** A frame of `set_request` with `ttl_ms` before `req`, after it, or neither. */
function setFrame(key: Uint8Array, value: Uint8Array, ttl: { ttlBefore?: number; ttlAfter?: number }): Uint8Array {
  const data = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(key);
  data.tag(2, WireType.LengthDelimited).bytes(value);
  const setReq = new BinaryWriter();
  if (ttl.ttlBefore !== undefined) setReq.tag(4, WireType.Varint).uint64(ttl.ttlBefore);
  setReq.tag(1, WireType.LengthDelimited).bytes(data.finish());
  if (ttl.ttlAfter !== undefined) setReq.tag(4, WireType.Varint).uint64(ttl.ttlAfter);
  const envelope = new BinaryWriter().tag(1, WireType.Varint).int32(1);
  envelope.tag(2, WireType.LengthDelimited).bytes(setReq.finish());
  return new BinaryWriter().bytes(envelope.finish()).finish();
}

async function* chunksOf(value: Uint8Array): AsyncIterable<Uint8Array> {
  for (let at = 0; at < value.length; at += 256 * 1024) yield value.subarray(at, at + 256 * 1024);
}
