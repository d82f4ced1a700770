import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { KvClient } from "../../client/kv-client.js";
import type { KvStore } from "../../src/store/kv-store.js";
import { encodeGetRequest } from "../../src/wire/client-codec.js";
import { onBackends, useBackends } from "../support/backends.js";
import { FaultProxy } from "../support/fault-proxy.js";
import { RawConnection, startTestServer } from "../support/harness.js";
import { spawnServer } from "../support/process.js";
import { wrapping } from "../support/stores.js";

// Starts DynamoDB Local and servers; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

const backends = useBackends();
const enc = new TextEncoder();
const table = () => `fair-${randomBytes(6).toString("hex")}`;

/**
 * A store wrapper that tells when a get of a key has been handed to the
 * store (`reached`: it now waits there) and when the store has settled it
 * (`settled`: answered, or dropped).
 */
function watchGets() {
  const events = new Map<string, PromiseWithResolvers<void>>();
  const of = (event: string) => {
    let e = events.get(event);
    if (e === undefined) {
      e = Promise.withResolvers<void>();
      events.set(event, e);
    }
    return e;
  };
  const wrapStore = (store: KvStore) =>
    wrapping(store, {
      getStream: (key, cancel) => {
        const name = new TextDecoder().decode(key);
        const read = (store.getStream as NonNullable<KvStore["getStream"]>)(key, cancel);
        of(`reached ${name}`).resolve();
        const done = () => of(`settled ${name}`).resolve();
        read.then(done, done);
        return read;
      },
    });
  return {
    wrapStore,
    reached: (name: string) => of(`reached ${name}`).promise,
    settled: (name: string) => of(`settled ${name}`).promise,
  };
}

const HOT = new TextEncoder().encode("hot");

/** `n` framed gets of distinct keys, as one write. */
function gets(prefix: string, n: number): Uint8Array {
  return new Uint8Array(
    Buffer.concat(Array.from({ length: n }, (_, i) => encodeGetRequest(enc.encode(`${prefix}${i}`)))),
  );
}

