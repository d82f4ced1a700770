import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { KvClient } from "../../client/kv-client.js";
import { headPk } from "../../src/store/item-format.js";
import { MemoryStore } from "../../src/store/memory-store.js";
import { VERSION_BASE, VersionClock } from "../../src/store/version-clock.js";
import { decodeResponse, encodeGetRequest } from "../../src/wire/client-codec.js";
import { GetError, SetError } from "../../src/wire/envelope.js";
import { onBackends, storeConfigs, useBackends } from "../support/backends.js";
import { codeOf } from "../support/code-of.js";
import { FaultProxy } from "../support/fault-proxy.js";
import { RawConnection, startTestServer } from "../support/harness.js";
import { patterned, same } from "../support/values.js";
import { msg } from "../support/wire.js";

// Starts DynamoDB Local and servers; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(120_000);

const backends = useBackends();
const dec = new TextDecoder();

const table = () => `ver-${randomBytes(6).toString("hex")}`;

const STORES = storeConfigs(backends, "ver");

for (const [name, config] of Object.entries(STORES)) {
  describe(`versions and conditional writes on the ${name} store`, () => {
    test("every write gives the key a new version, the one a get reports", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      expect(await c.getVersioned("k")).toBeUndefined();
      const written = await c.set("k", "one");
      const first = await c.getVersioned("k");
      expect(dec.decode(first?.value)).toBe("one");
      // A plain set answers the version it wrote: the one a get then reports.
      expect(first?.version).toBe(written as number);
      expect(first?.version).toBeGreaterThanOrEqual(VERSION_BASE);
      expect(Number.isSafeInteger(first?.version)).toBe(true);
      await c.set("k", "two");
      const second = await c.getVersioned("k");
      expect(second?.version).not.toBe(first?.version as number);
      const third = await c.set("k", "three", { ifVersion: second?.version as number });
      expect(third).not.toBe(second?.version as number);
      expect(await c.getVersioned("k")).toEqual({ value: new TextEncoder().encode("three"), version: third as number });
      // A plain get still answers the seed's shape, without a version.
      expect(await c.getString("k")).toBe("three");
    });

    test("set-if-absent writes once and then conflicts, leaving the first value", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      const version = await c.set("once", "first", { ifAbsent: true });
      expect(typeof version).toBe("number");
      expect(await codeOf(c.set("once", "second", { ifAbsent: true }))).toBe("KV_ERR_CONFLICT");
      expect(await c.getVersioned("once")).toEqual({
        value: new TextEncoder().encode("first"),
        version: version as number,
      });
    });

    test("set-if-version with a stale version conflicts and writes nothing", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      await c.set("cas", "a");
      const read = await c.getVersioned("cas");
      await c.set("cas", "b");
      expect(await codeOf(c.set("cas", "c", { ifVersion: read?.version as number }))).toBe("KV_ERR_CONFLICT");
      expect(await c.getString("cas")).toBe("b");
      // A version on a key that has none conflicts too.
      expect(await codeOf(c.set("absent", "x", { ifVersion: read?.version as number }))).toBe("KV_ERR_CONFLICT");
      expect(await c.exists("absent")).toBe(false);
    });

    test("a compare-and-set on the version a blind set answered succeeds without a read", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      const blind = (await c.set("blind", "a")) as number;
      const next = (await c.set("blind", "b", { ifVersion: blind })) as number;
      expect(next).not.toBe(blind);
      expect(await c.getVersioned("blind")).toEqual({ value: new TextEncoder().encode("b"), version: next });
      // The version it replaced is spent: a second compare-and-set on it conflicts.
      expect(await codeOf(c.set("blind", "c", { ifVersion: blind }))).toBe("KV_ERR_CONFLICT");
    });

    test("a blind set between a read and a compare-and-set makes the compare-and-set conflict", async () => {
      // The blind set comes from another connection (and on DynamoDB another server), as in a real race.
      const settings = config();
      await using a = await startTestServer(settings);
      await using b = name === "memory" ? undefined : await startTestServer(settings);
      await using reader = await KvClient.connect({ port: a.port });
      await using writer = await KvClient.connect({ port: (b ?? a).port });
      for (let i = 0; i < 20; i++) {
        await writer.set("race", `base${i}`);
        const read = (await reader.getVersioned("race"))?.version as number;
        const blind = (await writer.set("race", `blind${i}`)) as number;
        expect(blind).not.toBe(read);
        expect(await codeOf(reader.set("race", `cas${i}`, { ifVersion: read }))).toBe("KV_ERR_CONFLICT");
        expect(await reader.getString("race")).toBe(`blind${i}`);
      }
    });

    test("a key deleted and set again gets a version it never had, so a stale compare-and-set conflicts", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      await c.set("gone", "a");
      for (let i = 0; i < 5; i++) await c.set("gone", `a${i}`);
      const before = (await c.getVersioned("gone"))?.version as number;
      expect(await c.delete("gone")).toBe(true);
      expect(await codeOf(c.set("gone", "stale", { ifVersion: before }))).toBe("KV_ERR_CONFLICT");
      await c.set("gone", "b");
      expect((await c.getVersioned("gone"))?.version).not.toBe(before);
    });

    test("two clients incrementing one counter with read-modify-write lose no update", async () => {
      // On DynamoDB the two clients talk to two servers on one table: conditions hold across nodes.
      // (A memory store is one process's own, so there both clients share one server.)
      const settings = config();
      await using a = await startTestServer(settings);
      await using b = name === "memory" ? undefined : await startTestServer(settings);
      await using ca = await KvClient.connect({ port: a.port });
      await using cb = await KvClient.connect({ port: (b ?? a).port });
      await ca.set("counter", "0", { ifAbsent: true });
      const rounds = name === "memory" ? 200 : 60;
      let conflicts = 0;
      const increment = async (c: KvClient) => {
        for (let i = 0; i < rounds; i++) {
          for (;;) {
            const read = await c.getVersioned("counter");
            const next = String(Number(dec.decode(read?.value)) + 1);
            const code = await codeOf(c.set("counter", next, { ifVersion: read?.version as number }));
            if (code === undefined) break;
            expect(code).toBe("KV_ERR_CONFLICT");
            conflicts++;
          }
        }
      };
      await Promise.all([increment(ca), increment(cb)]);
      expect(await ca.getString("counter")).toBe(String(2 * rounds));
      expect(await cb.getString("counter")).toBe(String(2 * rounds));
      // The test means something only if the two raced.
      if (name === "dynamodb") expect(conflicts).toBeGreaterThan(0);
    });

    test("a conditional write of a chunked value conflicts cleanly and succeeds on the right version", async () => {
      await using server = await startTestServer(config());
      await using c = await KvClient.connect({ port: server.port });
      const big = patterned(900 * 1024, 7);
      const v1 = (await c.set("big", big, { ifAbsent: true })) as number;
      expect(await codeOf(c.set("big", patterned(900 * 1024, 8), { ifAbsent: true }))).toBe("KV_ERR_CONFLICT");
      expect(same(await c.get("big"), big)).toBe(true);
      const replacement = patterned(1200 * 1024, 9);
      const v2 = await c.set("big", replacement, { ifVersion: v1 });
      expect(v2).not.toBe(v1);
      const read = await c.getVersioned("big");
      expect(read?.version).toBe(v2 as number);
      expect(same(read?.value, replacement)).toBe(true);
    });
  });
}

