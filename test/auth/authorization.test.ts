import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvClient } from "../../client/kv-client.js";
import type { Config } from "../../src/config.js";
import { encodeAuthRequest, encodeGetRequest, encodeSetRequest } from "../../src/wire/client-codec.js";
import { FORBIDDEN, MsgType } from "../../src/wire/envelope.js";
import { ErrorCode } from "../../src/wire/errors.js";
import { storeConfigs, useBackends } from "../support/backends.js";
import { RawConnection, startTestServer } from "../support/harness.js";
import { decodeAny, frame, msg, rejection } from "../support/wire.js";

// Starts DynamoDB Local and servers; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(120_000);

const backends = useBackends();
const STORES = storeConfigs(backends, "authz");

const dir = mkdtempSync(join(tmpdir(), "kvs-auth-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Secrets of the test's tokens: 64 hex characters each. */
const SECRET = {
  ops: randomBytes(32).toString("hex"),
  config: randomBytes(32).toString("hex"),
  sessions: randomBytes(32).toString("hex"),
  nobody: randomBytes(32).toString("hex"),
};

/** The policy of the README's example, plus an operator and a token no rule names. */
const POLICY = {
  rules: [
    { identity: "token:ops", read: ["*"], write: ["*"], admin: ["*"] },
    { identity: "token:config", read: ["config/*"] },
    { identity: "token:sessions", read: ["sessions/*", "motd"], write: ["sessions/*"] },
  ],
};

/** Writes the policy and tokens files; returns the server settings that use them. */
function authFiles(
  policy: object = POLICY,
  tokens = SECRET,
): Partial<Config> & { policyFile: string; tokensFile: string } {
  const id = randomBytes(4).toString("hex");
  const policyFile = join(dir, `policy-${id}.json`);
  const tokensFile = join(dir, `tokens-${id}`);
  writeFileSync(policyFile, JSON.stringify(policy));
  writeFileSync(
    tokensFile,
    `${Object.entries(tokens)
      .map(([name, secret]) => `${name}=${secret}`)
      .join("\n")}\n`,
  );
  return { auth: { policyFile, tokensFile }, policyFile, tokensFile };
}

const text = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));