describe("fair admission on the DynamoDB store", () => {
  test("a connection's get is admitted before a greedy connection's queued gets, as DynamoDB sees them", async () => {
    await using proxy = new FaultProxy(backends.ddb.endpoint);
    const watch = watchGets();
    await using server = await startTestServer(
      { ...onBackends(backends, table()), dynamodbEndpoint: proxy.endpoint, maxPending: 1 },
      { wrapStore: watch.wrapStore },
    );
    await using modest = await KvClient.connect({ port: server.port });
    const batches = proxy.count("BatchGetItem");
    proxy.rule = (op, n) => (op === "BatchGetItem" && n === batches + 1 ? "hang" : undefined);
    await using greedy = await RawConnection.open(server.port);
    greedy.send(gets("g", 20));
    // The greedy connection's first get holds the one slot, hung at DynamoDB; its other 19 wait.
    await proxy.whenHung();
    await watch.reached("g19");
    const mine = modest.get("mine");
    await watch.reached("mine");
    proxy.releaseHung();
    expect(await mine).toBeUndefined();
    for (let i = 0; i < 20; i++) expect(await greedy.next()).not.toBeNull();
    // Admitted first-come first-served, "mine" would have come after all twenty.
    expect(proxy.batchKeys.slice(0, 3)).toEqual(["g0", "mine", "g1"]);
    expect(new Set(proxy.batchKeys).size).toBe(21);
  });

  test("a closed connection's gets waiting for admission never reach DynamoDB", async () => {
    await using proxy = new FaultProxy(backends.ddb.endpoint);
    const watch = watchGets();
    // One store operation at a time, so everything else waits for admission.
    const server = await startTestServer(
      { ...onBackends(backends, table()), dynamodbEndpoint: proxy.endpoint, maxPending: 1 },
      { wrapStore: watch.wrapStore },
    );
    try {
      await using modest = await KvClient.connect({ port: server.port });
      const batches = proxy.count("BatchGetItem");
      proxy.rule = (op, n) => (op === "BatchGetItem" && n === batches + 1 ? "hang" : undefined);
      const greedy = await RawConnection.open(server.port);
      greedy.send(gets("g", 50));
      // The greedy connection's first get holds the one slot, hung at DynamoDB; its other 49 wait for admission.
      await proxy.whenHung();
      await watch.reached("g49");
      // Gone, not half-closed: a peer that only shuts its write side still gets its answers.
      greedy.terminate();
      await greedy.closed;
      const mine = modest.get("mine");
      await watch.reached("mine");
      proxy.releaseHung();
      expect(await mine).toBeUndefined();
      // The greedy connection's last queued get has been dealt with, so every one before it has too.
      await watch.settled("g49");
    } finally {
      await server[Symbol.asyncDispose]();
    }
    // Anything the server sent arrived before this request, sent after it stopped.
    await fetch(proxy.endpoint, { method: "POST", headers: { "x-amz-target": "DynamoDB_20120810.Probe" } });
    // The greedy connection's first get (twice if the hung call was retried) and the modest one.
    expect(new Set(proxy.batchKeys)).toEqual(new Set(["g0", "mine"]));
  });

  test("connections reset just before the server drains have their queued gets dropped, not run for nobody", async () => {
    // A server process of its own: its event loop is not the clients', as in production.
    await using proxy = new FaultProxy(backends.ddb.endpoint);
    const settings = onBackends(backends, table());
    await using proc = await spawnServer([
      "--store",
      "dynamodb",
      "--port",
      "0",
      "--table",
      settings.table,
      "--kms-key-id",
      "alias/kvs-test",
      "--region",
      "us-east-1",
      "--dynamodb-endpoint",
      proxy.endpoint,
      "--kms-endpoint",
      settings.kmsEndpoint,
      "--log-level",
      "info",
    ]);
    {
      await using seed = await KvClient.connect({ port: proc.port });
      await seed.set("hot", new Uint8Array(1024).fill(1));
    }
    // Clients that pipeline gets of one key and never read: the server's answers back up, it stops reading
    // them, and each holds as many gets in flight as a connection may. Gets of one key share a read, so they
    // are answered slowly, and a connection stays held back, not reading, for seconds.
    const burst = new Uint8Array(Buffer.concat(Array.from({ length: 4096 }, () => encodeGetRequest(HOT))));
    const greedy = await Promise.all(
      Array.from({ length: 50 }, () =>
        Bun.connect({
          hostname: "127.0.0.1",
          port: proc.port,
          socket: {
            open(s) {
              s.pause();
              s.write(burst);
            },
            drain(s) {
              s.write(burst);
            },
            data() {},
          },
        }),
      ),
    );
    // Until their shared reads are under way.
    while (proxy.count("BatchGetItem") < 30) await Bun.sleep(20);
    // Gone while the server is not reading them; the drain begins before it would read them again.
    for (const s of greedy) s.terminate();
    const atReset = proxy.count("BatchGetItem");
    proc.proc.kill("SIGTERM");
    expect(await proc.proc.exited).toBe(0);
    // What was with DynamoDB finishes and what waited is dropped: a few more reads at most. Before, the drain
    // ran every queued get of theirs, one shared read after another (hundreds of reads, seconds).
    expect(proxy.count("BatchGetItem") - atReset).toBeLessThan(50);
  });

  test("a closed connection's gets waiting in the read batcher are dropped, not sent", async () => {
    await using proxy = new FaultProxy(backends.ddb.endpoint);
    const watch = watchGets();
    // A partial batch waits a second while another is in flight, so gets can be caught waiting in the batcher.
    const server = await startTestServer(
      { ...onBackends(backends, table()), dynamodbEndpoint: proxy.endpoint, batchWindowMs: 1000 },
      { wrapStore: watch.wrapStore },
    );
    try {
      const batches = proxy.count("BatchGetItem");
      proxy.rule = (op, n) => (op === "BatchGetItem" && n === batches + 1 ? "hang" : undefined);
      const conn = await RawConnection.open(server.port);
      conn.send(gets("first", 1));
      await proxy.whenHung();
      // Admitted, these wait in the batcher for the hung batch or the window.
      conn.send(gets("queued", 40));
      await watch.reached("queued39");
      await using other = await KvClient.connect({ port: server.port });
      // Another connection's get joins the same waiting batch: answered, so that batch did go out.
      const theirs = other.get("theirs");
      await watch.reached("theirs");
      conn.terminate();
      await conn.closed;
      proxy.releaseHung();
      expect(await theirs).toBeUndefined();
      await watch.settled("queued39");
    } finally {
      await server[Symbol.asyncDispose]();
    }
    await fetch(proxy.endpoint, { method: "POST", headers: { "x-amz-target": "DynamoDB_20120810.Probe" } });
    // The hung batch (twice if retried), then a batch holding only the other connection's key.
    expect(new Set(proxy.batchKeys)).toEqual(new Set(["first0", "theirs"]));
  });
});
