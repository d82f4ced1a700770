import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { ScanCommand } from "@aws-sdk/client-dynamodb";
import type { AwsCredentialIdentity } from "@smithy/types";
import { KvClient } from "../../client/kv-client.js";
import type { Config } from "../../src/config.js";
import { type ServerOverrides, startServer } from "../../src/server.js";
import { encodeGetRequest } from "../../src/wire/client-codec.js";
import { ErrorCode, type KvError } from "../../src/wire/errors.js";
import { useBackends } from "../support/backends.js";
import { CapturingLog } from "../support/capturing-log.js";
import { useFaultProxies } from "../support/fault-proxy.js";
import { RawConnection, startTestServer, testConfig } from "../support/harness.js";

// Starts DynamoDB Local; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

const backends = useBackends();
const proxies = useFaultProxies(backends);

/**
 * A server on DynamoDB Local and the local KMS, each behind its fault proxy.
 * Retry tests get a deadline long enough that only a real failure to retry
 * can fail them (a 2 s one flaked under CI load when one batch drew several
 * faults in a row); the deadline tests set short ones themselves.
 */
function serverBehindProxies(config: Partial<Config> = {}, wiring: ServerOverrides = {}) {
  return startTestServer(
    {
      store: "dynamodb",
      dynamodbEndpoint: proxies.ddb.endpoint,
      kmsEndpoint: proxies.kms.endpoint,
      requestTimeoutMs: 20_000,
      callTimeoutMs: 400,
      ...config,
    },
    wiring,
  );
}

const BATCH_OPS = new Set(["BatchWriteItem", "BatchGetItem"]);

/** Sets `n` distinct keys at once and returns each outcome. */
async function setMany(c: KvClient, prefix: string, n: number): Promise<PromiseSettledResult<unknown>[]> {
  return Promise.allSettled(Array.from({ length: n }, (_, i) => c.set(`${prefix}${i}`, `value-${prefix}${i}`)));
}

/** Every set answered ok is read back with its own value: no false ack. */
async function expectAckedReadable(c: KvClient, prefix: string, outcomes: PromiseSettledResult<unknown>[]) {
  const acked = outcomes.flatMap((o, i) => (o.status === "fulfilled" ? [i] : []));
  const got = await Promise.all(acked.map((i) => c.getString(`${prefix}${i}`)));
  expect(got).toEqual(acked.map((i) => `value-${prefix}${i}`));
  return acked.length;
}

function expectInternalAnswer(outcome: PromiseSettledResult<unknown>, code: ErrorCode) {
  expect(outcome.status).toBe("rejected");
  if (outcome.status === "rejected") expect((outcome.reason as KvError).code).toBe(code);
}

