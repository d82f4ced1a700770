import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ClientTlsOptions, KvClient, parseServerUrl } from "../../client/kv-client.js";
import type { Config } from "../../src/config.js";
import { Counter } from "../../src/metrics.js";
import { encodeSetRequest } from "../../src/wire/client-codec.js";
import { ErrorCode, KvError } from "../../src/wire/errors.js";
import { makeCerts, type TestCerts } from "../support/certs.js";
import { RawConnection, startTestServer } from "../support/harness.js";
import { runCli, runServer, spawnServer, untilLine } from "../support/process.js";
import { anError, rejection } from "../support/rejection.js";
import { lacking } from "../support/system-tools.js";

let certs: TestCerts;
const pem: Record<string, string> = {};
const read = (path: string) => Bun.file(path).text();

const noOpenssl = lacking("the TLS tests", "openssl");

beforeAll(async () => {
  if (noOpenssl) return;
  certs = await makeCerts();
  pem.ca = await read(certs.ca);
  pem.otherCa = await read(certs.otherCa);
  pem.client = await read(certs.client);
  pem.wrongCaClient = await read(certs.wrongCaClient);
  pem.expiredClient = await read(certs.expiredClient);
  pem.clientKey = await read(certs.clientKey);
});
afterAll(() => certs?.[Symbol.dispose]());

/** TLS settings of a client that trusts the test CA, with the good client certificate. */
function goodClient(): ClientTlsOptions {
  return { ca: pem.ca, cert: pem.client, key: pem.clientKey };
}

function tlsConfig(mutual: boolean): Partial<Config> {
  return { tls: { cert: certs.server.cert, key: certs.server.key, ...(mutual ? { ca: certs.ca } : {}) } };
}

/** The common name of the certificate the server at `port` presents now. */
async function peerCommonName(port: number): Promise<string> {
  const seen = Promise.withResolvers<string>();
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    tls: goodClient(),
    socket: {
      data() {},
      handshake(s, ok, err) {
        if (!ok || err) return seen.reject(err ?? new Error("handshake failed"));
        seen.resolve(String(s.getPeerCertificate()?.subject?.CN));
      },
      close() {
        seen.reject(new Error("closed before the handshake"));
      },
    },
  });
  try {
    return await seen.promise;
  } finally {
    socket.end();
  }
}

/** Resolves the error a refused client meets: at connect, or on its first request. */
async function refusal(port: number, tls: ClientTlsOptions): Promise<KvError> {
  try {
    await using c = await KvClient.connect({ host: "127.0.0.1", port, tls });
    await c.set("refused", "must not be stored");
  } catch (err) {
    if (err instanceof KvError) return err;
    throw err;
  }
  throw new Error("the client was served");
}

describe.skipIf(noOpenssl)("TLS on the TCP port", () => {
  test("a client that trusts the server's CA sets and gets over TLS", async () => {
    await using server = await startTestServer(tlsConfig(false));
    expect(server.tls).toBe("tls");
    await using c = await KvClient.connect({ host: "127.0.0.1", port: server.port, tls: { ca: pem.ca } });
    const value = new Uint8Array(300_000).map((_, i) => i % 251);
    await Promise.all([c.set("a", value), c.set("b", "small")]);
    expect(await c.get("a")).toEqual(value);
    expect(await c.getString("b")).toBe("small");
  });

  test("a client that does not trust the server's certificate fails to connect with KV_ERR_TLS", async () => {
    await using server = await startTestServer(tlsConfig(false));
    const attempt = KvClient.connect({ host: "127.0.0.1", port: server.port, tls: { ca: pem.otherCa } });
    expect(await rejection(attempt)).toMatchObject({ code: ErrorCode.Tls });
    // The system's CAs do not know the test CA either.
    expect(await rejection(KvClient.connect({ host: "127.0.0.1", port: server.port, tls: true }))).toMatchObject({
      code: ErrorCode.Tls,
    });
  });

  test("a TLS client on a plaintext port fails to connect with KV_ERR_TLS, asking whether the port serves TLS", async () => {
    await using server = await startTestServer();
    const attempt = KvClient.connect({ host: "127.0.0.1", port: server.port, tls: { ca: pem.ca } });
    expect(await rejection(attempt)).toMatchObject({ code: ErrorCode.Tls });
    expect(await rejection(attempt)).toEqual(anError(/is (the server|it) serving TLS on this port\?/));
  });

  test("a plaintext request to a TLS port is not answered, and the connection closes", async () => {
    await using server = await startTestServer(tlsConfig(false));
    await using raw = await RawConnection.open(server.port);
    raw.send(Buffer.concat(encodeSetRequest(new TextEncoder().encode("plain"), new TextEncoder().encode("text"))));
    expect(await raw.next()).toBeNull();
    await raw.closed;
    await using c = await KvClient.connect({ host: "127.0.0.1", port: server.port, tls: { ca: pem.ca } });
    expect(await c.get("plain")).toBeUndefined();
  });
});

