import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import type { Subprocess } from "bun";
import { KvClient } from "../../client/kv-client.js";
import { freePort, waitForPort } from "../../src/local/free-port.js";
import { CHUNK_BYTES } from "../../src/store/item-format.js";
import { codeOf } from "../support/code-of.js";
import { startTestServer } from "../support/harness.js";

// moto starts in a few seconds; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

/**
 * moto is an implementation of the AWS APIs we did not write (Python; present
 * on these machines as `moto_server`). DynamoDB Local and our own KMS endpoint
 * are lenient in places; this checks the server's DynamoDB and KMS calls, the
 * lean data-plane client's JSON included, against a second implementation.
 */
const motoBin = Bun.which("moto_server");
let moto: Subprocess | undefined;
let endpoint = "";

beforeAll(async () => {
  if (motoBin === null) return;
  const port = await freePort();
  moto = Bun.spawn([motoBin, "-H", "127.0.0.1", "-p", String(port)], { stdout: "ignore", stderr: "ignore" });
  let exited = false;
  void moto.exited.then(() => {
    exited = true;
  });
  await waitForPort("127.0.0.1", port, 30_000, () => !exited);
  endpoint = `http://127.0.0.1:${port}`;
});
afterAll(async () => {
  moto?.kill();
  await moto?.exited;
});

describe.skipIf(motoBin === null)("the server on moto's DynamoDB and KMS", () => {
  // The orphan sweep is not run here: moto 5.2's begins_with never matches binary
  // attributes (it compares base64 text), so its Scan filter finds no chunk.
  test("small and chunked values round-trip and overwrite, with batched reads and writes", async () => {
    await using server = await startTestServer({
      store: "dynamodb",
      dynamodbEndpoint: endpoint,
      kmsEndpoint: endpoint,
    });
    await using c = await KvClient.connect({ port: server.port });
    const small = new Uint8Array(randomBytes(3000));
    const large = new Uint8Array(randomBytes(CHUNK_BYTES * 2 + 3));
    await c.set("small", small);
    await c.set(Uint8Array.of(0xff, 0xfe), large);
    // Pipelined on one connection, so the batched reader and writer send several keys per call.
    const keys = Array.from({ length: 60 }, (_, i) => `k${i}`);
    await Promise.all(keys.map((k) => c.set(k, `v-${k}`)));
    expect(await Promise.all(keys.map((k) => c.getString(k)))).toEqual(keys.map((k) => `v-${k}`));
    expect(await c.get("small")).toEqual(small);
    expect(await c.get(Uint8Array.of(0xff, 0xfe))).toEqual(large);
    expect(await c.get("missing")).toBeUndefined();
    await c.set(Uint8Array.of(0xff, 0xfe), "now small");
    expect(await c.getString(Uint8Array.of(0xff, 0xfe))).toBe("now small");
  });

  // Listing and clear are not run here either: moto 5.2's parallel Scan fails on a binary hash
  // key (`is_within_segment` calls `.encode` on bytes: HTTP 500), with or without expiry.
  test("expiry: TTLs, and conditions that treat an expired value as absent", async () => {
    let now = Date.now();
    await using server = await startTestServer(
      {
        store: "dynamodb",
        dynamodbEndpoint: endpoint,
        kmsEndpoint: endpoint,
        table: `moto-exp-${randomBytes(4).toString("hex")}`,
      },
      { clock: () => now },
    );
    await using c = await KvClient.connect({ port: server.port });
    await c.set("small", "s", { ttlMs: 1000 });
    await c.set("large", new Uint8Array(CHUNK_BYTES + 5), { ttlMs: 1000 });
    const lock = (await c.set("lock", "a", { ifAbsent: true, ttlMs: 1000 })) as number;
    await c.set("kept", "k");
    expect(await codeOf(c.set("lock", "b", { ifAbsent: true }))).toBe("KV_ERR_CONFLICT");
    expect((await c.getVersioned("small"))?.expiresAt).toBe(now + 1000);
    now += 1000;
    expect(await c.get("small")).toBeUndefined();
    expect(await c.get("large")).toBeUndefined();
    expect(await c.exists("lock")).toBe(false);
    // The condition expressions (BETWEEN on the packed fmt, NOT, OR) as a second DynamoDB reads them.
    expect(await codeOf(c.set("lock", "c", { ifVersion: lock }))).toBe("KV_ERR_CONFLICT");
    const taken = (await c.set("lock", "d", { ifAbsent: true, ttlMs: 5000 })) as number;
    expect(await c.getVersioned("lock")).toMatchObject({ version: taken, expiresAt: now + 5000 });
    // A compare-and-set without a TTL removes the expiry (UpdateItem's REMOVE of `ttl`).
    await c.set("lock", "e", { ifVersion: taken });
    now += 10_000;
    expect(await c.getString("lock")).toBe("e");
    expect(await c.getString("kept")).toBe("k");
  });

  test("a pipelined burst of 2,000 sets and gets on one connection is answered in full, within the deadline", async () => {
    await using server = await startTestServer({
      store: "dynamodb",
      dynamodbEndpoint: endpoint,
      kmsEndpoint: endpoint,
      requestTimeoutMs: 5_000,
    });
    await using c = await KvClient.connect({ port: server.port });
    const sets: Promise<number | undefined>[] = [];
    const gets: Promise<string | undefined>[] = [];
    for (let i = 0; i < 2_000; i++) {
      sets.push(c.set(`burst${i}`, `value${i}`));
      gets.push(c.getString(`burst${i}`));
    }
    const versions = await Promise.all(sets);
    expect(await Promise.all(gets)).toEqual(Array.from({ length: 2_000 }, (_, i) => `value${i}`));
    // Sets carry the versions they answered, and moto stores them as written.
    expect(new Set(versions).size).toBe(2_000);
    expect((await c.getVersioned("burst1234"))?.version).toBe(versions[1234] as number);
    expect(await c.set("burst1234", "cas", { ifVersion: versions[1234] as number })).not.toBe(versions[1234]);
  });
});
