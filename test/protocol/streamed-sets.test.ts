import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { ScanCommand } from "@aws-sdk/client-dynamodb";
import type { Socket } from "bun";
import { KvClient } from "../../client/kv-client.js";
import { Counter } from "../../src/metrics.js";
import { UPLOAD_WINDOW_CHUNKS } from "../../src/store/chunk-upload.js";
import { CHUNK_BYTES, ItemKind } from "../../src/store/item-format.js";
import { forwardingSink, type KvStore, type ValueSink } from "../../src/store/kv-store.js";
import { decodeResponse, encodeGetRequest } from "../../src/wire/client-codec.js";
import { GetError, SetError } from "../../src/wire/envelope.js";
import { FrameDecoder } from "../../src/wire/frame-decoder.js";
import { varintSize, writeVarint } from "../../src/wire/varint.js";
import { onBackends, useBackends } from "../support/backends.js";
import { startTestServer } from "../support/harness.js";
import { anError, rejection } from "../support/rejection.js";
import { wrapping } from "../support/stores.js";
import { patterned, same } from "../support/values.js";
import { msg } from "../support/wire.js";

// Moves tens of MiB through DynamoDB Local; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(120_000);

const backends = useBackends();
const MiB = 1024 * 1024;
const enc = new TextEncoder();

function dynamo(table = `sset-${randomBytes(4).toString("hex")}`) {
  return onBackends(backends, table);
}

/** A length-prefixed frame around `body`. */
function framed(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(varintSize(body.length) + body.length);
  out.set(body, writeVarint(out, 0, body.length));
  return out;
}

/** A set frame as every encoder writes it: type, then set_req { req { key, value } }. */
function setFrame(key: string, value: Uint8Array): Uint8Array {
  return framed(msg([1, 1], [2, msg([1, msg([1, enc.encode(key)], [2, value])])]));
}

/**
 * A raw client that writes whole byte strings however long (waiting for
 * `drain`, as Bun's write takes only what the kernel accepts) and reads
 * response frames.
 */
async function rawClient(port: number) {
  const decoder = new FrameDecoder(256 * MiB);
  const frames: Uint8Array[] = [];
  let frameWaiter: ((f: Uint8Array | null) => void) | undefined;
  let drained: (() => void) | undefined;
  const closed = Promise.withResolvers<void>();
  let isClosed = false;
  const socket: Socket<undefined> = await Bun.connect<undefined>({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, chunk) {
        decoder.push(chunk, (f) => {
          const copy = f.slice();
          if (frameWaiter) {
            const w = frameWaiter;
            frameWaiter = undefined;
            w(copy);
          } else frames.push(copy);
        });
      },
      drain() {
        drained?.();
      },
      close() {
        isClosed = true;
        frameWaiter?.(null);
        closed.resolve();
      },
      error() {},
    },
  });
  return {
    async send(bytes: Uint8Array): Promise<void> {
      let at = 0;
      while (at < bytes.length) {
        at += socket.write(bytes.subarray(at));
        if (at < bytes.length) await new Promise<void>((resolve) => (drained = resolve));
      }
    },
    next(): Promise<Uint8Array | null> {
      const f = frames.shift();
      if (f !== undefined) return Promise.resolve(f);
      if (isClosed) return Promise.resolve(null);
      return new Promise((resolve) => (frameWaiter = resolve));
    },
    terminate: () => socket.terminate(),
    end: () => socket.end(),
    closed: closed.promise,
  };
}

/** The chunk items in `table`. */
async function chunkItems(table: string): Promise<number> {
  const out = await backends.client.send(new ScanCommand({ TableName: table }));
  return (out.Items ?? []).filter((item) => item.pk?.B?.[0] === ItemKind.chunk).length;
}

