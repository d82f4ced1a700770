import { describe, expect, test } from "bun:test";
import { KvClient } from "../../client/kv-client.js";
import { decodeResponse, encodeGetRequest, encodeSetRequest } from "../../src/wire/client-codec.js";
import { GetError, SetError } from "../../src/wire/envelope.js";
import { writeVarint } from "../../src/wire/varint.js";
import { RawConnection, startTestServer } from "../support/harness.js";
import { msg } from "../support/wire.js";

function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  const p = writeVarint(out, 0, body.length);
  out.set(body, p);
  return out.subarray(0, p + body.length);
}

const k = new TextEncoder().encode("key");

/** Asserts the connection still serves a normal set and get after whatever came before. */
async function expectUsable(conn: RawConnection): Promise<void> {
  conn.send(new Uint8Array(Buffer.concat(encodeSetRequest(k, Uint8Array.of(42)))));
  expect(decodeResponse((await conn.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Ok });
  conn.send(encodeGetRequest(k));
  expect(decodeResponse((await conn.next()) as Uint8Array)).toMatchObject({ kind: "get", error: GetError.Ok });
}

describe("requests that decode but are not usable get internal and keep the connection", () => {
  const cases: [string, Uint8Array, "set" | "get"][] = [
    ["set_request_t without set_req", msg([1, 1]), "set"],
    ["set_req without req", msg([1, 1], [2, msg()]), "set"],
    ["data without key", msg([1, 1], [2, msg([1, msg([2, k])])]), "set"],
    ["data without value", msg([1, 1], [2, msg([1, msg([1, k])])]), "set"],
    ["get_request_t without get_req", msg([1, 3]), "get"],
    ["get_req without key", msg([1, 3], [4, msg()]), "get"],
    ["a set_response_t sent as a request", msg([1, 2], [3, msg([1, 1])]), "set"],
    ["a get_response_t sent as a request", msg([1, 4], [5, msg([1, 1])]), "get"],
    ["an unknown msg_type", msg([1, 99]), "get"],
    ["a negative msg_type", msg([1, -1]), "get"],
    ["an envelope without type", msg([4, msg([1, k])]), "get"],
    ["an empty frame", new Uint8Array(0), "get"],
    ["a key over 1024 bytes", msg([1, 3], [4, msg([1, new Uint8Array(1025)])]), "get"],
    ["an empty key in a get", msg([1, 3], [4, msg([1, new Uint8Array(0)])]), "get"],
    ["an empty key in a set", msg([1, 1], [2, msg([1, msg([1, new Uint8Array(0)], [2, k])])]), "set"],
  ];
  for (const [name, body, reply] of cases) {
    test(`${name} is answered with a ${reply} response carrying internal`, async () => {
      await using server = await startTestServer();
      await using conn = await RawConnection.open(server.port);
      conn.send(frame(body));
      const res = decodeResponse((await conn.next()) as Uint8Array);
      expect(res).toMatchObject(
        reply === "set" ? { kind: "set", error: SetError.Internal } : { kind: "get", error: GetError.Internal },
      );
      // The added fields say why, for clients that read them.
      expect(res.failure?.code).toMatch(/^KV_ERR_[A-Z_]+$/);
      expect(res.failure?.reason?.length).toBeGreaterThan(0);
      await expectUsable(conn);
    });
  }
});

test("an empty key is refused over TCP with the reason the HTTP gateway gives, and nothing is stored", async () => {
  await using server = await startTestServer();
  await using conn = await RawConnection.open(server.port);
  conn.send(frame(msg([1, 1], [2, msg([1, msg([1, new Uint8Array(0)], [2, k])])])));
  const res = decodeResponse((await conn.next()) as Uint8Array);
  expect(res.failure).toEqual({ code: "KV_ERR_BAD_REQUEST", reason: "the key is empty: a key has 1 to 1024 bytes" });
  conn.send(frame(msg([1, 3], [4, msg([1, new Uint8Array(0)])])));
  expect(decodeResponse((await conn.next()) as Uint8Array)).toMatchObject({ kind: "get", error: GetError.Internal });
  await using c = await KvClient.connect({ port: server.port });
  expect((await c.listPage({})).entries).toHaveLength(0);
});

describe("bytes that break the stream close that connection only", () => {
  const cases: [string, Uint8Array][] = [
    ["a frame over --max-frame-bytes", Uint8Array.of(0xff, 0xff, 0xff, 0x7f)],
    ["a length prefix longer than five bytes", Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x01)],
    ["a frame that is not a protobuf message", frame(Uint8Array.of(0xff, 0xff, 0xff))],
    ["a frame with a truncated field", frame(Uint8Array.of(0x12, 0x10, 0x01))],
    ["a frame with an end-group tag", frame(Uint8Array.of(0x0c))],
    ["a frame with field number zero", frame(Uint8Array.of(0x00, 0x01))],
  ];
  for (const [name, bytes] of cases) {
    test(`${name} closes the connection and leaves others working`, async () => {
      await using server = await startTestServer({ maxFrameBytes: 1024 * 1024 });
      await using bystander = await RawConnection.open(server.port);
      await using conn = await RawConnection.open(server.port);
      conn.send(bytes);
      expect(await conn.next()).toBeNull();
      await conn.closed;
      await expectUsable(bystander);
      expect(server.counters.get("protocol.errors")).toBe(1);
    });
  }

  test("requests accepted before a bad frame are still answered before the close", async () => {
    await using server = await startTestServer();
    await using conn = await RawConnection.open(server.port);
    const good = new Uint8Array(Buffer.concat(encodeSetRequest(k, Uint8Array.of(1))));
    conn.send(new Uint8Array(Buffer.concat([good, encodeGetRequest(k), frame(Uint8Array.of(0xff, 0xff))])));
    expect(decodeResponse((await conn.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Ok });
    expect(decodeResponse((await conn.next()) as Uint8Array)).toMatchObject({ kind: "get", error: GetError.Ok });
    expect(await conn.next()).toBeNull();
  });
});

describe("peers that stop halfway", () => {
  test("a peer that disconnects in the middle of a frame leaves the server serving", async () => {
    await using server = await startTestServer();
    {
      await using conn = await RawConnection.open(server.port);
      const whole = new Uint8Array(Buffer.concat(encodeSetRequest(k, new Uint8Array(100_000))));
      conn.send(whole.subarray(0, 5000));
    }
    await using client = await KvClient.connect({ port: server.port });
    await client.set("a", "b");
    expect(await client.getString("a")).toBe("b");
  });

  test("a peer that sends its requests and then shuts down its write side still gets every answer", async () => {
    await using server = await startTestServer();
    await using conn = await RawConnection.open(server.port);
    const parts: Uint8Array[] = [];
    for (let i = 0; i < 50; i++) parts.push(...encodeSetRequest(k, Uint8Array.of(i)), encodeGetRequest(k));
    conn.send(new Uint8Array(Buffer.concat(parts)));
    conn.shutdownWrite();
    for (let i = 0; i < 50; i++) {
      expect(decodeResponse((await conn.next()) as Uint8Array)).toMatchObject({ kind: "set", error: SetError.Ok });
      const got = decodeResponse((await conn.next()) as Uint8Array);
      expect(got.kind === "get" && got.value).toEqual(Uint8Array.of(i));
    }
    expect(await conn.next()).toBeNull();
  });

  test("a peer that never reads its responses stops being read, and the server keeps serving others", async () => {
    await using server = await startTestServer();
    await using greedy = await RawConnection.open(server.port);
    // 64 KiB values: each get answer is 64 KiB, so unread answers pile up fast.
    const value = new Uint8Array(64 * 1024).fill(7);
    const setup = await KvClient.connect({ port: server.port });
    await setup.set("big", value);
    await setup.close();
    const get = encodeGetRequest(new TextEncoder().encode("big"));
    const burst = new Uint8Array(Buffer.concat(Array.from({ length: 2000 }, () => get)));
    // The server pauses reading this socket once it owes about 1 MiB, so the kernel stops taking bytes.
    greedy.send(burst);
    await using other = await KvClient.connect({ port: server.port });
    await other.set("x", "y");
    expect(await other.getString("x")).toBe("y");
  });
});

describe("connection limits", () => {
  test("a connection beyond --max-connections is closed on accept, and the others keep working", async () => {
    await using server = await startTestServer({ maxConnections: 2 });
    await using a = await RawConnection.open(server.port);
    await using b = await RawConnection.open(server.port);
    await expectUsable(a);
    await expectUsable(b);
    await using c = await RawConnection.open(server.port);
    expect(await c.next()).toBeNull();
    await expectUsable(a);
  });

  test("a connection silent for --idle-timeout seconds is closed", async () => {
    await using server = await startTestServer({ idleTimeoutSeconds: 1 });
    await using conn = await RawConnection.open(server.port);
    await expectUsable(conn);
    await conn.closed;
    expect(conn.isClosed).toBe(true);
  });
});
