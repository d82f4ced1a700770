import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { KvClient } from "../../client/kv-client.js";
import type { AuthSettings } from "../../src/auth/authenticator.js";
import { startServer } from "../../src/server.js";
import { ErrorCode, KvError } from "../../src/wire/errors.js";
import { CapturingLog } from "../support/capturing-log.js";
import { makeCerts, type TestCerts } from "../support/certs.js";
import { startTestServer, testConfig } from "../support/harness.js";
import { runCli, spawnServer, untilLine } from "../support/process.js";
import { lacking } from "../support/system-tools.js";
import { rejection } from "../support/wire.js";

// Starts servers and processes; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "kvs-authn-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const OPS = randomBytes(32).toString("hex");
const READER = randomBytes(32).toString("hex");

const POLICY = {
  rules: [
    { identity: "token:ops", read: ["*"], write: ["*"], admin: ["*"] },
    { identity: "token:reader", read: ["public/*"] },
    { identity: "cert:kvs-client", read: ["certs/*"], write: ["certs/*"] },
  ],
};

let files = 0;
/** Writes `content` to a fresh file in the test directory; returns its path. */
function file(content: string): string {
  const path = join(dir, `f${++files}`);
  writeFileSync(path, content);
  return path;
}

function tokens(entries: Record<string, string>): string {
  return `${Object.entries(entries)
    .map(([n, s]) => `${n}=${s}`)
    .join("\n")}\n`;
}

/** Auth settings with the policy and both tokens, in files a test may rewrite. */
function settings(policy: object = POLICY): AuthSettings & { policyFile: string; tokensFile: string } {
  return {
    policyFile: file(JSON.stringify(policy)),
    tokensFile: file(`# operators\n${tokens({ ops: OPS, reader: READER })}`),
  };
}

/** The first non-loopback IPv4 address of this host: a client connecting from it is not on loopback. */
function externalAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  throw new Error("this host has no non-loopback IPv4 address to test protected mode with");
}

async function http(port: number, path: string, init: RequestInit = {}, host = "127.0.0.1") {
  const res = await fetch(`http://${host}:${port}${path}`, init);
  return { status: res.status, body: await res.text(), headers: res.headers };
}

