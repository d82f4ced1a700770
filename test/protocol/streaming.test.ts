import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { type AttributeValue, DeleteItemCommand, GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import type { Socket } from "bun";
import { KvClient } from "../../client/kv-client.js";
import { STREAM_FROM_BYTES } from "../../src/store/dynamo-store.js";
import { CHUNK_BYTES, chunkPk, headPk } from "../../src/store/item-format.js";
import type { KvStore, ValueStream } from "../../src/store/kv-store.js";
import { decodeResponse, encodeGetRequest } from "../../src/wire/client-codec.js";
import { GetError } from "../../src/wire/envelope.js";
import { ErrorCode } from "../../src/wire/errors.js";
import { FrameDecoder } from "../../src/wire/frame-decoder.js";
import { onBackends, useBackends } from "../support/backends.js";
import { startTestServer } from "../support/harness.js";
import { anError, rejection } from "../support/rejection.js";
import { wrapping } from "../support/stores.js";
import { patterned, same } from "../support/values.js";

// Moves tens of MiB through DynamoDB Local; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(120_000);

const backends = useBackends();
const MiB = 1024 * 1024;

function dynamo(table = `stream-${randomBytes(4).toString("hex")}`) {
  return onBackends(backends, table);
}

/**
 * A raw connection that sends one get and collects its answer, and can stop
 * reading (its socket paused) to play a client that does not read.
 */
async function rawGet(port: number, key: string) {
  const decoder = new FrameDecoder(256 * MiB);
  const frame = Promise.withResolvers<Uint8Array>();
  const closed = Promise.withResolvers<void>();
  const firstBytes = Promise.withResolvers<void>();
  let received = 0;
  const socket: Socket<undefined> = await Bun.connect<undefined>({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, chunk) {
        received += chunk.length;
        firstBytes.resolve();
        decoder.push(chunk, (f) => {
          frame.resolve(f.slice());
        });
      },
      close() {
        closed.resolve();
        frame.reject(new Error("closed before the answer was whole"));
      },
    },
  });
  socket.write(encodeGetRequest(new TextEncoder().encode(key)));
  return {
    socket,
    frame: frame.promise,
    closed: closed.promise,
    firstBytes: firstBytes.promise,
    received: () => received,
  };
}

/**
 * A store wrapper whose every streamed get is 512 pieces of one chunk each
 * (190 MiB, far more than socket buffers and any window), counting the
 * pieces pulled and noting a cancel.
 */
function countedPieces() {
  const cancelled = Promise.withResolvers<void>();
  const source = {
    piece: new Uint8Array(CHUNK_BYTES).fill(9),
    pieces: 512,
    pulled: 0,
    cancelled: cancelled.promise,
    wrapStore: (inner: KvStore) =>
      wrapping(inner, {
        async getStream() {
          const stream: ValueStream = {
            size: source.pieces * source.piece.length,
            next: async () => {
              if (source.pulled === source.pieces) return undefined;
              source.pulled++;
              return source.piece;
            },
            cancel: () => cancelled.resolve(),
          };
          return stream;
        },
      }),
  };
  return source;
}

