import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AttributeValue, GetItemCommand, PutItemCommand, ScanCommand } from "@aws-sdk/client-dynamodb";
import type { KMSClient } from "@aws-sdk/client-kms";
import { KvClient } from "../../client/kv-client.js";
import { kmsClient } from "../../src/aws-clients.js";
import { HierarchicalKeyring } from "../../src/crypto/hierarchical-keyring.js";
import { KmsKeyring } from "../../src/crypto/kms-keyring.js";
import { silentLogger } from "../../src/log.js";
import { Counter, Counters } from "../../src/metrics.js";
import { type KvServer, startServer } from "../../src/server.js";
import { activeBranchKeyPk, branchKeyPk, DynamoBranchKeyStore } from "../../src/store/branch-key-store.js";
import { ensureTable } from "../../src/store/dynamo-table.js";
import { CHUNK_BYTES, headPk } from "../../src/store/item-format.js";
import { ErrorCode } from "../../src/wire/errors.js";
import { onBackends, useBackends } from "../support/backends.js";
import { CapturingLog } from "../support/capturing-log.js";
import { useFaultProxies } from "../support/fault-proxy.js";
import { startTestServer, testConfig } from "../support/harness.js";
import { runCli } from "../support/process.js";
import { rejection } from "../support/rejection.js";
import { patterned } from "../support/values.js";

// Starts DynamoDB Local; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

const backends = useBackends();
const proxies = useFaultProxies(backends);

const enc = new TextEncoder();