describe("the version clock", () => {
  test("one clock never repeats a version, even from the same seed's start", () => {
    const clock = new VersionClock((into) => into.fill(7));
    const seen = new Set(Array.from({ length: 200_000 }, () => clock.next()));
    expect(seen.size).toBe(200_000);
  });

  test("two clocks (two servers) share no version in their first 100,000 each", () => {
    const a = new VersionClock();
    const b = new VersionClock();
    const ofA = new Set(Array.from({ length: 100_000 }, () => a.next()));
    for (let i = 0; i < 100_000; i++) expect(ofA.has(b.next())).toBe(false);
  });

  test("versions are safe integers at or above 2^52, above every counter version written before", () => {
    const clock = new VersionClock();
    for (let i = 0; i < 10_000; i++) {
      const v = clock.next();
      expect(Number.isSafeInteger(v)).toBe(true);
      expect(v).toBeGreaterThanOrEqual(VERSION_BASE);
    }
  });

  test("a memory-store key written many times, deleted and set again, gets a version it never had", async () => {
    const store = new MemoryStore();
    const key = new TextEncoder().encode("fast");
    const had = new Set<number>();
    for (let i = 0; i < 20_000; i++) had.add(store.setSync(key, Uint8Array.of(i)));
    await store.delete(key);
    expect(had.has(store.setSync(key, Uint8Array.of(1)))).toBe(false);
  });
});