describe("streamed gets", () => {
  test("values at and above the streaming threshold come back byte-exact at every chunk boundary", async () => {
    await using server = await startTestServer(dynamo());
    await using c = await KvClient.connect({ port: server.port });
    const base = Math.ceil(STREAM_FROM_BYTES / CHUNK_BYTES) * CHUNK_BYTES;
    const sizes = [STREAM_FROM_BYTES - 1, STREAM_FROM_BYTES, STREAM_FROM_BYTES + 1, base - 1, base, base + 1];
    const values = sizes.map((n, i) => patterned(n, i + 1));
    await Promise.all(values.map((v, i) => c.set(`s${i}`, v)));
    const got = await Promise.all(values.map((_, i) => c.get(`s${i}`)));
    for (const [i, v] of values.entries()) expect(same(got[i], v)).toBe(true);
    // Pipelined small requests behind a streamed answer come back after it, in order.
    const [big, small] = await Promise.all([c.get("s5"), c.set("after", "x").then(() => c.getString("after"))]);
    expect(same(big, values[5] as Uint8Array)).toBe(true);
    expect(small).toBe("x");
  });

  test("gets of one chunked value at the same time each come back byte-exact, streamed or whole", async () => {
    await using server = await startTestServer(dynamo());
    await using a = await KvClient.connect({ port: server.port });
    await using b = await KvClient.connect({ port: server.port });
    const streamed = patterned(STREAM_FROM_BYTES + 3 * CHUNK_BYTES + 5, 3);
    const whole = patterned(3 * CHUNK_BYTES + 7, 4);
    await Promise.all([a.set("streamed", streamed), a.set("whole", whole)]);
    // Each reader frees a chunk's ciphertext once decrypted, so no two may be handed the same one.
    for (const [key, value] of [
      ["streamed", streamed],
      ["whole", whole],
    ] as const) {
      const got = await Promise.all([a.get(key), b.get(key), a.get(key), b.get(key)]);
      for (const g of got) expect(same(g, value)).toBe(true);
    }
  });

  test("a streamed read of a value replaced midway finishes the version it started, whole", async () => {
    await using server = await startTestServer(dynamo());
    await using c = await KvClient.connect({ port: server.port });
    const old = patterned(12 * MiB, 1);
    const replacement = patterned(12 * MiB + 77, 2);
    await c.set("hot", old);
    const reader = await rawGet(server.port, "hot");
    await reader.firstBytes;
    // Stop reading: the server holds its place in the old version while the value is replaced.
    reader.socket.pause();
    await c.set("hot", replacement);
    expect(same(await c.get("hot"), replacement)).toBe(true);
    reader.socket.resume();
    const answer = decodeResponse(await reader.frame);
    expect(answer.kind === "get" && answer.error === GetError.Ok && same(answer.value, old)).toBe(true);
    reader.socket.end();
  });

  test("a chunk that fails authentication midway closes the connection: the promised length cannot be kept", async () => {
    const settings = dynamo();
    await using server = await startTestServer(settings);
    await using c = await KvClient.connect({ port: server.port });
    await c.set("v", patterned(8 * MiB, 3));
    const head = await backends.client.send(
      new GetItemCommand({ TableName: settings.table, Key: { pk: { B: headPk(new TextEncoder().encode("v")) } } }),
    );
    const ver = head.Item?.ver?.B as Uint8Array;
    const key = { pk: { B: chunkPk(ver, 15) } };
    const chunk = (await backends.client.send(new GetItemCommand({ TableName: settings.table, Key: key })))
      .Item as Record<string, AttributeValue>;
    const ct = Uint8Array.from(chunk.ct?.B ?? []);
    ct[10] = (ct[10] as number) ^ 1;
    await backends.client.send(new PutItemCommand({ TableName: settings.table, Item: { ...chunk, ct: { B: ct } } }));

    expect(await rejection(c.get("v"))).toMatchObject({ code: ErrorCode.ConnectionClosed });
    await using again = await KvClient.connect({ port: server.port });
    await again.set("fine", "still serving");
    expect(await again.getString("fine")).toBe("still serving");
  });

  test("a client that stops reading holds the server to its window: pieces are pulled only as the output drains", async () => {
    const source = countedPieces();
    await using server = await startTestServer({}, { wrapStore: source.wrapStore });
    const reader = await rawGet(server.port, "huge");
    await reader.firstBytes;
    reader.socket.pause();
    // While the reader is paused, let the server do whatever it will: 200 round trips on another connection.
    await using other = await KvClient.connect({ port: server.port });
    for (let i = 0; i < 200; i++) await other.set(`k${i}`, "v");
    const inSockets = 16 * MiB; // loopback send and receive buffers, generously
    expect(source.pulled * source.piece.length - reader.received()).toBeLessThan(inSockets + 2 * MiB);
    expect(source.pulled).toBeLessThan(source.pieces);
    reader.socket.resume();
    const answer = decodeResponse(await reader.frame);
    expect(answer.kind === "get" && answer.value?.length === source.pieces * source.piece.length).toBe(true);
    reader.socket.end();
  });

  test("an HTTP client that stops reading holds the gateway to its window, and one that leaves stops the read", async () => {
    const source = countedPieces();
    await using server = await startTestServer({ httpPort: 0 }, { wrapStore: source.wrapStore });
    let received = 0;
    const firstBytes = Promise.withResolvers<void>();
    const socket = await Bun.connect({
      hostname: "127.0.0.1",
      port: server.httpPort as number,
      socket: {
        data(_s, chunk) {
          received += chunk.length;
          firstBytes.resolve();
        },
      },
    });
    socket.write("GET /get?k=huge HTTP/1.1\r\nHost: kvs\r\n\r\n");
    await firstBytes.promise;
    socket.pause();
    // While the client does not read, let the server do whatever it will: 200 round trips on another connection.
    await using other = await KvClient.connect({ port: server.port });
    for (let i = 0; i < 200; i++) await other.set(`k${i}`, "v");
    const inSockets = 16 * MiB; // loopback send and receive buffers, generously
    expect(source.pulled * source.piece.length - received).toBeLessThan(inSockets + 2 * MiB);
    expect(source.pulled).toBeLessThan(source.pieces);
    socket.terminate();
    await source.cancelled;
    expect(source.pulled).toBeLessThan(source.pieces);
  });

  test("the HTTP gateway streams a large value, and cuts the body short if a chunk fails midway", async () => {
    const settings = dynamo();
    await using server = await startTestServer({ ...settings, httpPort: 0 });
    await using c = await KvClient.connect({ port: server.port });
    const value = patterned(9 * MiB + 3, 5);
    await c.set("big", value);
    const res = await fetch(`http://127.0.0.1:${server.httpPort}/v1/keys/big`);
    expect(res.status).toBe(200);
    // Bun sends a streamed body chunked; a body cut short lacks the last chunk, which clients report.
    expect(res.headers.get("transfer-encoding")).toBe("chunked");
    expect(res.headers.get("x-value-size")).toBe(String(value.length));
    expect(same(new Uint8Array(await res.arrayBuffer()), value)).toBe(true);

    const head = await backends.client.send(
      new GetItemCommand({ TableName: settings.table, Key: { pk: { B: headPk(new TextEncoder().encode("big")) } } }),
    );
    const key = { pk: { B: chunkPk(head.Item?.ver?.B as Uint8Array, 20) } };
    await backends.client.send(new DeleteItemCommand({ TableName: settings.table, Key: key }));
    const broken = await fetch(`http://127.0.0.1:${server.httpPort}/get?k=big`);
    expect(broken.status).toBe(200);
    expect(await rejection(broken.arrayBuffer())).toEqual(anError());
  });
});