describe("tokens and the policy over HTTP", () => {
  test("Bearer tokens authenticate; no header is 401, a denied request 403, both with the JSON error body", async () => {
    await using server = await startTestServer({ httpPort: 0, auth: settings() });
    const port = server.httpPort as number;
    const ops = { headers: { authorization: `Bearer ${OPS}` } };
    const reader = { headers: { authorization: `Bearer ${READER}` } };
    expect((await http(port, "/set?k=public/motd&v=hi", ops)).status).toBe(200);
    expect((await http(port, "/set?k=private/x&v=no", ops)).status).toBe(200);
    const none = await http(port, "/get?k=public/motd");
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toBe('Bearer realm="kvs"');
    expect(JSON.parse(none.body)).toMatchObject({ error: "unauthenticated" });
    const wrong = await http(port, "/get?k=public/motd", { headers: { authorization: `Bearer ${READER}0` } });
    expect(wrong.status).toBe(401);
    expect(JSON.parse(wrong.body).message).toContain("not one this server holds");
    const basic = await http(port, "/get?k=public/motd", { headers: { authorization: "Basic b3BzOng=" } });
    expect(basic.status).toBe(401);
    expect(await http(port, "/get?k=public/motd", reader)).toMatchObject({ status: 200, body: "hi" });
    const put = await http(port, "/v1/keys/public%2Fmotd", { ...reader, method: "PUT", body: "x" });
    expect(put.status).toBe(403);
    expect(JSON.parse(put.body)).toMatchObject({ error: "forbidden" });
    expect(JSON.parse(put.body).message).toContain("token:reader lacks write permission");
    expect((await http(port, "/get?k=private/x", reader)).status).toBe(403);
    expect((await http(port, "/rm?k=public/motd", reader)).status).toBe(403);
    expect((await http(port, "/clear", reader)).status).toBe(403);
    const keys = await http(port, "/getKeys", reader);
    expect(JSON.parse(keys.body)).toEqual({ keys: ["public/motd"] });
    const rest = await http(port, "/v1/keys?values=1", reader);
    expect(JSON.parse(rest.body).items).toEqual([{ key: "public/motd", value: "hi" }]);
    expect((await http(port, "/v1/keys?prefix=private/", reader)).status).toBe(403);
    expect(JSON.parse((await http(port, "/getKeys", ops)).body).keys.sort()).toEqual(["private/x", "public/motd"]);
    expect(JSON.parse((await http(port, "/clear", ops)).body)).toEqual({ removed: 2 });
  });

  test("a token given as its SHA-256 in the file authenticates with its secret", async () => {
    const hashed = createHash("sha256").update(OPS).digest("hex");
    const auth = { policyFile: file(JSON.stringify(POLICY)), tokensFile: file(`ops=sha256:${hashed}\n`) };
    await using server = await startTestServer({ auth });
    await using client = await KvClient.connect({ port: server.port, auth: { token: OPS } });
    expect(client.identity).toBe("token:ops");
  });

  test("a policy given as its JSON (as ECS injects a parameter into the environment) works as its file does", async () => {
    await using server = await startTestServer({
      auth: { policyFile: JSON.stringify(POLICY), tokensText: `reader=${READER}` },
    });
    await using client = await KvClient.connect({ port: server.port, auth: { token: READER } });
    expect((await rejection(client.set("public/x", "1"))).code).toBe(ErrorCode.Forbidden);
    let caught: unknown;
    try {
      await using _bad = await startTestServer({
        auth: { policyFile: '{"rules": 1}', tokensText: `reader=${READER}` },
      });
    } catch (err) {
      caught = err;
    }
    expect((caught as KvError).message).toContain("access policy (inline JSON)");
  });

  test("tokens from KV_TOKENS work as the file's do", async () => {
    await using server = await startTestServer({
      auth: { policyFile: file(JSON.stringify(POLICY)), tokensText: `ops=${OPS},reader=${READER}` },
    });
    await using client = await KvClient.connect({ port: server.port, auth: { token: READER } });
    expect(client.identity).toBe("token:reader");
  });
});

describe("reloading the policy and the tokens", () => {
  test("a reload applies a changed policy to open connections, and a dropped token ends its connection's identity", async () => {
    const auth = settings();
    await using server = await startTestServer({ auth });
    await using reader = await KvClient.connect({ port: server.port, auth: { token: READER } });
    await using ops = await KvClient.connect({ port: server.port, auth: { token: OPS } });
    await ops.set("public/a", "1");
    await ops.set("team/a", "2");
    expect((await rejection(reader.get("team/a"))).code).toBe(ErrorCode.Forbidden);
    const widened = { rules: [...POLICY.rules, { identity: "token:reader", read: ["team/*"] }] };
    writeFileSync(auth.policyFile, JSON.stringify(widened));
    server.reloadAuth();
    expect(new TextDecoder().decode(await reader.get("team/a"))).toBe("2");
    writeFileSync(auth.tokensFile, tokens({ ops: OPS }));
    server.reloadAuth();
    const revoked = await rejection(reader.get("public/a"));
    expect(revoked.code).toBe(ErrorCode.Unauthenticated);
    expect((await rejection(KvClient.connect({ port: server.port, auth: { token: READER } }))).code).toBe(
      ErrorCode.Unauthenticated,
    );
    expect(new TextDecoder().decode(await ops.get("public/a"))).toBe("1");
  });

  test("a bad policy or token file on reload is refused with its reason, and the previous ones stay in force", async () => {
    const auth = settings();
    await using server = await startTestServer({ auth });
    await using reader = await KvClient.connect({ port: server.port, auth: { token: READER } });
    writeFileSync(auth.policyFile, '{"rules":[{"identity":"token:reader","read":["a*b"]}]}');
    expect(() => server.reloadAuth()).toThrow(/only a trailing \* \(a prefix\) is supported/);
    writeFileSync(auth.policyFile, JSON.stringify(POLICY));
    writeFileSync(auth.tokensFile, "reader=short\n");
    expect(() => server.reloadAuth()).toThrow(/at least 32/);
    expect(await reader.get("public/none")).toBeUndefined();
  });

  test("SIGHUP makes a running server re-read its token file", async () => {
    const auth = settings();
    await using proc = await spawnServer([
      "--store",
      "memory",
      "--port",
      "0",
      "--access-policy",
      auth.policyFile,
      "--tokens-file",
      auth.tokensFile,
    ]);
    await using client = await KvClient.connect({ port: proc.port, auth: { token: READER } });
    writeFileSync(auth.tokensFile, tokens({ ops: OPS }));
    proc.proc.kill("SIGHUP");
    await untilLine(proc.proc.stderr, /access policy and tokens reloaded/);
    expect((await rejection(client.get("public/x"))).code).toBe(ErrorCode.Unauthenticated);
  });
});