for (const [name, store] of Object.entries(STORES)) {
  describe(`authorization on the ${name} store`, () => {
    test("a connection that has not authenticated is refused every request, and the store is not touched", async () => {
      const files = authFiles();
      await using server = await startTestServer({ ...store(), auth: files.auth });
      await using ops = await KvClient.connect({ port: server.port, auth: { token: SECRET.ops } });
      await ops.set("config/a", "1");
      await using anon = await KvClient.connect({ port: server.port });
      for (const call of [
        anon.get("config/a"),
        anon.set("config/a", "2"),
        anon.delete("config/a"),
        anon.exists("config/a"),
        anon.listPage(),
        anon.clear(),
      ]) {
        const err = await rejection(call);
        expect(err.code).toBe(ErrorCode.Unauthenticated);
        expect(err.message).toContain("send an auth_request");
      }
      expect(text(await ops.get("config/a"))).toBe("1");
    });

    test("the right token authenticates, a wrong one is refused and the connection may try again", async () => {
      const files = authFiles();
      await using server = await startTestServer({ ...store(), auth: files.auth });
      await using client = await KvClient.connect({ port: server.port });
      const wrong = await rejection(client.authenticate({ token: SECRET.ops.replace(/.$/, "x") }));
      expect(wrong.code).toBe(ErrorCode.Unauthenticated);
      expect(wrong.message).toContain("not one this server holds");
      expect((await rejection(client.get("k"))).code).toBe(ErrorCode.Unauthenticated);
      expect(await client.authenticate({ token: SECRET.ops })).toBe("token:ops");
      expect(client.identity).toBe("token:ops");
      await client.set("k", "v");
      expect(text(await client.get("k"))).toBe("v");
      // A failed attempt later keeps the identity the connection has.
      await rejection(client.authenticate({ token: "not-a-token-of-this-server-at-all-x" }));
      expect(text(await client.get("k"))).toBe("v");
      const refused = await rejection(KvClient.connect({ port: server.port, auth: { token: `${SECRET.nobody}0` } }));
      expect(refused.code).toBe(ErrorCode.Unauthenticated);
    });

    test("a read-only identity may read and list but not set, delete or clear", async () => {
      const files = authFiles();
      await using server = await startTestServer({ ...store(), auth: files.auth });
      await using ops = await KvClient.connect({ port: server.port, auth: { token: SECRET.ops } });
      await ops.set("config/flags", "on");
      await using reader = await KvClient.connect({ port: server.port, auth: { token: SECRET.config } });
      expect(text(await reader.get("config/flags"))).toBe("on");
      expect(await reader.exists("config/flags")).toBe(true);
      for (const call of [reader.set("config/flags", "off"), reader.delete("config/flags")]) {
        const err = await rejection(call);
        expect(err.code).toBe(ErrorCode.Forbidden);
        expect(err.message).toContain("token:config lacks write permission");
        expect(err.message).toContain("no write permission");
      }
      const clear = await rejection(reader.clear());
      expect(clear.code).toBe(ErrorCode.Forbidden);
      expect(clear.message).toContain("lacks admin permission on every key");
      expect(text(await ops.get("config/flags"))).toBe("on");
    });

    test("a prefix-scoped identity cannot read outside its prefix and lists only its own keys", async () => {
      const files = authFiles();
      await using server = await startTestServer({ ...store(), auth: files.auth });
      await using ops = await KvClient.connect({ port: server.port, auth: { token: SECRET.ops } });
      for (const k of ["config/a", "config/b", "sessions/1", "sessions/2", "motd", "secret"]) await ops.set(k, k);
      await using sessions = await KvClient.connect({ port: server.port, auth: { token: SECRET.sessions } });
      const outside = await rejection(sessions.get("config/a"));
      expect(outside.code).toBe(ErrorCode.Forbidden);
      expect(outside.message).toContain("read on sessions/*, motd only");
      // The answer for a key that does not exist is the same: a refusal says nothing of what exists.
      const absent = await rejection(sessions.get("config/none"));
      expect(absent.message).toBe(outside.message);
      expect(text(await sessions.get("sessions/1"))).toBe("sessions/1");
      expect(text(await sessions.get("motd"))).toBe("motd");
      await sessions.set("sessions/3", "new");
      expect((await rejection(sessions.set("motd", "x"))).code).toBe(ErrorCode.Forbidden);
      const all: string[] = [];
      for await (const key of sessions.keys()) all.push(text(key) as string);
      expect(all.sort()).toEqual(["motd", "sessions/1", "sessions/2", "sessions/3"]);
      const under: string[] = [];
      for await (const key of sessions.keys({ prefix: "sessions/" })) under.push(text(key) as string);
      expect(under.sort()).toEqual(["sessions/1", "sessions/2", "sessions/3"]);
      // Small pages through a narrowed listing still end, each cursor resuming it.
      const paged: string[] = [];
      for await (const key of sessions.keys({ pageSize: 1 })) paged.push(text(key) as string);
      expect(paged.sort()).toEqual(["motd", "sessions/1", "sessions/2", "sessions/3"]);
      const values: string[] = [];
      for await (const e of sessions.entries({ prefix: "s" })) values.push(`${text(e.key)}=${text(e.value)}`);
      expect(values.sort()).toEqual(["sessions/1=sessions/1", "sessions/2=sessions/2", "sessions/3=new"]);
      const elsewhere = await rejection(sessions.listPage({ prefix: "config/" }));
      expect(elsewhere.code).toBe(ErrorCode.Forbidden);
      await using config = await KvClient.connect({ port: server.port, auth: { token: SECRET.config } });
      const mine: string[] = [];
      for await (const key of config.keys()) mine.push(text(key) as string);
      expect(mine.sort()).toEqual(["config/a", "config/b"]);
    });

    test("an identity no rule names may authenticate and do nothing", async () => {
      const files = authFiles();
      await using server = await startTestServer({ ...store(), auth: files.auth });
      await using nobody = await KvClient.connect({ port: server.port, auth: { token: SECRET.nobody } });
      expect(nobody.identity).toBe("token:nobody");
      const err = await rejection(nobody.get("anything"));
      expect(err.code).toBe(ErrorCode.Forbidden);
      expect(err.message).toContain("no read permission");
      expect((await rejection(nobody.listPage())).code).toBe(ErrorCode.Forbidden);
    });
  });
}