function freshTable(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

async function item(table: string, pk: Uint8Array): Promise<Record<string, AttributeValue> | undefined> {
  const out = await backends.client.send(
    new GetItemCommand({ TableName: table, Key: { pk: { B: pk } }, ConsistentRead: true }),
  );
  return out.Item;
}

/** Branch-key version items in `table` (the active copy not counted). */
async function branchVersions(table: string): Promise<number[]> {
  const versions: number[] = [];
  let start: Record<string, AttributeValue> | undefined;
  do {
    const page = await backends.client.send(
      new ScanCommand({
        TableName: table,
        FilterExpression: "begins_with(pk, :branch)",
        ExpressionAttributeValues: { ":branch": { B: Uint8Array.of(2) } },
        ConsistentRead: true,
        ExclusiveStartKey: start,
      }),
    );
    for (const i of page.Items ?? []) if (i.pk?.B?.length === 5) versions.push(Number(i.bv?.N));
    start = page.LastEvaluatedKey;
  } while (start !== undefined);
  return versions.sort((a, b) => a - b);
}

let kms: KMSClient;
beforeAll(() => {
  kms = kmsClient({ region: "us-east-1", endpoint: backends.kms.endpoint, localCredentials: true });
});
afterAll(() => kms?.destroy());

/** A keyring on the shared DynamoDB Local and local KMS, as a server builds it, without the server. */
async function bareKeyring(table: string, counters = new Counters()): Promise<HierarchicalKeyring> {
  await ensureTable(backends.client, table);
  const keyId = testConfig().kmsKeyId as string;
  return new HierarchicalKeyring(
    new DynamoBranchKeyStore(backends.client, table, counters, 5_000),
    new KmsKeyring(kms, keyId, table, counters),
    table,
    silentLogger,
    { checkMs: 0 },
  );
}

describe("the hierarchical keyring", () => {
  test("values of every size round-trip; items carry a branch-key version and salt, never a KMS blob", async () => {
    const table = freshTable("round");
    await using server = await startTestServer(onBackends(backends, table));
    await using c = await KvClient.connect({ port: server.port });
    const sizes = [0, 1, 4096, CHUNK_BYTES - 1, CHUNK_BYTES + 1, 3 * CHUNK_BYTES];
    for (const size of sizes) await c.set(`k${size}`, patterned(size, size));
    for (const size of sizes) expect(await c.get(`k${size}`)).toEqual(patterned(size, size));
    for (const size of [0, 3 * CHUNK_BYTES]) {
      const head = (await item(table, headPk(enc.encode(`k${size}`)))) ?? {};
      expect(head.dk).toBeUndefined();
      expect(head.bv?.N).toBe("1");
      expect(head.bs?.B?.length).toBe(16);
    }
    // Two salts never repeat: every item has its own key.
    const a = await item(table, headPk(enc.encode("k1")));
    const b = await item(table, headPk(enc.encode("k4096")));
    expect(Buffer.from(a?.bs?.B ?? []).equals(Buffer.from(b?.bs?.B ?? []))).toBe(false);
    // Startup made version 1: one GenerateDataKey; nothing since, whatever the traffic.
    expect(server.counters.get(Counter.kmsGenerateDataKey)).toBe(1);
    expect(server.counters.get(Counter.kmsDecrypt)).toBe(0);
  });

  test("reads cost one KMS Decrypt per branch-key version, shared by concurrent reads, and none after", async () => {
    const table = freshTable("versions");
    {
      await using writer = await startTestServer(onBackends(backends, table));
      await using c = await KvClient.connect({ port: writer.port });
      for (let v = 1; v <= 3; v++) {
        await Promise.all(Array.from({ length: 100 }, (_, i) => c.set(`v${v}-${i}`, `value ${v}/${i}`)));
        await writer.rotateBranchKey();
      }
    }
    await using reader = await startTestServer(onBackends(backends, table));
    // Startup decrypts the active version 4 only.
    expect(reader.counters.get(Counter.kmsDecrypt)).toBe(1);
    await using c = await KvClient.connect({ port: reader.port });
    const keys = Array.from({ length: 300 }, (_, n) => `v${1 + (n % 3)}-${Math.floor(n / 3)}`);
    const got = await Promise.all(keys.map((k) => c.getString(k)));
    expect(got).toEqual(keys.map((k) => `value ${k.slice(1, 2)}/${k.slice(3)}`));
    expect(reader.counters.get(Counter.kmsDecrypt)).toBe(1 + 3);
    await Promise.all(keys.map((k) => c.getString(k)));
    expect(reader.counters.get(Counter.kmsDecrypt)).toBe(4);
    expect(reader.counters.get(Counter.kmsGenerateDataKey)).toBe(0);
  });

  test("rotation under load loses nothing: every acknowledged write reads back, across versions", async () => {
    const table = freshTable("load");
    await using server = await startTestServer(onBackends(backends, table));
    await using c = await KvClient.connect({ port: server.port });
    // Each rotation runs while a batch of pipelined writes is in flight.
    const writes: Promise<unknown>[] = [];
    const versions: number[] = [];
    for (let batch = 0; batch < 5; batch++) {
      for (let i = batch * 80; i < (batch + 1) * 80; i++)
        writes.push(c.set(`k${i}`, patterned(64 + (i % 7) * 1000, i)));
      versions.push(await server.rotateBranchKey());
    }
    await Promise.all(writes);
    expect(new Set(versions).size).toBe(versions.length);
    for (let i = 0; i < 400; i++) expect(await c.get(`k${i}`)).toEqual(patterned(64 + (i % 7) * 1000, i));
    const used = new Set<string>();
    for (let i = 0; i < 400; i += 10) used.add(String((await item(table, headPk(enc.encode(`k${i}`))))?.bv?.N));
    expect(used.size).toBeGreaterThan(1);
    expect(await branchVersions(table)).toEqual(Array.from({ length: 1 + versions.length }, (_, i) => i + 1));
  });

  test("two servers rotating at once make one new version, and both use it", async () => {
    const table = freshTable("race");
    await using a = await startTestServer(onBackends(backends, table));
    await using b = await startTestServer(onBackends(backends, table));
    const [va, vb] = await Promise.all([a.rotateBranchKey(), b.rotateBranchKey()]);
    expect(va).toBe(2);
    expect(vb).toBe(2);
    expect(await branchVersions(table)).toEqual([1, 2]);
    // Both write under the one new version.
    await using ca = await KvClient.connect({ port: a.port });
    await using cb = await KvClient.connect({ port: b.port });
    await ca.set("via-a", "x");
    await cb.set("via-b", "y");
    for (const key of ["via-a", "via-b"]) expect((await item(table, headPk(enc.encode(key))))?.bv?.N).toBe("2");
    // A server that knows neither reads both: the stored version 2 is the key both used.
    await using third = await startTestServer(onBackends(backends, table));
    await using c3 = await KvClient.connect({ port: third.port });
    expect([await c3.getString("via-a"), await c3.getString("via-b")]).toEqual(["x", "y"]);
    // Five more keyrings race from version 2: still one version between them.
    const rings = await Promise.all(Array.from({ length: 5 }, () => bareKeyring(table)));
    await Promise.all(rings.map((r) => r.start()));
    expect(await Promise.all(rings.map((r) => r.rotate()))).toEqual([3, 3, 3, 3, 3]);
    expect(await branchVersions(table)).toEqual([1, 2, 3]);
    const active = await item(table, activeBranchKeyPk());
    expect(active?.bv?.N).toBe("3");
    // The active copy is the version item every racer adopted, not one of several keys made for it.
    expect(active?.bk?.B).toEqual((await item(table, branchKeyPk(3)))?.bk?.B as Uint8Array);
  });

  test("a rotation that stopped between its two writes is finished by the next", async () => {
    const table = freshTable("crash");
    const ring = await bareKeyring(table);
    await ring.start();
    // Version 2 written, the active item never moved: what a crash between the writes leaves.
    const v1 = await item(table, activeBranchKeyPk());
    const other = await bareKeyring(table);
    await other.start();
    const store = new DynamoBranchKeyStore(backends.client, table, new Counters(), 5_000);
    const made = await ring.rotate();
    expect(made).toBe(2);
    await backends.client.send(
      new PutItemCommand({ TableName: table, Item: { ...(v1 ?? {}), pk: { B: activeBranchKeyPk() } } }),
    );
    expect((await store.active())?.version).toBe(1);
    expect(await other.rotate()).toBe(2);
    expect(await branchVersions(table)).toEqual([1, 2]);
  });

  test("a tampered, moved or missing branch key fails authentication: internal, never wrong bytes", async () => {
    const table = freshTable("tamper");
    const log = new CapturingLog("warn");
    {
      await using writer = await startTestServer(onBackends(backends, table));
      await using c = await KvClient.connect({ port: writer.port });
      await c.set("under-1", "one");
      await writer.rotateBranchKey();
      await c.set("under-2", "two");
      await writer.rotateBranchKey();
      await c.set("under-3", "three");
      await writer.rotateBranchKey();
    }
    // Version 1: one bit of its KMS ciphertext flipped. Version 2: version 3's ciphertext moved in.
    const v1 = (await item(table, branchKeyPk(1))) ?? {};
    const bk = new Uint8Array(v1.bk?.B ?? []);
    bk[bk.length - 20] = (bk[bk.length - 20] ?? 0) ^ 1;
    await backends.client.send(new PutItemCommand({ TableName: table, Item: { ...v1, bk: { B: bk } } }));
    const v3 = (await item(table, branchKeyPk(3))) ?? {};
    const v2 = (await item(table, branchKeyPk(2))) ?? {};
    await backends.client.send(new PutItemCommand({ TableName: table, Item: { ...v2, bk: v3.bk ?? { B: bk } } }));
    // A head naming a version that was never made.
    const head = (await item(table, headPk(enc.encode("under-3")))) ?? {};
    await backends.client.send(
      new PutItemCommand({
        TableName: table,
        Item: { ...head, pk: { B: headPk(enc.encode("ghost")) }, bv: { N: "77" } },
      }),
    );

    await using reader = await startServer(testConfig(onBackends(backends, table)), log.log);
    await using c = await KvClient.connect({ port: reader.port });
    for (const key of ["under-1", "under-2", "ghost"]) {
      expect(await rejection(c.get(key))).toMatchObject({ code: ErrorCode.Integrity });
    }
    expect(await c.getString("under-3")).toBe("three");
    expect(log.count(/KMS refused the stored data key: InvalidCiphertextException/)).toBeGreaterThanOrEqual(2);
    expect(log.count(/branch-key version 77, which does not exist/)).toBeGreaterThanOrEqual(1);
  });

  test("items of the KMS data-key format stay readable, and are rewritten in the new format on their next set", async () => {
    const table = freshTable("compat");
    {
      await using old = await startTestServer({ ...onBackends(backends, table), keyring: "kms" });
      await using c = await KvClient.connect({ port: old.port });
      await c.set("small", "written with a KMS data key");
      await c.set("large", patterned(2 * CHUNK_BYTES + 3, 9));
    }
    const before = await item(table, headPk(enc.encode("small")));
    expect(before?.dk?.B?.length).toBeGreaterThan(0);
    expect(before?.bv).toBeUndefined();

    await using server = await startTestServer(onBackends(backends, table));
    await using c = await KvClient.connect({ port: server.port });
    expect(await c.getString("small")).toBe("written with a KMS data key");
    expect(await c.get("large")).toEqual(patterned(2 * CHUNK_BYTES + 3, 9));
    await c.set("small", "now under a branch key");
    const after = await item(table, headPk(enc.encode("small")));
    expect(after?.dk).toBeUndefined();
    expect(after?.bv?.N).toBe("1");
    expect(await c.getString("small")).toBe("now under a branch key");

    // Rolling back to --keyring kms still reads what the new format wrote.
    await using back = await startTestServer({ ...onBackends(backends, table), keyring: "kms" });
    await using c2 = await KvClient.connect({ port: back.port });
    expect(await c2.getString("small")).toBe("now under a branch key");
  });
});

describe("the hierarchical keyring while KMS is down", () => {
  async function serverWithClock(table: string, log: CapturingLog, clock: { now: number }): Promise<KvServer> {
    return startServer(
      testConfig({
        store: "dynamodb",
        table,
        dynamodbEndpoint: backends.ddb.endpoint,
        kmsEndpoint: proxies.kms.endpoint,
        requestTimeoutMs: 2_000,
        branchKeyTtlMs: 60_000,
      }),
      log.log,
      { keyClock: () => clock.now, branchKeys: { checkMs: 0 } },
    );
  }

  test("cached branch keys serve reads and writes until their TTL, then the answer is internal with a log line", async () => {
    const table = freshTable("down");
    const log = new CapturingLog("warn");
    const clock = { now: Date.now() };
    await using server = await serverWithClock(table, log, clock);
    await using c = await KvClient.connect({ port: server.port });
    await c.set("before", "written while KMS answered");

    proxies.kms.rule = () => "error500";
    clock.now += 50_000; // past the refresh point (3/4 of 60 s), inside the TTL
    await c.set("during", "written while KMS is down");
    expect(await c.getString("before")).toBe("written while KMS answered");
    expect(await c.getString("during")).toBe("written while KMS is down");
    await log.next(/could not be refreshed from KMS; its cached copy serves until its TTL/);

    clock.now += 10_001; // past the TTL
    expect(await rejection(c.set("after", "x"))).toMatchObject({ code: ErrorCode.Kms });
    expect(await rejection(c.get("before"))).toMatchObject({ code: ErrorCode.Kms });
    await log.next(/expired from the cache \(TTL 60000 ms\) and could not be decrypted again/);

    proxies.kms.rule = undefined;
    await c.set("after", "KMS is back");
    expect(await c.getString("after")).toBe("KMS is back");
    expect(await c.getString("before")).toBe("written while KMS answered");
  });
});

describe("rotating on demand and on schedule", () => {
  test("POST /admin/rotate-key and `client admin rotate-key` make a new version; GET is refused", async () => {
    const table = freshTable("admin");
    await using server = await startTestServer({ ...onBackends(backends, table), adminPort: 0 });
    const base = `http://127.0.0.1:${server.adminPort}`;
    const res = await fetch(`${base}/admin/rotate-key`, { method: "POST" });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ version: 2 });
    expect((await fetch(`${base}/admin/rotate-key`)).status).toBe(405);
    const cli = await runCli(["admin", "rotate-key", "--admin-port", String(server.adminPort)]);
    expect({ code: cli.code, out: new TextDecoder().decode(cli.stdout) }).toEqual({
      code: 0,
      out: "branch key version 3 is active\n",
    });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain("kvs_branch_key_version 3");
    expect(await branchVersions(table)).toEqual([1, 2, 3]);
    for (const args of [["admin"], ["admin", "rotate"], ["admin", "rotate-key", "now"]]) {
      const bad = await runCli([...args, "--admin-port", String(server.adminPort)]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain("admin takes one action, rotate-key");
    }
  });

  test("with authentication on, rotate-key needs an identity with admin on every key", async () => {
    const table = freshTable("admin-auth");
    const admin = randomBytes(32).toString("hex");
    const writer = randomBytes(32).toString("hex");
    const policyFile = join(tmpdir(), `kvs-policy-${randomBytes(4).toString("hex")}.json`);
    writeFileSync(
      policyFile,
      JSON.stringify({
        rules: [
          { identity: "token:admin", admin: ["*"] },
          { identity: "token:writer", read: ["*"], write: ["*"], admin: ["team/*"] },
        ],
      }),
    );
    try {
      await using server = await startTestServer({
        ...onBackends(backends, table),
        adminPort: 0,
        auth: { policyFile, tokensText: `admin=${admin},writer=${writer}` },
      });
      const url = `http://127.0.0.1:${server.adminPort}/admin/rotate-key`;
      const anonymous = await fetch(url, { method: "POST" });
      expect(anonymous.status).toBe(401);
      const partial = await fetch(url, { method: "POST", headers: { authorization: `Bearer ${writer}` } });
      expect(partial.status).toBe(403);
      expect(await partial.text()).toContain("token:writer lacks admin permission on every key");
      // Health and metrics stay open to the load balancer's probes.
      expect((await fetch(`http://127.0.0.1:${server.adminPort}/healthz`)).status).toBe(200);
      const cli = await runCli(["admin", "rotate-key", "--admin-port", String(server.adminPort), "--token", admin]);
      expect(new TextDecoder().decode(cli.stdout)).toBe("branch key version 2 is active\n");
      expect(await branchVersions(table)).toEqual([1, 2]);
    } finally {
      rmSync(policyFile, { force: true });
    }
  });

  test("the active version is replaced once it is older than the rotation period", async () => {
    const table = freshTable("schedule");
    const log = new CapturingLog("debug");
    const clock = { now: Date.now() };
    await using server = await startServer(
      testConfig({ ...onBackends(backends, table), branchKeyRotationMs: 3_600_000 }),
      log.log,
      { keyClock: () => clock.now, branchKeys: { checkMs: 10 } },
    );
    await using c = await KvClient.connect({ port: server.port });
    await c.set("k", "v");
    clock.now += 3_600_000;
    await log.next(/branch key rotated version=2/);
    expect(await branchVersions(table)).toEqual([1, 2]);
    expect(await c.getString("k")).toBe("v");
  });

  test("the memory store has no branch keys: rotation is refused with a reason", async () => {
    await using server = await startTestServer({ store: "memory", adminPort: 0 });
    const res = await fetch(`http://127.0.0.1:${server.adminPort}/admin/rotate-key`, { method: "POST" });
    expect(res.status).toBe(500);
    expect(await res.text()).toContain("the memory store has no branch keys to rotate");
    const cli = await runCli(["admin", "rotate-key", "--admin-port", String(server.adminPort)]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain("the memory store has no branch keys to rotate");
  });
});
