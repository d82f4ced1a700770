import { describe, expect, test } from "bun:test";
import { KvClient } from "../../client/kv-client.js";
import type { MemoryStore } from "../../src/store/memory-store.js";
import type { KvError } from "../../src/wire/errors.js";
import { codeOf } from "../support/code-of.js";
import { startTestServer } from "../support/harness.js";
import { wrapping } from "../support/stores.js";

const dec = new TextDecoder();

/** A memory store whose gets of `held` wait until the test releases them. */
function holdingGetsOf(held: string) {
  const releases: (() => void)[] = [];
  const arrived = Promise.withResolvers<void>();
  const wrap = (inner: MemoryStore) =>
    wrapping(inner, {
      getSync: undefined,
      get: async (key) => {
        if (dec.decode(key) === held) {
          arrived.resolve();
          await new Promise<void>((resolve) => releases.push(resolve));
        }
        return inner.get(key);
      },
    });
  const release = () => {
    for (const r of releases.splice(0)) r();
  };
  return { wrap, arrived: arrived.promise, release };
}

describe("per-request deadlines and AbortSignal", () => {
  test("connecting to a port nothing listens on rejects with KV_ERR_CONNECT, naming the address and ECONNREFUSED", async () => {
    const server = await startTestServer();
    const port = server.port;
    await server.stop();
    const err = await KvClient.connect({ port }).then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string },
    );
    expect(err?.code).toBe("KV_ERR_CONNECT");
    expect(err?.message).toBe(
      `cannot connect to 127.0.0.1:${port}: ECONNREFUSED (nothing listens there: is the server running, and on this port?)`,
    );
  });

  test("a request past its deadline rejects with KV_ERR_TIMEOUT, and later answers still reach their own requests", async () => {
    const hold = holdingGetsOf("slow");
    await using server = await startTestServer({}, { wrapStore: (s) => hold.wrap(s as MemoryStore) });
    await using c = await KvClient.connect({ port: server.port });
    await c.set("fast", "f");
    const slow = c.get("slow", { timeoutMs: 50 });
    const after = c.getString("fast");
    expect(await codeOf(slow)).toBe("KV_ERR_TIMEOUT");
    hold.release();
    // The slow answer arrives after its caller gave up; it is dropped, not handed to the next request.
    expect(await after).toBe("f");
    expect(await c.getString("fast")).toBe("f");
  });

  test("an aborted request rejects with KV_ERR_ABORTED at once; one aborted before it is sent is never sent", async () => {
    const hold = holdingGetsOf("slow");
    await using server = await startTestServer({}, { wrapStore: (s) => hold.wrap(s as MemoryStore) });
    await using c = await KvClient.connect({ port: server.port });
    const controller = new AbortController();
    const slow = c.get("slow", { signal: controller.signal });
    await hold.arrived;
    controller.abort();
    expect(await codeOf(slow)).toBe("KV_ERR_ABORTED");
    expect(await codeOf(c.set("never", "x", { signal: controller.signal }))).toBe("KV_ERR_ABORTED");
    hold.release();
    expect(await c.exists("never")).toBe(false);
  });
});