describe.skipIf(noOpenssl)("mutual TLS (--tls-ca)", () => {
  test("a client with a certificate signed by the CA is served", async () => {
    await using server = await startTestServer(tlsConfig(true));
    expect(server.tls).toBe("mtls");
    await using c = await KvClient.connect({ host: "127.0.0.1", port: server.port, tls: goodClient() });
    await c.set("k", "v");
    expect(await c.getString("k")).toBe("v");
    expect(server.counters.get(Counter.tlsHandshakeFailures)).toBe(0);
  });

  const refused: [string, () => ClientTlsOptions][] = [
    ["without a certificate", () => ({ ca: pem.ca })],
    ["with a certificate from another CA", () => ({ ca: pem.ca, cert: pem.wrongCaClient, key: pem.clientKey })],
    ["with an expired certificate", () => ({ ca: pem.ca, cert: pem.expiredClient, key: pem.clientKey })],
  ];
  test.each(refused)("a client %s is refused before any request runs", async (_name, tls) => {
    await using server = await startTestServer(tlsConfig(true));
    const err = await refusal(server.port, tls());
    expect<string[]>([ErrorCode.Tls, ErrorCode.ConnectionClosed]).toContain(err.code);
    expect(server.counters.get(Counter.tlsHandshakeFailures)).toBeGreaterThanOrEqual(1);
    await using good = await KvClient.connect({ host: "127.0.0.1", port: server.port, tls: goodClient() });
    expect(await good.get("refused")).toBeUndefined();
  });

  test("metrics show the certificate's expiry and count refused handshakes", async () => {
    await using server = await startTestServer({ ...tlsConfig(true), adminPort: 0 });
    await refusal(server.port, { ca: pem.ca });
    const text = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
    const expiry = Number(/^kvs_tls_certificate_expiry_timestamp_seconds (\S+)$/m.exec(text)?.[1]);
    const notAfter = new X509Certificate(await read(certs.server.cert)).validToDate;
    expect(expiry).toBe(notAfter.getTime() / 1000);
    expect(Number(/^kvs_tls_handshake_failures_total (\S+)$/m.exec(text)?.[1])).toBeGreaterThanOrEqual(1);
  });

  test("the HTTP gateway serves HTTPS and requires the client certificate too", async () => {
    await using server = await startTestServer({ ...tlsConfig(true), httpPort: 0 });
    const url = `https://127.0.0.1:${server.httpPort}`;
    const put = await fetch(`${url}/set?k=h&v=over-https`, { tls: goodClient() });
    expect(put.status).toBe(200);
    const got = await fetch(`${url}/get?k=h`, { tls: goodClient() });
    expect(await got.text()).toBe("over-https");
    expect(await rejection(fetch(`${url}/get?k=h`, { tls: { ca: pem.ca } }))).toEqual(anError());
    expect(
      await rejection(
        fetch(`${url}/set?k=h&v=intruder`, { tls: { ca: pem.ca, cert: pem.expiredClient, key: pem.clientKey } }),
      ),
    ).toEqual(anError());
    expect(await rejection(fetch(`http://127.0.0.1:${server.httpPort}/get?k=h`))).toEqual(anError());
    expect(await (await fetch(`${url}/get?k=h`, { tls: goodClient() })).text()).toBe("over-https");
  });
});