describe("startup checks of the authentication settings", () => {
  const cases: [string, AuthSettings, RegExp][] = [
    [
      "tokens without a policy",
      { tokensFile: file(tokens({ ops: OPS })) },
      /no --access-policy says what anyone may do/,
    ],
    [
      "a policy without a way to authenticate",
      { policyFile: file(JSON.stringify(POLICY)) },
      /without a way to authenticate/,
    ],
    ["a policy that is not JSON", { policyFile: file("rules: []"), tokensText: `ops=${OPS}` }, /not JSON/],
    [
      "an unknown permission",
      { policyFile: file('{"rules":[{"identity":"token:ops","delete":["*"]}]}'), tokensText: `ops=${OPS}` },
      /rule 1: unknown field "delete"/,
    ],
    [
      "an identity it cannot match",
      { policyFile: file('{"rules":[{"identity":"ops","read":["*"]}]}'), tokensText: `ops=${OPS}` },
      /"identity" must be arn:..., token:NAME or cert:NAME/,
    ],
    [
      "a rule that grants nothing",
      { policyFile: file('{"rules":[{"identity":"token:ops"}]}'), tokensText: `ops=${OPS}` },
      /grants nothing/,
    ],
    ["a short secret", { policyFile: file(JSON.stringify(POLICY)), tokensText: "ops=hunter2" }, /at least 32/],
    [
      "two tokens with one secret",
      { policyFile: file(JSON.stringify(POLICY)), tokensText: `ops=${OPS},reader=${OPS}` },
      /same secret as another token/,
    ],
    [
      "a missing policy file",
      { policyFile: join(dir, "no-such-file"), tokensText: `ops=${OPS}` },
      /cannot read --access-policy/,
    ],
    [
      "--insecure-no-auth beside tokens",
      { policyFile: file(JSON.stringify(POLICY)), tokensText: `ops=${OPS}`, insecureNoAuth: true },
      /contradicts/,
    ],
  ];
  for (const [what, auth, message] of cases) {
    test(`the server refuses to start with ${what}, saying why`, async () => {
      let caught: unknown;
      try {
        await using _server = await startTestServer({ auth });
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(KvError);
      expect((caught as KvError).code).toBe(ErrorCode.Config);
      expect((caught as KvError).message).toMatch(message);
    });
  }

  test("a secret never appears in a startup error", async () => {
    const secret = `${"s".repeat(20)}`;
    let caught: unknown;
    try {
      await using _server = await startTestServer({
        auth: { policyFile: file(JSON.stringify(POLICY)), tokensText: `ops=${secret}` },
      });
    } catch (err) {
      caught = err;
    }
    expect((caught as KvError).message).not.toContain(secret);
  });
});

describe("protected mode", () => {
  const external = externalAddress();

  test("with no authentication configured, a client beyond loopback is refused with the reason, over TCP and HTTP", async () => {
    await using server = await startTestServer({ host: "0.0.0.0", httpPort: 0 });
    await using far = await KvClient.connect({ host: external, port: server.port });
    const err = await rejection(far.set("k", "v"));
    expect(err.code).toBe(ErrorCode.Unauthenticated);
    expect(err.message).toContain("protected mode");
    expect(err.message).toContain("--insecure-no-auth");
    expect((await rejection(far.authenticate({ token: OPS }))).message).toContain("protected mode");
    const res = await http(server.httpPort as number, "/get?k=k", {}, external);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.body).message).toContain("protected mode");
    // Loopback stays as easy as before.
    await using near = await KvClient.connect({ port: server.port });
    await near.set("k", "v");
    expect(await near.get("k")).toEqual(new TextEncoder().encode("v"));
  });

  test("a server on a non-loopback address with no authentication says at startup that it is in protected mode", async () => {
    const log = new CapturingLog("debug");
    await using _server = await startServer(testConfig({ host: "0.0.0.0" }), log.log);
    await log.next(
      /protected mode: no authentication is configured, so clients beyond loopback are refused on 0\.0\.0\.0/,
    );
    const quiet = new CapturingLog("debug");
    await using _local = await startServer(testConfig(), quiet.log);
    await quiet.next(/authentication auth="none \(protected mode: loopback clients only\)"/);
  });

  test("--insecure-no-auth serves a client beyond loopback", async () => {
    await using server = await startTestServer({ host: "0.0.0.0", httpPort: 0, auth: { insecureNoAuth: true } });
    await using far = await KvClient.connect({ host: external, port: server.port });
    await far.set("k", "v");
    expect((await http(server.httpPort as number, "/get?k=k", {}, external)).body).toBe("v");
  });

  test("with tokens configured, a client beyond loopback is served once it authenticates", async () => {
    await using server = await startTestServer({ host: "0.0.0.0", auth: settings() });
    await using far = await KvClient.connect({ host: external, port: server.port, auth: { token: OPS } });
    await far.set("k", "v");
  });
});