describe("versions on DynamoDB", () => {
  test("an item written before versions existed reads as version 0 and takes a set-if-version of 0", async () => {
    const name = table();
    await using server = await startTestServer(onBackends(backends, name));
    await using c = await KvClient.connect({ port: server.port });
    await c.set("old", "value");
    // Rewrite the head as the previous release wrote it: the same attributes without `v`.
    const { Item } = await backends.client.send(
      new GetItemCommand({ TableName: name, Key: { pk: { B: headPk(new TextEncoder().encode("old")) } } }),
    );
    const legacy = { ...Item };
    delete legacy.v;
    await backends.client.send(new PutItemCommand({ TableName: name, Item: legacy }));
    expect((await c.getVersioned("old"))?.version).toBe(0);
    expect(await c.getString("old")).toBe("value");
    expect(await codeOf(c.set("never", "x", { ifVersion: 0 }))).toBe("KV_ERR_CONFLICT");
    const next = (await c.set("old", "new", { ifVersion: 0 })) as number;
    expect(next).toBeGreaterThan(0);
    expect(await codeOf(c.set("old", "again", { ifVersion: 0 }))).toBe("KV_ERR_CONFLICT");
    expect((await c.getVersioned("old"))?.version).toBe(next);
  });

  test("an item with a counter version from before reads it, takes a compare-and-set on it, and moves above 2^52", async () => {
    const name = table();
    await using server = await startTestServer(onBackends(backends, name));
    await using c = await KvClient.connect({ port: server.port });
    await c.set("counted", "old");
    // The previous release counted versions up from the writer's clock in microseconds.
    const counted = 1_780_000_000_000_042;
    const pk = { B: headPk(new TextEncoder().encode("counted")) };
    const { Item } = await backends.client.send(new GetItemCommand({ TableName: name, Key: { pk } }));
    await backends.client.send(new PutItemCommand({ TableName: name, Item: { ...Item, v: { N: String(counted) } } }));
    expect(await c.getVersioned("counted")).toEqual({ value: new TextEncoder().encode("old"), version: counted });
    expect(await codeOf(c.set("counted", "x", { ifVersion: counted + 1 }))).toBe("KV_ERR_CONFLICT");
    const next = (await c.set("counted", "new", { ifVersion: counted })) as number;
    expect(next).toBeGreaterThanOrEqual(VERSION_BASE);
    expect(await c.getVersioned("counted")).toEqual({ value: new TextEncoder().encode("new"), version: next });
    expect(await codeOf(c.set("counted", "again", { ifVersion: counted }))).toBe("KV_ERR_CONFLICT");
  });

  test("a conditional write whose answer was lost is recognised as landed on its retry, not called a conflict", async () => {
    await using proxy = new FaultProxy(backends.ddb.endpoint);
    await using server = await startTestServer({
      ...onBackends(backends, table()),
      dynamodbEndpoint: proxy.endpoint,
    });
    await using c = await KvClient.connect({ port: server.port });
    const v1 = (await c.set("lost", "a", { ifAbsent: true })) as number;
    // The next UpdateItem lands, but its answer is lost: the retry finds its condition failing on its own write.
    let updates = 0;
    proxy.rule = (op) => (op === "UpdateItem" && ++updates === 1 ? "lost" : undefined);
    const v2 = await c.set("lost", "b", { ifVersion: v1 });
    expect(v2).not.toBe(v1);
    expect(updates).toBe(2);
    expect(await c.getVersioned("lost")).toEqual({ value: new TextEncoder().encode("b"), version: v2 as number });
  });
});

/** A framed envelope: varint length, then `body`. */
function framed(body: Uint8Array): Uint8Array {
  const w = new BinaryWriter();
  w.uint32(body.length);
  return new Uint8Array([...w.finish(), ...body]);
}

/** `req_envelope{set_request_t, set_req{...before, req{key, value}, ...after}}`, fields given as raw writers. */
function conditionalSet(
  key: string,
  value: Uint8Array,
  before: (w: BinaryWriter) => void,
  after = (_: BinaryWriter) => {},
) {
  const data = msg([1, new TextEncoder().encode(key)], [2, value]);
  const setReq = new BinaryWriter();
  before(setReq);
  setReq.tag(1, WireType.LengthDelimited).bytes(data);
  after(setReq);
  return framed(msg([1, 1], [2, setReq.finish()]));
}