describe.skipIf(noOpenssl)("certificate reload", () => {
  /** A directory holding the server's certificate under fixed names, as a renewal tool rewrites them. */
  function liveFiles(): { cert: string; key: string; dir: string } & Disposable {
    const dir = mkdtempSync(join(tmpdir(), "kvs-live-tls-"));
    const files = { cert: join(dir, "cert.pem"), key: join(dir, "key.pem") };
    copyFileSync(certs.server.cert, files.cert);
    copyFileSync(certs.server.key, files.key);
    return { ...files, dir, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) };
  }

  test("a reload serves new connections the new certificate while open connections keep working", async () => {
    using files = liveFiles();
    await using server = await startTestServer({ tls: { cert: files.cert, key: files.key, ca: certs.ca } });
    await using before = await KvClient.connect({ host: "127.0.0.1", port: server.port, tls: goodClient() });
    await before.set("k", "1");
    expect(await peerCommonName(server.port)).toBe("localhost");

    copyFileSync(certs.rotated.cert, files.cert);
    copyFileSync(certs.rotated.key, files.key);
    // Requests in flight across the reload are all answered.
    const inFlight = Array.from({ length: 200 }, (_, i) => before.set(`k${i}`, String(i)));
    server.reloadTls();
    await Promise.all(inFlight);

    expect(await peerCommonName(server.port)).toBe("kvs-rotated");
    expect(await before.getString("k199")).toBe("199");
    await using after = await KvClient.connect({ host: "127.0.0.1", port: server.port, tls: goodClient() });
    expect(await after.getString("k")).toBe("1");
    expect(server.counters.get(Counter.tlsReloads)).toBe(1);
  });

  test("a reload of a bad certificate fails and leaves the old one in service", async () => {
    using files = liveFiles();
    await using server = await startTestServer({ tls: { cert: files.cert, key: files.key } });
    writeFileSync(files.cert, "-----BEGIN CERTIFICATE-----\nhalf written");
    expect(() => server.reloadTls()).toThrow(KvError);
    copyFileSync(certs.rotated.cert, files.cert); // the rotated certificate with the old key: a mismatch
    expect(() => server.reloadTls()).toThrow(/does not belong/);
    expect(server.counters.get(Counter.tlsReloadFailures)).toBe(2);
    expect(await peerCommonName(server.port)).toBe("localhost");
  });

  test("SIGHUP makes a running server re-read its certificate files", async () => {
    using files = liveFiles();
    await using proc = await spawnServer([
      "--store",
      "memory",
      "--port",
      "0",
      "--tls-cert",
      files.cert,
      "--tls-key",
      files.key,
    ]);
    expect(proc.line).toContain(" tls ");
    copyFileSync(certs.rotated.cert, files.cert);
    copyFileSync(certs.rotated.key, files.key);
    proc.proc.kill("SIGHUP");
    await untilLine(proc.proc.stderr, /TLS certificate reloaded/);
    expect(await peerCommonName(proc.port)).toBe("kvs-rotated");

    // A bad file on the next SIGHUP is logged and changes nothing; the server keeps running.
    writeFileSync(files.key, "not a key");
    proc.proc.kill("SIGHUP");
    await untilLine(proc.proc.stderr, /TLS reload failed/);
    expect(await peerCommonName(proc.port)).toBe("kvs-rotated");
    expect(proc.proc.exitCode).toBeNull();
  });
});