describe("KvClient with reconnect", () => {
  test("a graceful stop loses no request: what it read is answered, what it did not is sent again, in order, after reconnecting", async () => {
    const first = await startTestServer();
    const port = first.port;
    await using c = await KvClient.connect({ reconnect: true, port });
    // Many writes of one key in flight: if any were resent out of order, the last value would not be the last write.
    // 2 MB of them, more than the server reads at once: when the first is answered, most are unread.
    const inFlight = Array.from({ length: 2000 }, (_, i) => c.set("k", `v${i}`.padEnd(1024)));
    await inFlight[0];
    await first.stop();
    await using _second = await startTestServer({ port });
    expect((await Promise.allSettled(inFlight)).filter((r) => r.status === "rejected")).toEqual([]);
    expect((await c.getString("k"))?.trimEnd()).toBe("v1999");
    expect(c.reconnects).toBe(1);
    expect(c.resent).toBeGreaterThan(0);
    expect(c.resent).toBeLessThan(2000);
  });

  test("a call made while it reconnects, even from onConnect, is sent after the calls a drain left unread", async () => {
    const first = await startTestServer();
    const port = first.port;
    let late: Promise<unknown> | undefined;
    let connects = 0;
    await using c = await KvClient.connect({
      reconnect: true,
      port,
      onConnect: () => {
        // On the new connection, before the resent calls go out: it must still queue behind them.
        if (++connects === 2) late = c.set("k", "late");
      },
    });
    const inFlight = Array.from({ length: 2000 }, (_, i) => c.set("k", `v${i}`.padEnd(1024)));
    await inFlight[0];
    await first.stop();
    await using _second = await startTestServer({ port });
    expect((await Promise.allSettled(inFlight)).filter((r) => r.status === "rejected")).toEqual([]);
    await late;
    expect(c.resent).toBeGreaterThan(0);
    expect(await c.getString("k")).toBe("late");
  });

  test("it lists, streams and batches as KvClient does, and reports connect, disconnect and reconnecting across a restart", async () => {
    const first = await startTestServer();
    const port = first.port;
    const events: string[] = [];
    const retrying = Promise.withResolvers<void>();
    await using c = await KvClient.connect({
      reconnect: true,
      port,
      baseDelayMs: 5,
      maxDelayMs: 20,
      onConnect: ({ reconnect }) => events.push(reconnect ? "reconnected" : "connected"),
      onDisconnect: (reason) => events.push(`disconnected ${reason.code}`),
      onReconnecting: ({ attempt, error }) => {
        if (attempt === 1) events.push(`reconnecting ${error.code}`);
        retrying.resolve();
      },
    });
    expect(
      (
        await c.mset([
          ["a", "1"],
          ["b", "2"],
          ["c", "3"],
        ])
      ).every((r) => r.ok),
    ).toBe(true);
    const keys: string[] = [];
    for await (const k of c.keys()) keys.push(dec.decode(k));
    expect(keys.sort()).toEqual(["a", "b", "c"]);
    const big = new Uint8Array(2 * 1024 * 1024).map((_, i) => i % 253);
    async function* pieces() {
      for (let at = 0; at < big.length; at += 256 * 1024) yield big.subarray(at, at + 256 * 1024);
    }
    await c.setFrom("big", big.length, pieces());
    let received = 0;
    await c.getTo("big", (piece) => {
      received += piece.length;
    });
    expect(received).toBe(big.length);
    for await (const e of c.entries({ prefix: "a" })) expect(dec.decode(e.value)).toBe("1");

    await first.stop();
    // The next call finds no server, retries, and lands on the one that comes back.
    const later = c.getString("a");
    await retrying.promise;
    await using _second = await startTestServer({ port });
    await c.set("a", "again");
    expect(await later).toBeUndefined();
    expect(events).toEqual(["connected", "disconnected KV_ERR_DRAINED", "reconnecting KV_ERR_CONNECT", "reconnected"]);
  });

  test("a request on a connection that dies unanswered rejects with a clear KV_ERR_CONNECTION_CLOSED and is not resent", async () => {
    // A peer that reads one request and hangs up without answering: a crash, as the client sees it.
    let requests = 0;
    const crashing = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(socket) {
          requests++;
          socket.terminate();
        },
      },
    });
    try {
      await using c = await KvClient.connect({ reconnect: true, port: crashing.port, reconnectTimeoutMs: 300 });
      let message = "";
      try {
        await c.set("k", "v");
      } catch (err) {
        expect((err as { code?: string }).code).toBe("KV_ERR_CONNECTION_CLOSED");
        message = (err as Error).message;
      }
      expect(message).toContain("may or may not have been applied");
      expect(requests).toBe(1);
      // The next call gets a fresh connection.
      await c.get("k").catch(() => {});
      expect(c.reconnects).toBe(1);
      expect(requests).toBe(2);
    } finally {
      crashing.stop(true);
    }
  });

  test("when no server comes back, a call rejects after the reconnect timeout, naming the address", async () => {
    const gone = await startTestServer();
    const port = gone.port;
    const reported: KvError[] = [];
    await using c = await KvClient.connect({
      reconnect: true,
      port,
      reconnectTimeoutMs: 200,
      baseDelayMs: 10,
      onError: (error) => reported.push(error),
    });
    await gone.stop();
    const started = performance.now();
    let err: unknown;
    try {
      await c.get("k");
    } catch (e) {
      err = e;
    }
    expect((err as { code?: string }).code).toBe("KV_ERR_CONNECTION_CLOSED");
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
    // It gives up once the next wait would pass the timeout, not long after it.
    expect(performance.now() - started).toBeLessThan(1_000);
    // onError reports the giving up, with the error the call rejected with; the next call tries again.
    expect(reported).toEqual([err as KvError]);
    expect(await codeOf(c.get("k"))).toBe("KV_ERR_CONNECTION_CLOSED");
    expect(reported.length).toBe(2);
    expect(c.closed).toBe(false);
  });
});

describe("KvClient without reconnect", () => {
  test("a drain rejects the calls it did not read with KV_ERR_DRAINED, and every later call too", async () => {
    const server = await startTestServer();
    const disconnects: string[] = [];
    await using c = await KvClient.connect({ port: server.port, onDisconnect: (r) => disconnects.push(r.code) });
    const inFlight = Array.from({ length: 2000 }, (_, i) => c.set("k", `v${i}`.padEnd(1024)));
    await inFlight[0];
    await server.stop();
    const codes = new Set(
      (await Promise.allSettled(inFlight)).map((r) => (r.status === "fulfilled" ? "ok" : (r.reason as KvError).code)),
    );
    expect(codes).toEqual(new Set(["ok", "KV_ERR_DRAINED"]));
    expect(c.closed).toBe(true);
    expect((await c.whenClosed()).code).toBe("KV_ERR_DRAINED");
    expect(await codeOf(c.get("k"))).toBe("KV_ERR_DRAINED");
    expect(disconnects).toEqual(["KV_ERR_DRAINED"]);
    expect(c.reconnects).toBe(0);
  });
});