describe("conditional writes refuse what they cannot honour", () => {
  test("both conditions at once, or a version above 2^53, are answered internal on a connection that stays open", async () => {
    await using server = await startTestServer({ store: "memory" });
    await using conn = await RawConnection.open(server.port);
    conn.send(
      conditionalSet("k", Uint8Array.of(1), (w) =>
        w.tag(2, WireType.Varint).uint64(5).tag(3, WireType.Varint).bool(true),
      ),
    );
    expect(decodeResponse((await conn.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Internal });
    conn.send(conditionalSet("k", Uint8Array.of(1), (w) => w.tag(2, WireType.Varint).uint64(2n ** 60n)));
    expect(decodeResponse((await conn.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Internal });
    // Nothing was written, and the connection still serves.
    conn.send(encodeGetRequest(new TextEncoder().encode("k")));
    expect(decodeResponse((await conn.next()) as Uint8Array)).toEqual({ kind: "get", error: GetError.NotFound });
  });

  test("a streamed set whose condition follows its value is refused, never written unconditionally", async () => {
    await using server = await startTestServer({ store: "memory", streamFromBytes: 64 * 1024 });
    await using c = await KvClient.connect({ port: server.port });
    await c.set("s", "old");
    await using conn = await RawConnection.open(server.port);
    const value = patterned(256 * 1024, 3);
    conn.send(
      conditionalSet(
        "s",
        value,
        () => {},
        (w) => w.tag(3, WireType.Varint).bool(true),
      ),
    );
    expect(decodeResponse((await conn.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Internal });
    expect(await c.getString("s")).toBe("old");
  });

  test("a large conditional set with its condition first is kept whole and applied conditionally", async () => {
    await using server = await startTestServer({ ...onBackends(backends, table()), streamFromBytes: 64 * 1024 });
    await using c = await KvClient.connect({ port: server.port });
    const value = patterned(600 * 1024, 4);
    const version = (await c.set("L", value, { ifAbsent: true })) as number;
    expect(await codeOf(c.set("L", patterned(600 * 1024, 5), { ifAbsent: true }))).toBe("KV_ERR_CONFLICT");
    const read = await c.getVersioned("L");
    expect(read?.version).toBe(version);
    expect(same(read?.value, value)).toBe(true);
  });
});

for (const [name, config] of Object.entries(STORES)) {
  describe(`conditional PUTs over HTTP on the ${name} store`, () => {
    test("GET answers the version as an ETag; If-Match and If-None-Match: * make PUTs conditional, 412 on conflict", async () => {
      await using server = await startTestServer({ ...config(), httpPort: 0 });
      const url = `http://127.0.0.1:${server.httpPort}/v1/keys/doc`;
      const put = (body: string, headers: Record<string, string> = {}) => fetch(url, { method: "PUT", body, headers });

      const created = await put("v1", { "if-none-match": "*" });
      expect(created.status).toBe(204);
      const etag1 = created.headers.get("etag") as string;
      expect(etag1).toMatch(/^"\d+"$/);
      expect((await put("again", { "if-none-match": "*" })).status).toBe(412);

      const got = await fetch(url);
      expect(await got.text()).toBe("v1");
      expect(got.headers.get("etag")).toBe(etag1);

      const updated = await put("v2", { "if-match": etag1 });
      expect(updated.status).toBe(204);
      const etag2 = updated.headers.get("etag") as string;
      expect(etag2).not.toBe(etag1);
      const stale = await put("v3", { "if-match": etag1 });
      expect(stale.status).toBe(412);
      expect(await stale.json()).toMatchObject({ error: "conflict" });
      expect(await (await fetch(url)).text()).toBe("v2");

      // An unconditional PUT still works, gives a new version and answers it as its ETag.
      const blind = await put("v4");
      expect(blind.status).toBe(204);
      const etag4 = blind.headers.get("etag") as string;
      expect(etag4).not.toBe(etag2);
      expect((await fetch(url)).headers.get("etag")).toBe(etag4);
      expect((await put("v5", { "if-match": etag4 })).status).toBe(204);
    });

    test("condition headers it cannot honour are refused with 400, never ignored", async () => {
      await using server = await startTestServer({ ...config(), httpPort: 0 });
      const url = `http://127.0.0.1:${server.httpPort}/v1/keys/h`;
      for (const headers of <Record<string, string>[]>[
        { "if-match": "*" },
        { "if-match": 'W/"12"' },
        { "if-match": '"1", "2"' },
        { "if-match": '"99999999999999999"' },
        { "if-none-match": '"12"' },
        { "if-match": '"1"', "if-none-match": "*" },
      ]) {
        const res = await fetch(url, { method: "PUT", body: "x", headers });
        expect({ headers, status: res.status }).toEqual({ headers, status: 400 });
      }
      expect((await fetch(url)).status).toBe(404);
    });
  });
}
