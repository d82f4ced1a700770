import { describe, expect, test } from "bun:test";
import { KvClient } from "../client/kv-client.js";
import { awsSdkLogger, createLogger } from "../src/log.js";
import { Dispatcher } from "../src/protocol/dispatch.js";
import { RepeatLimiter } from "../src/repeat-limiter.js";
import { startServer } from "../src/server.js";
import type { KvStore } from "../src/store/kv-store.js";
import { MemoryStore } from "../src/store/memory-store.js";
import { decodeResponse, encodeGetRequest } from "../src/wire/client-codec.js";
import { GetError } from "../src/wire/envelope.js";
import { ErrorCode, KvError } from "../src/wire/errors.js";
import { CapturingLog } from "./support/capturing-log.js";
import { RawConnection, testConfig } from "./support/harness.js";
import { wrapping } from "./support/stores.js";
import { lacking } from "./support/system-tools.js";
import { body, expectInternal } from "./support/wire.js";

/** A memory store whose gets wait for the test to open the gate (async, as a remote store is). */
function gatedStore(inner: KvStore) {
  const gate = Promise.withResolvers<void>();
  const store = wrapping(inner, {
    get: async (key) => {
      await gate.promise;
      return inner.get(key);
    },
  });
  return { store, open: () => gate.resolve() };
}

describe("--idle-timeout", () => {
  test("a connection waiting on a slow request is not idle: it gets its answer, then closes when truly idle", async () => {
    const captured = new CapturingLog();
    let gate: ReturnType<typeof gatedStore> | undefined;
    await using server = await startServer(testConfig({ idleTimeoutSeconds: 1 }), captured.log, {
      wrapStore: (s) => {
        gate = gatedStore(s);
        return gate.store;
      },
    });
    await using conn = await RawConnection.open(server.port);
    conn.send(encodeGetRequest(new TextEncoder().encode("slow")));
    // The timeout fires while the get is still running, and is put off.
    await captured.next(/idle timeout deferred/);
    gate?.open();
    expect(decodeResponse((await conn.next()) as Uint8Array)).toEqual({ kind: "get", error: GetError.NotFound });
    // Now it owes nothing: the next timeout closes it.
    await conn.closed;
    expect(conn.isClosed).toBe(true);
    // Bun checks socket timeouts about every 4 s, so two of them take up to about 10 s.
  }, 30_000);
});

/**
 * Checks that ss shows a keepalive timer set to a minute, counted down by at
 * most the few seconds a busy CI takes. ss prints the time left as `1min`
 * while a full minute is left, then `59sec`, `58sec`... (and `NNNms` below a second).
 */