describe("DynamoDB faults between the server and DynamoDB Local", () => {
  test("throttling errors and 500s are retried until every set is stored and every get answers", async () => {
    await using server = await serverBehindProxies();
    await using c = await KvClient.connect({ port: server.port });
    proxies.ddb.rule = (op, n) => (BATCH_OPS.has(op) && n % 3 !== 0 ? (n % 2 ? "throttle" : "error500") : undefined);
    const outcomes = await setMany(c, "t", 200);
    expect(outcomes.every((o) => o.status === "fulfilled")).toBe(true);
    expect(await expectAckedReadable(c, "t", outcomes)).toBe(200);
    expect(proxies.ddb.injected.get("throttle")).toBeGreaterThan(0);
    expect(proxies.ddb.injected.get("error500")).toBeGreaterThan(0);
  });

  test("unprocessed items and keys are retried until written and read", async () => {
    await using server = await serverBehindProxies();
    await using c = await KvClient.connect({ port: server.port });
    proxies.ddb.rule = (op) => (BATCH_OPS.has(op) ? "unprocessed" : undefined);
    const outcomes = await setMany(c, "u", 120);
    expect(outcomes.every((o) => o.status === "fulfilled")).toBe(true);
    expect(await expectAckedReadable(c, "u", outcomes)).toBe(120);
    expect(proxies.ddb.injected.get("unprocessed")).toBeGreaterThan(2);
    proxies.ddb.rule = undefined;
    // Values only: the branch-key items (pk 0x02...) are not the test's.
    const scan = await backends.client.send(
      new ScanCommand({
        TableName: server.table,
        Select: "COUNT",
        FilterExpression: "NOT begins_with(pk, :branch)",
        ExpressionAttributeValues: { ":branch": { B: Uint8Array.of(2) } },
      }),
    );
    expect(scan.Count).toBe(120);
  });

  test("connections reset and bodies cut short mid-response never turn into a false ok", async () => {
    await using server = await serverBehindProxies();
    await using c = await KvClient.connect({ port: server.port });
    proxies.ddb.rule = (op, n) => (BATCH_OPS.has(op) && n % 2 === 1 ? (n % 4 === 1 ? "reset" : "truncate") : undefined);
    const outcomes = await setMany(c, "r", 150);
    // Both are retried within the deadline; whatever was answered ok must be stored.
    expect(await expectAckedReadable(c, "r", outcomes)).toBe(150);
    expect(proxies.ddb.injected.get("reset")).toBeGreaterThan(0);
    expect(proxies.ddb.injected.get("truncate")).toBeGreaterThan(0);
  });

  test("answers damaged in transit are caught by x-amz-crc32 and read again, never taken as not found", async () => {
    await using server = await serverBehindProxies();
    await using c = await KvClient.connect({ port: server.port });
    const outcomes = await setMany(c, "c", 50);
    expect(outcomes.every((o) => o.status === "fulfilled")).toBe(true);
    proxies.ddb.rule = (op, n) => (op === "BatchGetItem" && n % 2 === 1 ? "corrupt" : undefined);
    const got = await Promise.all(Array.from({ length: 50 }, (_, i) => c.getString(`c${i}`)));
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => `value-c${i}`));
    expect(proxies.ddb.injected.get("corrupt")).toBeGreaterThan(0);
  });

  test("a DynamoDB that never answers gets internal at the deadline, and the server recovers by itself", async () => {
    // Few operations admitted at once, so most wait in line: the deadline covers waiting too.
    await using server = await serverBehindProxies({ requestTimeoutMs: 1_000, callTimeoutMs: 300, maxPending: 4 });
    await using c = await KvClient.connect({ port: server.port });
    await c.set("before", "stored before the stall");
    proxies.ddb.rule = () => "hang";
    const started = performance.now();
    // Sets and gets pipelined on one connection, gets of the same keys behind the sets.
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) ops.push(c.set(`h${i}`, "x"), c.get(`h${i}`), c.get("before"));
    const outcomes = await Promise.allSettled(ops);
    const elapsed = performance.now() - started;
    for (const o of outcomes) expectInternalAnswer(o, ErrorCode.Timeout);
    // Answered by the deadline, not by something sooner; the upper bound only rules out a hang.
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(10_000);
    expect(proxies.ddb.injected.get("hang")).toBeGreaterThan(0);
    // The server gave up its hung calls by itself (call timeouts): nothing piles up while DynamoDB stalls.
    proxies.ddb.rule = () => undefined;
    await proxies.ddb.callersGaveUp();

    proxies.ddb.rule = undefined;
    proxies.ddb.releaseHung();
    await c.set("after", "the stall is over");
    expect(await c.getString("after")).toBe("the stall is over");
    expect(await c.getString("before")).toBe("stored before the stall");
  });
});

describe("a connection that closes", () => {
  test("its requests that have not started are dropped, never sent to DynamoDB", async () => {
    // Two store operations at a time, one GetItem per get, and no deadline or call timeout in the way.
    const captured = new CapturingLog();
    await using server = await startServer(
      testConfig({
        store: "dynamodb",
        dynamodbEndpoint: proxies.ddb.endpoint,
        kmsEndpoint: proxies.kms.endpoint,
        maxPending: 2,
        readBatch: 1,
        requestTimeoutMs: 60_000,
        callTimeoutMs: 60_000,
      }),
      captured.log,
    );
    proxies.ddb.rule = (op) => (op === "GetItem" ? "hang" : undefined);
    const before = proxies.ddb.count("GetItem");
    const raw = await RawConnection.open(server.port);
    const get = encodeGetRequest(new TextEncoder().encode("gone"));
    raw.send(new Uint8Array(Buffer.concat(Array.from({ length: 40 }, () => get))));
    // Two started and hang at DynamoDB; 38 wait for a place.
    await proxies.ddb.seen("GetItem", before + 2);
    raw.terminate();
    await captured.next(/connection closed/);
    proxies.ddb.rule = undefined;
    proxies.ddb.releaseHung();
    // A get on a new connection waits behind whatever is still queued, so once it is answered the queue is empty.
    await using c = await KvClient.connect({ port: server.port });
    expect(await c.get("probe")).toBeUndefined();
    expect(proxies.ddb.count("GetItem") - before).toBe(3);
  });
});