const noOpenssl = lacking("the client-certificate tests", "openssl");

describe.skipIf(noOpenssl)("client certificates as identities", () => {
  let certs: TestCerts;
  beforeAll(async () => {
    certs = await makeCerts();
  });
  afterAll(() => certs?.[Symbol.dispose]());

  test("under mutual TLS and a policy, the certificate's CN is the connection's identity", async () => {
    const auth = settings();
    await using server = await startTestServer({
      tls: { cert: certs.server.cert, key: certs.server.key, ca: certs.ca },
      auth,
    });
    const tls = {
      ca: await Bun.file(certs.ca).text(),
      cert: await Bun.file(certs.client).text(),
      key: await Bun.file(certs.clientKey).text(),
    };
    await using client = await KvClient.connect({ port: server.port, tls });
    await client.set("certs/a", "1");
    const outside = await rejection(client.get("public/a"));
    expect(outside.code).toBe(ErrorCode.Forbidden);
    expect(outside.message).toContain("cert:kvs-client lacks read permission");
    // A token replaces the certificate's identity.
    expect(await client.authenticate({ token: OPS })).toBe("token:ops");
    expect(await client.get("public/a")).toBeUndefined();
  });

  test("TLS settings given as PEM text (as ECS injects secrets) serve as their files do, and errors never print a key", async () => {
    const pem = async (path: string) => await Bun.file(path).text();
    await using server = await startTestServer({
      tls: { cert: await pem(certs.server.cert), key: await pem(certs.server.key), ca: await pem(certs.ca) },
      auth: settings(),
    });
    const tls = { ca: await pem(certs.ca), cert: await pem(certs.client), key: await pem(certs.clientKey) };
    await using client = await KvClient.connect({ port: server.port, tls });
    await client.set("certs/pem", "1");
    const key = await pem(certs.clientKey);
    let caught: unknown;
    try {
      await using _bad = await startTestServer({ tls: { cert: await pem(certs.server.cert), key } });
    } catch (err) {
      caught = err;
    }
    expect((caught as KvError).message).toContain("--tls-key (PEM text) does not belong to the certificate");
    expect((caught as KvError).message).not.toContain("PRIVATE KEY");
  });
});

