import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { KvClient } from "../../client/kv-client.js";
import { silentLogger } from "../../src/log.js";
import { startServer } from "../../src/server.js";
import type { KvStore } from "../../src/store/kv-store.js";
import { useBackends } from "../support/backends.js";
import { useFaultProxies } from "../support/fault-proxy.js";
import { testConfig } from "../support/harness.js";
import { anError, rejection } from "../support/rejection.js";
import { wrapping } from "../support/stores.js";

// Starts DynamoDB Local; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

const backends = useBackends();
const proxies = useFaultProxies(backends);

/** The value of one sample line of the Prometheus text, or undefined if absent. */
function sample(metrics: string, line: string): number | undefined {
  const hit = metrics.split("\n").find((l) => l.startsWith(`${line} `));
  return hit === undefined ? undefined : Number(hit.slice(line.length + 1));
}

async function get(port: number, path: string, method = "GET") {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: res.status, text: await res.text(), type: res.headers.get("content-type") ?? "" };
}

describe("the admin port", () => {
  test("serves liveness, readiness and Prometheus metrics of the memory store", async () => {
    await using server = await startServer(testConfig({ adminPort: 0 }), silentLogger);
    const port = server.adminPort as number;
    await using c = await KvClient.connect({ port: server.port });
    await c.set("a", "1");
    expect(await c.getString("a")).toBe("1");
    expect(await c.get("missing")).toBeUndefined();
    await Promise.allSettled([c.get(new Uint8Array(5000))]);

    expect(await get(port, "/healthz")).toMatchObject({ status: 200, text: "ok\n" });
    expect(await get(port, "/readyz")).toMatchObject({ status: 200, text: "ready\n" });
    const metrics = await get(port, "/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.type).toContain("text/plain");
    expect(metrics.text).toContain('kvs_requests_total{front_end="tcp",op="set",result="ok"} 1');
    expect(metrics.text).toContain('kvs_requests_total{front_end="tcp",op="get",result="ok"} 1');
    expect(metrics.text).toContain('kvs_requests_total{front_end="tcp",op="get",result="not_found"} 1');
    expect(metrics.text).toContain('kvs_requests_total{front_end="tcp",op="get",result="refused"} 1');
    expect(metrics.text).toContain("kvs_connections 1");
    expect(metrics.text).toMatch(/kvs_bytes_total\{direction="in"\} [1-9]/);
    expect(metrics.text).toContain("kvs_process_resident_memory_bytes");
    expect((await get(port, "/nope")).status).toBe(404);
    expect((await get(port, "/healthz", "POST")).status).toBe(405);
  });

  test("HTTP requests are in the latency histogram and the counts as TCP ones are, each labelled by its front end", async () => {
    // A store that answers asynchronously, as DynamoDB does: the memory store's synchronous answers are not timed.
    await using server = await startServer(testConfig({ adminPort: 0, httpPort: 0 }), silentLogger, {
      wrapStore: (s): KvStore => wrapping(s, { getSync: undefined, setSync: undefined }),
    });
    const http = `http://127.0.0.1:${server.httpPort}`;
    await fetch(`${http}/set?k=a&v=1`);
    for (let i = 0; i < 25; i++) await fetch(`${http}/get?k=a`);
    await fetch(`${http}/get?k=${"x".repeat(1025)}`);
    await using c = await KvClient.connect({ port: server.port });
    await c.get("a");
    const m = (await get(server.adminPort as number, "/metrics")).text;
    expect(sample(m, 'kvs_request_duration_seconds_count{front_end="http",op="set"}')).toBe(1);
    // 25 HTTP gets and the refused one; one over TCP.
    expect(sample(m, 'kvs_request_duration_seconds_count{front_end="http",op="get"}')).toBe(26);
    expect(sample(m, 'kvs_request_duration_seconds_count{front_end="tcp",op="get"}')).toBe(1);
    expect(sample(m, 'kvs_requests_total{front_end="http",op="get",result="ok"}')).toBe(25);
    expect(sample(m, 'kvs_requests_total{front_end="http",op="get",result="refused"}')).toBe(1);
    expect(sample(m, 'kvs_requests_total{front_end="tcp",op="get",result="ok"}')).toBe(1);
  });

  test("readiness turns 503 while the server drains; liveness stays 200", async () => {
    const gate = Promise.withResolvers<void>();
    const reached = Promise.withResolvers<void>();
    await using server = await startServer(testConfig({ adminPort: 0 }), silentLogger, {
      wrapStore: (s): KvStore =>
        wrapping(s, {
          get: async (key) => {
            reached.resolve();
            await gate.promise;
            return s.get(key);
          },
        }),
    });
    const port = server.adminPort as number;
    const c = await KvClient.connect({ port: server.port });
    const pending = c.get("held");
    await reached.promise;
    const stopped = server.stop();
    expect(await get(port, "/readyz")).toMatchObject({ status: 503, text: "draining\n" });
    expect((await get(port, "/healthz")).status).toBe(200);
    gate.resolve();
    expect(await pending).toBeUndefined();
    await stopped;
  });

  test("on DynamoDB: readiness follows DynamoDB, liveness never touches it, and backend calls are counted", async () => {
    await using server = await startServer(
      testConfig({
        store: "dynamodb",
        dynamodbEndpoint: proxies.ddb.endpoint,
        kmsEndpoint: backends.kms.endpoint,
        adminPort: 0,
        callTimeoutMs: 300,
      }),
      silentLogger,
      { readyRecentMs: 0 },
    );
    const port = server.adminPort as number;
    await using c = await KvClient.connect({ port: server.port });
    await c.set("k", "v");
    expect(await c.getString("k")).toBe("v");
    expect((await get(port, "/readyz")).status).toBe(200);

    proxies.ddb.rule = () => "hang";
    expect(await get(port, "/readyz")).toMatchObject({ status: 503, text: "backend unavailable\n" });
    expect((await get(port, "/healthz")).status).toBe(200);
    proxies.ddb.rule = undefined;
    proxies.ddb.releaseHung();
    // The probe's verdict is reused for a moment; ask until a fresh probe answers.
    let ready = 0;
    for (let i = 0; i < 50 && ready !== 200; i++) ready = (await get(port, "/readyz")).status;
    expect(ready).toBe(200);

    const metrics = (await get(port, "/metrics")).text;
    expect(metrics).toMatch(/kvs_backend_calls_total\{service="dynamodb",operation="BatchWriteItem"\} [1-9]/);
    expect(metrics).toMatch(/kvs_backend_calls_total\{service="kms",operation="GenerateDataKey"\} [1-9]/);
    expect(metrics).toMatch(/kvs_data_key_cache_total\{result="hit"\} [1-9]/);
    expect(metrics).toMatch(/kvs_request_duration_seconds_count\{front_end="tcp",op="set"\} 1/);
    expect(metrics).toContain('kvs_request_duration_seconds_bucket{front_end="tcp",op="get",le="+Inf"} 1');
  });

  test("on DynamoDB: throttles, failures and retries by operation, sweeps and batcher queues are metrics", async () => {
    const config = testConfig({
      store: "dynamodb",
      dynamodbEndpoint: proxies.ddb.endpoint,
      kmsEndpoint: proxies.kms.endpoint,
      adminPort: 0,
      requestTimeoutMs: 20_000,
    });
    await using server = await startServer(config, silentLogger);
    const port = server.adminPort as number;
    await using c = await KvClient.connect({ port: server.port });

    // Two throttled BatchWriteItems, then success: the set lands after two retries.
    let throttles = 0;
    proxies.ddb.rule = (op) => (op === "BatchWriteItem" && throttles++ < 2 ? "throttle" : undefined);
    await c.set("k", "v");
    proxies.ddb.rule = undefined;
    await server.sweepOrphans();

    // A second server on the same table knows branch-key version 1 only. After a rotation on the
    // first, a value under version 2 needs a KMS Decrypt on the second, which fails.
    await using cold = await startServer({ ...config, adminPort: 0, requestTimeoutMs: 3_000 }, silentLogger);
    expect(await server.rotateBranchKey()).toBe(2);
    await c.set("k2", "under version 2");
    proxies.kms.rule = (op) => (op === "Decrypt" ? "error500" : undefined);
    await using c2 = await KvClient.connect({ port: cold.port });
    expect(await rejection(c2.get("k2"))).toEqual(anError());
    proxies.kms.rule = undefined;

    const m = (await get(port, "/metrics")).text;
    const failures = 'kvs_backend_failures_total{service="dynamodb",operation="BatchWriteItem",kind="throttle"}';
    expect(sample(m, failures)).toBe(2);
    expect(sample(m, 'kvs_dynamodb_retries_total{what="write"}')).toBe(2);
    expect(sample(m, 'kvs_orphan_sweeps_total{result="ok"}')).toBe(1);
    expect(sample(m, "kvs_orphan_chunks_deleted_total")).toBe(0);
    expect(sample(m, 'kvs_batch_queue_depth{batcher="write"}')).toBe(0);
    expect(sample(m, 'kvs_batches_in_flight{batcher="read"}')).toBe(0);
    expect(sample(m, "kvs_branch_key_version")).toBe(2);
    expect(sample(m, "kvs_branch_key_rotations_total")).toBe(2);
    const coldMetrics = (await get(cold.adminPort as number, "/metrics")).text;
    expect(sample(coldMetrics, 'kvs_backend_failures_total{service="kms",operation="Decrypt",kind="error"}')).toBe(1);
  });
});
