import { describe, expect, test } from "bun:test";
import { KvClient } from "../../client/kv-client.js";
import { silentLogger } from "../../src/log.js";
import { bucketQuantileMs, LatencyReporter } from "../../src/ops/latency-reporter.js";
import { LATENCY_BUCKETS, RequestStats } from "../../src/ops/request-stats.js";
import { startServer } from "../../src/server.js";
import { CapturingLog } from "../support/capturing-log.js";
import { testConfig } from "../support/harness.js";
import { wrapping } from "../support/stores.js";

describe("latency lines for CloudWatch metric filters", () => {
  test("a quantile is the upper bound of the bucket it falls in, and past the last bound twice that bound", () => {
    const counts = new Array(LATENCY_BUCKETS.length + 1).fill(0);
    expect(bucketQuantileMs(counts, 0.99)).toBeUndefined();
    counts[0] = 98; // ≤ 0.5 ms
    counts[4] = 1; // ≤ 10 ms
    counts[6] = 1; // ≤ 50 ms
    expect(bucketQuantileMs(counts, 0.5)).toBe(0.5);
    expect(bucketQuantileMs(counts, 0.99)).toBe(10);
    expect(bucketQuantileMs(counts, 1)).toBe(50);
    counts[LATENCY_BUCKETS.length] = 1000;
    expect(bucketQuantileMs(counts, 0.99)).toBe(20_000);
  });

  test("each report covers only the requests since the previous one", () => {
    const stats = new RequestStats();
    using reporter = new LatencyReporter(stats, silentLogger, 3_600_000);
    for (let i = 0; i < 100; i++) stats.count("get", "ok");
    for (let i = 0; i < 100; i++) stats.observe("get", 0.0004);
    stats.count("set", "internal");
    expect(reporter.report()).toEqual([
      { op: "get", requests: 100, internal: 0, p50Ms: 0.5, p99Ms: 0.5 },
      { op: "set", requests: 1, internal: 1, p50Ms: undefined, p99Ms: undefined },
    ]);
    for (let i = 0; i < 10; i++) {
      stats.count("get", "ok");
      stats.observe("get", 0.2);
    }
    expect(reporter.report()).toEqual([{ op: "get", requests: 10, internal: 0, p50Ms: 250, p99Ms: 250 }]);
    expect(reporter.report()).toEqual([]);
  });

  test("one line per op covers every front end it reports on, their counts and latencies together", () => {
    const tcp = new RequestStats();
    const http = new RequestStats();
    using reporter = new LatencyReporter([tcp, http], silentLogger, 3_600_000);
    for (let i = 0; i < 90; i++) {
      tcp.count("get", "ok");
      tcp.observe("get", 0.0004);
    }
    for (let i = 0; i < 10; i++) {
      http.count("get", "ok");
      http.observe("get", 0.2);
    }
    http.count("get", "internal");
    expect(reporter.report()).toEqual([{ op: "get", requests: 101, internal: 1, p50Ms: 0.5, p99Ms: 250 }]);
    expect(reporter.report()).toEqual([]);
  });

  test("a server with --latency-log-interval-s logs a line per busy op with its count and p99", async () => {
    const capture = new CapturingLog();
    await using server = await startServer(testConfig({ latencyLogIntervalSeconds: 1 }), capture.log, {
      // Store answers that take a few ms, so requests are timed as DynamoDB-backed ones are.
      wrapStore: (inner) =>
        wrapping(inner, {
          appliesInOrder: false,
          async get(key) {
            await Bun.sleep(3);
            return inner.get(key);
          },
        }),
    });
    await using c = await KvClient.connect({ port: server.port });
    await Promise.all(Array.from({ length: 20 }, (_, i) => c.get(`k${i}`)));
    const line = await capture.next(/request latency op=get/);
    expect(line).toContain("requests=20");
    expect(line).toContain("internal=0");
    const p99 = Number(/p99_ms=(\S+)/.exec(line)?.[1]);
    expect(LATENCY_BUCKETS.map((b) => b * 1000)).toContain(p99);
    expect(p99).toBeGreaterThanOrEqual(5);
  });
});