function expectKeepaliveTimer(ssLine: string): void {
  const left = /timer:\(keepalive,([^,]+),/.exec(ssLine)?.[1];
  expect(left).toBeDefined();
  const units: Record<string, number> = { min: 60, sec: 1, ms: 0.001 };
  let seconds = 0;
  for (const [, n, unit] of (left as string).matchAll(/(\d+)(min|sec|ms)/g)) {
    seconds += Number(n) * (units[unit as string] as number);
  }
  expect(seconds).toBeGreaterThan(45);
  expect(seconds).toBeLessThanOrEqual(60);
}

describe.skipIf(lacking("the keepalive tests", "ss"))("TCP keepalive", () => {
  test("server sockets probe a silent peer after a minute, so dead clients are found and idle flows kept", async () => {
    await using server = await startServer(
      testConfig(),
      createLogger("error", () => {}),
    );
    await using c = await KvClient.connect({ port: server.port });
    expect(await c.get("k")).toBeUndefined();
    // iproute2's ss shows the kernel's keepalive timer on the server's end of the connection.
    const ss = Bun.spawnSync(["ss", "-tnoH", "state", "established", `( sport = :${server.port} )`]);
    expectKeepaliveTimer(ss.stdout.toString());
  });

  test("client sockets probe a silent server after a minute too, so an idle client outlives the NLB's 350 s timeout", async () => {
    await using server = await startServer(
      testConfig(),
      createLogger("error", () => {}),
    );
    await using c = await KvClient.connect({ port: server.port });
    expect(await c.get("k")).toBeUndefined();
    // The client's end: its source port is ephemeral, its destination the server's port.
    const line = Bun.spawnSync([
      "ss",
      "-tnoH",
      "state",
      "established",
      `( dport = :${server.port} )`,
    ]).stdout.toString();
    expectKeepaliveTimer(line);
  });
});

describe("failures that are not the client's", () => {
  test("a store that throws something that is not a KvError gets internal, and the connection keeps serving", async () => {
    let fail = true;
    const captured = new CapturingLog("warn");
    await using server = await startServer(testConfig(), captured.log, {
      wrapStore: (s) =>
        wrapping(s, {
          get: (key) => (fail ? Promise.reject(new TypeError("a bug")) : s.get(key)),
        }),
    });
    await using c = await KvClient.connect({ port: server.port });
    await expectInternal(c.get("k"), ErrorCode.Storage);
    fail = false;
    await c.set("k", "v");
    expect(await c.getString("k")).toBe("v");
    expect(captured.count(/request failed.*a bug/)).toBe(1);
  });

  test("an answer that cannot be encoded is answered internal, never a stalled connection", async () => {
    const broken = wrapping(new MemoryStore(), {
      get: async () => ({ length: -1 }) as unknown as Uint8Array,
    });
    const d = new Dispatcher(
      broken,
      createLogger("error", () => {}),
    );
    const answer = await d.dispatch({ kind: "get", key: Uint8Array.of(1) });
    expect(decodeResponse(body(answer as Uint8Array))).toMatchObject({ kind: "get", error: GetError.Internal });
  });

  test("a flood of identical failures logs one line a second with a count of the rest", async () => {
    const captured = new CapturingLog("warn");
    await using server = await startServer(testConfig(), captured.log, {
      wrapStore: (s) =>
        wrapping(s, {
          get: () => Promise.reject(new KvError(ErrorCode.Storage, "DynamoDB is down")),
        }),
    });
    await using c = await KvClient.connect({ port: server.port });
    const outcomes = await Promise.allSettled(Array.from({ length: 200 }, () => c.get("k")));
    expect(outcomes.every((o) => o.status === "rejected")).toBe(true);
    const summary = await captured.next(/request failed \(repeated\)/);
    expect(summary).toContain("suppressed=199");
    expect(captured.count(/DynamoDB is down/)).toBe(1);
  });

  test("in JSON, the summary of a flood carries the code as key and the count as a number, for metric filters", async () => {
    const lines: string[] = [];
    const log = createLogger("warn", (l) => lines.push(l), "json");
    const repeated = Promise.withResolvers<Record<string, unknown>>();
    const r = new RepeatLimiter(
      {
        ...log,
        warn: (msg, fields) => {
          log.warn(msg, fields);
          if (msg.endsWith("(repeated)")) repeated.resolve(JSON.parse(lines.at(-1) as string));
        },
      },
      20,
    );
    for (let i = 0; i < 5; i++) r.warn("KV_ERR_KMS", "request failed", { code: "KV_ERR_KMS" });
    expect(JSON.parse(lines[0] as string)).toMatchObject({ msg: "request failed", code: "KV_ERR_KMS" });
    expect(await repeated.promise).toMatchObject({
      msg: "request failed (repeated)",
      key: "KV_ERR_KMS",
      suppressed: 4,
    });
  });

  test("bad requests from a client are logged at debug, not warn", async () => {
    const captured = new CapturingLog("warn");
    await using server = await startServer(testConfig(), captured.log);
    await using c = await KvClient.connect({ port: server.port });
    await Promise.allSettled(Array.from({ length: 50 }, () => c.get(new Uint8Array(2000))));
    expect(await c.get("fine")).toBeUndefined();
    expect(captured.lines).toEqual([]);
  });
});

describe("logs", () => {
  test("--log-format json writes one JSON object per line, fields included, values never", async () => {
    const lines: string[] = [];
    const log = createLogger("debug", (l) => lines.push(l), "json");
    await using server = await startServer(testConfig({ logFormat: "json" }), log);
    await using c = await KvClient.connect({ port: server.port });
    await c.set("secret-key", "secret value 123");
    await Promise.allSettled([c.get(new Uint8Array(2000))]);
    expect(lines.length).toBeGreaterThan(0);
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const refused = parsed.find((p) => p.msg === "request refused");
    expect(refused).toMatchObject({ level: "debug", code: "KV_ERR_KEY_TOO_LARGE", op: "get" });
    expect(typeof refused?.time).toBe("string");
    expect(lines.join("\n")).not.toContain("secret value 123");
  });

  test("the AWS SDK's warnings come out through the server's logger", async () => {
    const lines: string[] = [];
    const sdk = awsSdkLogger(createLogger("debug", (l) => lines.push(l), "json"));
    sdk.warn("a request has exceeded the configured requestTimeout", { ms: 5 });
    sdk.info("chatter");
    sdk.error({ commandName: "DescribeTableCommand", error: { name: "ResourceNotFoundException" } });
    sdk.trace("noise");
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(parsed[0]).toMatchObject({ level: "warn", source: "aws-sdk" });
    expect(String(parsed[0]?.msg)).toContain("requestTimeout");
    expect(parsed[1]).toMatchObject({ level: "debug", msg: "chatter" });
    // The SDK logs expected failures at error too; the server reports real ones itself.
    expect(parsed[2]).toMatchObject({ level: "debug" });
    expect(String(parsed[2]?.msg)).toContain("ResourceNotFoundException");
    expect(parsed).toHaveLength(3);
  });
});

describe("RepeatLimiter", () => {
  test("each key gets its own window, and a quiet key logs again at once", () => {
    let now = 0;
    const lines: string[] = [];
    const r = new RepeatLimiter(
      createLogger("warn", (l) => lines.push(l)),
      1000,
      () => now,
    );
    r.warn("A", "a failed");
    r.warn("A", "a failed");
    r.warn("B", "b failed");
    expect(lines.length).toBe(2);
    now = 1000;
    r.warn("A", "a failed");
    expect(lines.length).toBe(3);
  });
});

describe("the memory store", () => {
  test("keeps its own copy of a value, so later changes to the caller's bytes do not reach it", () => {
    const store = new MemoryStore();
    const v = Uint8Array.of(1, 2, 3);
    store.setSync(Uint8Array.of(9), v);
    v[0] = 99;
    expect(store.getSync(Uint8Array.of(9))).toEqual(Uint8Array.of(1, 2, 3));
  });
});