describe.skipIf(noOpenssl)("TLS settings", () => {
  /** The server's exit code and stderr for `args` on the memory store. */
  const startupFailure = (args: string[]) => runServer(["--store", "memory", "--port", "0", ...args]);

  test("a certificate without its key, or a CA without a certificate, exits 2 naming the flag", async () => {
    const noKey = startupFailure(["--tls-cert", certs.server.cert]);
    expect(noKey).toMatchObject({ code: 2 });
    expect(noKey.stderr).toContain("--tls-cert was given without --tls-key");
    const caOnly = startupFailure(["--tls-ca", certs.ca]);
    expect(caOnly).toMatchObject({ code: 2 });
    expect(caOnly.stderr).toContain("--tls-ca needs --tls-cert and --tls-key");
  });

  test.each([
    [
      "an unreadable certificate",
      () => ["--tls-cert", join(certs.dir, "missing.pem"), "--tls-key", certs.server.key],
      "cannot read --tls-cert",
    ],
    [
      "a key that is not the certificate's",
      () => ["--tls-cert", certs.server.cert, "--tls-key", certs.clientKey],
      "does not belong",
    ],
    [
      "an expired certificate",
      () => ["--tls-cert", certs.expiredServer.cert, "--tls-key", certs.expiredServer.key],
      "expired on 2020-01-02",
    ],
    [
      "a CA file that is not PEM",
      () => ["--tls-cert", certs.server.cert, "--tls-key", certs.server.key, "--tls-ca", certs.clientKey],
      "--tls-ca",
    ],
  ])("%s fails the startup with a message naming it", async (_name, args, message) => {
    const { code, stderr } = startupFailure(args());
    expect(code).toBe(1);
    expect(stderr).toContain(message);
  });

  test("a second server on a TLS server's port fails at startup, though TLS binds with SO_REUSEPORT", async () => {
    const tlsArgs = ["--tls-cert", certs.server.cert, "--tls-key", certs.server.key];
    await using first = await spawnServer(["--store", "memory", "--port", "0", ...tlsArgs]);
    const second = startupFailure(["--port", String(first.port), ...tlsArgs]);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(`cannot listen on 127.0.0.1:${first.port}: the port is in use`);
  });

  test("kvs:// and kvss:// URLs give host, port and TLS, and anything else is refused", () => {
    expect(parseServerUrl("kvs://db.internal")).toEqual({ host: "db.internal", port: 7070, tls: false });
    expect(parseServerUrl("kvss://db.example.com")).toEqual({ host: "db.example.com", port: 7443, tls: true });
    expect(parseServerUrl("kvss://[::1]:9000")).toEqual({ host: "::1", port: 9000, tls: true });
    for (const bad of ["http://x:1", "kvs://", "kvss://h:1/path", "kvs://h:1?x=1", "nonsense"]) {
      expect(() => parseServerUrl(bad)).toThrow(expect.objectContaining({ code: ErrorCode.Config }));
    }
  });

  test("the CLI reaches a mutual-TLS server through a kvss:// URL with its certificate, and fails clearly without", async () => {
    await using server = await startTestServer(tlsConfig(true));
    const url = `kvss://127.0.0.1:${server.port}`;
    const tlsArgs = ["--tls-ca", certs.ca, "--tls-cert", certs.client, "--tls-key", certs.clientKey];
    expect((await runCli(["--url", url, ...tlsArgs, "set", "cli", "over tls"])).code).toBe(0);
    const got = await runCli(["--url", url, ...tlsArgs, "get", "cli"]);
    expect(new TextDecoder().decode(got.stdout)).toBe("over tls\n");
    const untrusted = await runCli(["--url", url, "get", "cli"]);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toContain(ErrorCode.Tls);
    const noCert = await runCli(["--url", url, "--tls-ca", certs.ca, "get", "cli"]);
    expect(noCert.code).toBe(1);
    expect(noCert.stderr).toMatch(/KV_ERR_TLS|KV_ERR_CONNECTION_CLOSED/);
    const both = await runCli(["--url", url, "--port", "1", "get", "cli"]);
    expect(both.code).toBe(2);
  });
});