/** A store whose streamed sets go through `watch`, which wraps each sink (tests observe or hold its calls). */
function watchingSinks(watch: (sink: ValueSink) => Parameters<typeof forwardingSink>[1]) {
  return {
    wrapStore: (inner: KvStore) =>
      wrapping(inner, {
        setStream(key, size, cancel): ValueSink {
          const sink = inner.setStream?.(key, size, cancel) as ValueSink;
          return forwardingSink(sink, watch(sink));
        },
      }),
  };
}

/** Resolves once `condition` holds, checking after each turn of the event loop. */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

describe("streamed sets", () => {
  test("values around the chunk, window and budget boundaries are stored byte-exact as they arrive", async () => {
    const budget = 2 * MiB;
    // Watches the connection honour each sink's window: no write between a full window and its ready.
    let fulls = 0;
    let overruns = 0;
    await using server = await startTestServer(
      { ...dynamo(), streamFromBytes: 1024, maxBufferedBytes: budget },
      watchingSinks((sink) => {
        let full = false;
        return {
          write(b) {
            if (full) overruns++;
            full = !sink.write(b);
            if (full) fulls++;
            return !full;
          },
          ready: async () => {
            await sink.ready();
            full = false;
          },
        };
      }),
    );
    await using c = await KvClient.connect({ port: server.port });
    const window = UPLOAD_WINDOW_CHUNKS * CHUNK_BYTES;
    const sizes = [
      300_000, // streamed, but small enough for one item: collected and set whole
      2 * CHUNK_BYTES - 1,
      2 * CHUNK_BYTES,
      2 * CHUNK_BYTES + 1,
      window - 1,
      window,
      window + 1,
      budget - 1,
      budget,
      budget + 1,
      3 * budget + 5,
    ];
    const values = sizes.map((n, i) => patterned(n, i + 1));
    await Promise.all(values.map((v, i) => c.set(`b${i}`, v)));
    expect(server.counters.get(Counter.streamedFrames)).toBe(sizes.length);
    const got = await Promise.all(values.map((_, i) => c.get(`b${i}`)));
    for (const [i, v] of values.entries()) {
      expect({ size: sizes[i], same: same(got[i], v) }).toEqual({ size: sizes[i], same: true });
    }
    // Replacing streamed values with streamed values keeps them exact too.
    await c.set("b3", values[6] as Uint8Array);
    expect(same(await c.get("b3"), values[6] as Uint8Array)).toBe(true);
    expect(fulls).toBeGreaterThan(0);
    expect(overruns).toBe(0);
  });

  test("a value sent before its key is buffered and stored byte-exact", async () => {
    await using server = await startTestServer({ ...dynamo(), streamFromBytes: 1024 });
    const value = patterned(3 * MiB + 11, 7);
    const raw = await rawClient(server.port);
    await raw.send(framed(msg([1, 1], [2, msg([1, msg([2, value], [1, enc.encode("late-key")])])])));
    const answer = decodeResponse((await raw.next()) as Uint8Array);
    expect(answer).toMatchObject({ kind: "set", error: SetError.Ok });
    expect(server.counters.get(Counter.streamedFrames)).toBe(1);
    await using c = await KvClient.connect({ port: server.port });
    expect(same(await c.get("late-key"), value)).toBe(true);
    raw.end();
  });

  test("a client that disconnects mid-upload commits nothing, and the chunks it sent are deleted", async () => {
    const settings = dynamo();
    const written = Promise.withResolvers<void>();
    let bytes = 0;
    const server = await startTestServer(
      { ...settings, streamFromBytes: 1024 },
      watchingSinks((sink) => ({
        write(b) {
          bytes += b.length;
          if (bytes >= 3 * MiB) written.resolve();
          return sink.write(b);
        },
      })),
    );
    try {
      await using c = await KvClient.connect({ port: server.port });
      await c.set("k", "old");
      const raw = await rawClient(server.port);
      const frame = setFrame("k", patterned(8 * MiB, 3));
      // Half the frame; the server takes it as it comes.
      raw.send(frame.subarray(0, 4 * MiB));
      await written.promise;
      raw.terminate();
      await raw.closed;
      await until(() => server.connectionCount === 1);
      expect(await c.getString("k")).toBe("old");
    } finally {
      // Closing waits for every upload to settle, an abandoned one's deletions included.
      await server.stop();
    }
    expect(await chunkItems(settings.table)).toBe(0);
    await using again = await startTestServer(settings);
    await using c = await KvClient.connect({ port: again.port });
    expect(await c.getString("k")).toBe("old");
  });

  test("a value over the maximum is read to its end and refused, and the connection goes on", async () => {
    const settings = dynamo();
    await using server = await startTestServer({
      ...settings,
      streamFromBytes: 1024,
      maxValueBytes: 2 * MiB,
      maxFrameBytes: 16 * MiB,
    });
    const raw = await rawClient(server.port);
    await raw.send(setFrame("big", patterned(5 * MiB, 1)));
    expect(decodeResponse((await raw.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Internal });
    await raw.send(encodeGetRequest(enc.encode("big")));
    expect(decodeResponse((await raw.next()) as Uint8Array)).toMatchObject({ kind: "get", error: GetError.NotFound });
    expect(await chunkItems(settings.table)).toBe(0);
    raw.end();
  });

  test("a streamed set that repeats its key after the value is refused and commits nothing", async () => {
    const settings = dynamo();
    await using server = await startTestServer({ ...settings, streamFromBytes: 1024 });
    const raw = await rawClient(server.port);
    const value = patterned(2 * MiB, 2);
    await raw.send(framed(msg([1, 1], [2, msg([1, msg([1, enc.encode("a")], [2, value], [1, enc.encode("b")])])])));
    expect(decodeResponse((await raw.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Internal });
    await using c = await KvClient.connect({ port: server.port });
    expect(await c.get("a")).toBeUndefined();
    expect(await c.get("b")).toBeUndefined();
    await server.stop();
    expect(await chunkItems(settings.table)).toBe(0);
    raw.end();
  });

  test("a stalled DynamoDB answers a streamed set internal within the deadline instead of pausing the client forever", async () => {
    const settings = dynamo();
    let stall = false;
    await using server = await startTestServer(
      { ...settings, streamFromBytes: 1024, requestTimeoutMs: 500 },
      // A backend that never frees the window.
      watchingSinks((sink) => ({
        write: (b) => (stall ? false : sink.write(b)),
        ready: () => (stall ? new Promise<void>(() => {}) : sink.ready()),
      })),
    );
    stall = true;
    const raw = await rawClient(server.port);
    await raw.send(setFrame("stuck", patterned(3 * MiB, 4)));
    expect(decodeResponse((await raw.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Internal });
    raw.end();
  });
});

describe("the byte budget", () => {
  test("with the budget spent, connections reading large frames pause and resume in turn, and small requests still flow", async () => {
    // Memory store and a high streaming threshold: 3 MiB frames are assembled whole, the budget's first case.
    await using server = await startTestServer({ maxBufferedBytes: MiB, streamFromBytes: 64 * MiB });
    const a = await rawClient(server.port);
    const b = await rawClient(server.port);
    const valueA = patterned(3 * MiB, 1);
    const valueB = patterned(3 * MiB, 2);
    const frameA = setFrame("a", valueA);
    const frameB = setFrame("b", valueB);
    // A goes past the budget with most of its frame and holds it.
    await a.send(frameA.subarray(0, 2 * MiB));
    await until(() => server.budget.used >= MiB);
    // B starts a frame: it must wait.
    const bSent = b.send(frameB);
    await until(() => server.budget.waiting === 1);
    expect(server.counters.get(Counter.budgetPauses)).toBe(1);
    // Small requests on another connection are not held up.
    await using c = await KvClient.connect({ port: server.port });
    await c.set("small", "s");
    expect(await c.getString("small")).toBe("s");
    // A finishes: B reads on.
    await a.send(frameA.subarray(2 * MiB));
    expect(decodeResponse((await a.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Ok });
    await bSent;
    expect(decodeResponse((await b.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Ok });
    expect(same(await c.get("a"), valueA)).toBe(true);
    expect(same(await c.get("b"), valueB)).toBe(true);
    await until(() => server.budget.used === 0);
    a.end();
    b.end();
  });

  test("a connection that trickles a large frame while others wait is closed after the hold limit, and the next goes on", async () => {
    await using server = await startTestServer({ maxBufferedBytes: MiB, streamFromBytes: 64 * MiB, budgetHoldMs: 300 });
    const a = await rawClient(server.port);
    const b = await rawClient(server.port);
    const frameA = setFrame("a", patterned(3 * MiB, 1));
    const valueB = patterned(3 * MiB, 2);
    // A takes the budget with most of its frame, then sends nothing more: a client trickling, or stuck.
    await a.send(frameA.subarray(0, 2 * MiB));
    await until(() => server.budget.used >= MiB);
    const bSent = b.send(setFrame("b", valueB));
    await until(() => server.budget.waiting === 1);
    // After the hold limit A is closed, unanswered, and B's frame is read and stored.
    expect(await a.next()).toBeNull();
    await bSent;
    expect(decodeResponse((await b.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Ok });
    await using c = await KvClient.connect({ port: server.port });
    expect(same(await c.get("b"), valueB)).toBe(true);
    expect(await c.get("a")).toBeUndefined();
    b.end();
  });

  test("one streamed value many times the budget still goes through within its window", async () => {
    await using server = await startTestServer({ ...dynamo(), maxBufferedBytes: MiB, streamFromBytes: 1024 });
    await using c = await KvClient.connect({ port: server.port });
    const value = patterned(12 * MiB + 1, 9);
    await c.set("huge", value);
    expect(same(await c.get("huge"), value)).toBe(true);
    expect(server.counters.get(Counter.streamedFrames)).toBeGreaterThanOrEqual(1);
  });
});

describe("the client's streams", () => {
  async function* pieces(value: Uint8Array, size: number) {
    for (let at = 0; at < value.length; at += size) yield value.subarray(at, at + size);
  }

  test("setFrom sends a value piece by piece with requests issued meanwhile after it, and getTo takes it piece by piece", async () => {
    await using server = await startTestServer({ ...dynamo(), streamFromBytes: 1024 });
    await using c = await KvClient.connect({ port: server.port });
    const value = patterned(9 * MiB + 17, 3);
    await c.set("k", "before");
    const upload = c.setFrom("k", value.length, pieces(value, 100_000));
    // Issued while the upload writes: sent after its frame, so it reads what the upload stored.
    const [, during] = await Promise.all([upload, c.get("k")]);
    expect(same(during, value)).toBe(true);
    const got: Uint8Array[] = [];
    expect(await c.getTo("k", (p) => void got.push(p.slice()))).toBe(true);
    expect(got.length).toBeGreaterThan(1);
    expect(Math.max(...got.map((p) => p.length))).toBeLessThan(value.length);
    expect(same(new Uint8Array(Buffer.concat(got)), value)).toBe(true);
    expect(await c.getTo("absent", () => {})).toBe(false);
  });

  test("a source that ends short closes the connection, rejects, and commits nothing", async () => {
    await using server = await startTestServer({ ...dynamo(), streamFromBytes: 1024 });
    const c = await KvClient.connect({ port: server.port });
    const value = patterned(2 * MiB, 5);
    expect(await rejection(c.setFrom("short", value.length + 1, pieces(value, 65536)))).toEqual(anError(/ended after/));
    expect(await rejection(c.get("x"))).toMatchObject({ code: "KV_ERR_PROTOCOL" });
    await c.close();
    await using again = await KvClient.connect({ port: server.port });
    expect(await again.get("short")).toBeUndefined();
  });
});