describe("authentication over the wire", () => {
  test("a refusal is the response's forbidden status with the code and reason, in every response type", async () => {
    const files = authFiles();
    await using server = await startTestServer({ auth: files.auth });
    await using raw = await RawConnection.open(server.port);
    raw.send(encodeGetRequest(new TextEncoder().encode("k")));
    const get = decodeAny(await raw.next());
    expect(get).toMatchObject({ type: MsgType.GetResponse, status: FORBIDDEN, code: ErrorCode.Unauthenticated });
    for (const part of encodeSetRequest(new TextEncoder().encode("k"), new Uint8Array(3))) raw.send(part);
    const set = decodeAny(await raw.next());
    expect(set).toMatchObject({ type: MsgType.SetResponse, status: FORBIDDEN, code: ErrorCode.Unauthenticated });
    raw.send(encodeAuthRequest({ token: SECRET.config }));
    expect(decodeAny(await raw.next())).toMatchObject({ type: MsgType.AuthResponse, status: 1 });
    raw.send(encodeGetRequest(new TextEncoder().encode("k")));
    const denied = decodeAny(await raw.next());
    expect(denied).toMatchObject({ type: MsgType.GetResponse, status: FORBIDDEN, code: ErrorCode.Forbidden });
    expect(raw.isClosed).toBe(false);
  });

  test("requests pipelined after an auth_request are answered under the identity it gives", async () => {
    const files = authFiles();
    await using server = await startTestServer({ auth: files.auth });
    await using raw = await RawConnection.open(server.port);
    const key = new TextEncoder().encode("config/x");
    raw.send(encodeGetRequest(key));
    raw.send(encodeAuthRequest({ token: SECRET.config }));
    raw.send(encodeGetRequest(key));
    expect(decodeAny(await raw.next())).toMatchObject({ status: FORBIDDEN });
    expect(decodeAny(await raw.next())).toMatchObject({ type: MsgType.AuthResponse, status: 1 });
    expect(decodeAny(await raw.next())).toMatchObject({ type: MsgType.GetResponse, status: 2 });
  });

  test("an auth_request with neither or both credentials, or with no authentication configured, is refused with a reason", async () => {
    const files = authFiles();
    await using server = await startTestServer({ auth: files.auth });
    await using raw = await RawConnection.open(server.port);
    const utf8 = new TextEncoder();
    const both = msg(
      [1, MsgType.AuthRequest],
      [14, msg([1, utf8.encode(SECRET.ops)], [2, utf8.encode("kvs-iam-v1.e30")])],
    );
    for (const envelope of [msg([1, MsgType.AuthRequest], [14, msg()]), both, msg([1, MsgType.AuthRequest])]) {
      raw.send(frame(envelope));
      const answer = decodeAny(await raw.next());
      expect(answer).toMatchObject({ type: MsgType.AuthResponse, status: 2, code: ErrorCode.BadRequest });
      expect(answer.reason).toMatch(/exactly one of token and iam|without auth_req/);
    }
    // Bytes that are not UTF-8 are no token.
    raw.send(frame(msg([1, MsgType.AuthRequest], [14, msg([1, Uint8Array.of(0xff, 0xfe)])])));
    expect(decodeAny(await raw.next())).toMatchObject({ status: FORBIDDEN, code: ErrorCode.Unauthenticated });
    await using open = await startTestServer();
    await using client = await KvClient.connect({ port: open.port });
    const err = await rejection(client.authenticate({ token: SECRET.ops }));
    expect(err.code).toBe(ErrorCode.Unauthenticated);
    expect(err.message).toContain("no authentication configured");
    await client.set("still", "served");
  });
});