/** A server whose one token, `writer`, may read and write `w/*`; `auth` starts another like it. */
async function writerServer() {
  const writer = randomBytes(32).toString("hex");
  const auth = {
    policyFile: file(JSON.stringify({ rules: [{ identity: "token:writer", read: ["w/*"], write: ["w/*"] }] })),
    tokensFile: file(tokens({ writer })),
  };
  const first = await startTestServer({ auth });
  return { writer, auth, first, port: first.port };
}

describe("reconnecting", () => {
  test("a reconnecting KvClient authenticates each connection it opens: what a drain left unread is served after it, under its identity", async () => {
    const { writer, auth, first, port } = await writerServer();
    const identities: string[] = [];
    await using c = await KvClient.connect({
      reconnect: true,
      port,
      auth: { token: writer },
      onConnect: () => identities.push("connected"),
    });
    // 2 MB of writes of one key in flight, more than the server reads at once: a drain leaves most unread,
    // and they go again on a connection that must authenticate first.
    const inFlight = Array.from({ length: 2000 }, (_, i) => c.set("w/k", `v${i}`.padEnd(1024)));
    await inFlight[0];
    await first.stop();
    await using _second = await startTestServer({ port, auth });
    expect((await Promise.allSettled(inFlight)).filter((r) => r.status === "rejected")).toEqual([]);
    expect((await c.getString("w/k"))?.trimEnd()).toBe("v1999");
    expect(c.reconnects).toBe(1);
    expect(c.resent).toBeGreaterThan(0);
    expect(identities).toEqual(["connected", "connected"]);
    // The new connection holds the writer's grant, not more.
    expect((await rejection(c.set("public/a", "2"))).code).toBe(ErrorCode.Forbidden);
  });

  test("a credential given to authenticate() is the one the client's later connections present", async () => {
    const { writer, auth, first, port } = await writerServer();
    await using c = await KvClient.connect({ reconnect: true, port });
    expect((await rejection(c.get("w/k"))).code).toBe(ErrorCode.Unauthenticated);
    expect(await c.authenticate({ token: writer })).toBe("token:writer");
    await c.set("w/k", "1");
    await first.stop();
    await using _second = await startTestServer({ port, auth });
    // A fresh store: the write goes through only if the new connection presented the token.
    await c.set("w/k", "2");
    expect(await c.getString("w/k")).toBe("2");
    expect(c.identity).toBe("token:writer");
    expect(c.reconnects).toBe(1);
  });
});

describe("the CLI", () => {
  test("--token and KV_TOKEN authenticate the CLI's connection", async () => {
    const auth = settings();
    await using server = await startTestServer({ auth });
    const port = String(server.port);
    const set = await runCli(["--port", port, "--token", OPS, "set", "public/cli", "v"]);
    expect(set.code).toBe(0);
    const get = await runCli(["--port", port, "get", "public/cli"], undefined, { KV_TOKEN: READER });
    expect(get.code).toBe(0);
    expect(new TextDecoder().decode(get.stdout).trim()).toBe("v");
    const denied = await runCli(["--port", port, "get", "public/cli"]);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toContain("KV_ERR_UNAUTHENTICATED");
    expect(denied.stderr).toContain("--token");
    // A wrong token gets the server's reason, not advice to give a token.
    const wrong = await runCli(["--port", port, "--token", `${READER}0`, "get", "public/cli"]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("the token is not one this server holds");
    expect(wrong.stderr).not.toContain("give --token TOKEN or --iam");
  });
});