describe("KMS faults between the server and the local KMS", () => {
  test("KMS throttling and 500s are retried, and sets succeed", async () => {
    // The SDK backs off from KMS throttling from 500 ms: the deadline must leave room for two retries.
    // KMS data keys (--keyring kms) of 1 ms: every set calls GenerateDataKey.
    await using server = await serverBehindProxies(
      { requestTimeoutMs: 15_000, keyring: "kms" },
      { keyCache: { maxAgeMs: 1 } },
    );
    await using c = await KvClient.connect({ port: server.port });
    proxies.kms.rule = (op, n) =>
      op === "GenerateDataKey" && n % 3 !== 0 ? (n % 2 ? "throttle" : "error500") : undefined;
    for (let i = 0; i < 5; i++) await c.set(`k${i}`, "v");
    expect(proxies.kms.injected.get("throttle")).toBeGreaterThan(0);
    expect(proxies.kms.injected.get("error500")).toBeGreaterThan(0);
  });

  test("a KMS that never answers fails sets at the deadline while cached keys keep serving, then recovers", async () => {
    // With KMS data keys (--keyring kms) of 1 ms every set needs a fresh one, so a stalled KMS stalls every set.
    // (The hierarchical keyring's outage behaviour is in keyring.test.ts.)
    await using server = await serverBehindProxies(
      { requestTimeoutMs: 1_000, keyring: "kms" },
      { keyCache: { maxAgeMs: 1 } },
    );
    await using c = await KvClient.connect({ port: server.port });
    await c.set("cached", "readable without KMS");
    proxies.kms.rule = () => "hang";
    const started = performance.now();
    const [set, get] = await Promise.allSettled([c.set("new", "x"), c.getString("cached")]);
    expectInternalAnswer(set as PromiseSettledResult<unknown>, ErrorCode.Kms);
    expect(get).toEqual({ status: "fulfilled", value: "readable without KMS" });
    expect(performance.now() - started).toBeLessThan(10_000);
    // The KMS call itself was abandoned at the deadline, not left hanging.
    await proxies.kms.callersGaveUp();
    proxies.kms.rule = undefined;
    proxies.kms.releaseHung();
    await c.set("new", "after KMS came back");
    expect(await c.getString("new")).toBe("after KMS came back");
  });
});

describe("credentials", () => {
  test("short-lived credentials are refreshed before they expire, without a failed request", async () => {
    let issued = 0;
    // The SDK refreshes credentials within 5 minutes of expiry; these are good for 300 ms beyond that.
    const credentials = async (): Promise<AwsCredentialIdentity> => ({
      accessKeyId: `AKIDSHORTLIVED${++issued}`,
      secretAccessKey: "secret",
      sessionToken: `token-${issued}`,
      expiration: new Date(Date.now() + 300_000 + 300),
    });
    await using server = await serverBehindProxies({}, { credentials });
    await using c = await KvClient.connect({ port: server.port });
    const seenBefore = proxies.ddb.accessKeys.length;
    let sets = 0;
    while (proxies.ddb.accessKeys.length - seenBefore < 3 && sets < 20_000) {
      await c.set(`cred${sets % 50}`, `v${sets}`);
      sets++;
    }
    expect(proxies.ddb.accessKeys.length - seenBefore).toBeGreaterThanOrEqual(3);
    expect(proxies.ddb.accessKeys.slice(seenBefore).every((k) => k.startsWith("AKIDSHORTLIVED"))).toBe(true);
    expect(await c.getString(`cred${(sets - 1) % 50}`)).toBe(`v${sets - 1}`);
  });
});
