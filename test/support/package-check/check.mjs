// Run from a directory where the packed kvs-client is installed, under Node or Bun:
//   node check.mjs PORT [TLS_PORT CA CERT KEY]
// Prints one JSON line of what worked; the test compares it whole.
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { ErrorCode, KvClient, KvError } from "kvs-client";

const [port, tlsPort, caPath, certPath, keyPath] = process.argv.slice(2);
const dec = new TextDecoder();
const out = { runtime: typeof globalThis.Bun === "undefined" ? "node" : "bun" };

const c = await KvClient.connect({ port: Number(port), requestTimeoutMs: 20_000 });
// Pipelining: 2,000 sets and gets in flight at once, answered in order.
const n = 2000;
await Promise.all(Array.from({ length: n }, (_, i) => c.set(`p${i}`, `v${i}`)));
const got = await Promise.all(Array.from({ length: n }, (_, i) => c.get(`p${i}`)));
out.pipelined = got.every((v, i) => v !== undefined && dec.decode(v) === `v${i}`);
// A large value, uploaded from an async iterable and read back piece by piece.
const size = 6 * 1024 * 1024;
const chunk = new Uint8Array(256 * 1024).map((_, i) => i % 251);
async function* source() {
  for (let sent = 0; sent < size; sent += chunk.length) yield chunk;
}
await c.setFrom("large", size, source());
let received = 0;
let exact = true;
await c.getTo("large", (piece) => {
  for (let i = 0; i < piece.length; i++) if (piece[i] !== ((received + i) % (256 * 1024)) % 251) exact = false;
  received += piece.length;
});
out.large = received === size && exact;
// The same value as a Web ReadableStream, read to the end; a cancelled one leaves the connection usable.
const stream = await c.getStream("large");
let streamed = 0;
let streamExact = true;
for await (const piece of stream) {
  for (let i = 0; i < piece.length; i++) if (piece[i] !== ((streamed + i) % (256 * 1024)) % 251) streamExact = false;
  streamed += piece.length;
}
out.stream = streamed === size && streamExact;
out.absentStream = (await c.getStream("no-such-key")) === undefined;
const cancelled = await c.getStream("large");
const reader = cancelled.getReader();
await reader.read();
await reader.cancel();
out.afterCancel = dec.decode(await c.get("p7"));
// Versions and conditional writes, and typed errors with stable codes.
const version = await c.set("cas", "one", { ifAbsent: true });
const codeOf = (p) =>
  p.then(
    () => "ok",
    (e) => (e instanceof KvError ? e.code : String(e)),
  );
out.conflict = await codeOf(c.set("cas", "two", { ifAbsent: true }));
out.cas = await codeOf(c.set("cas", "two", { ifVersion: version }));
out.tooLong = await codeOf(c.get("k".repeat(1025)));
// Expiry, batch helpers and a request's own AbortSignal.
const before = Date.now();
await c.set("session", "s", { ttlMs: 60_000 });
const expiresAt = (await c.getVersioned("session"))?.expiresAt ?? 0;
out.expiry = expiresAt >= before + 60_000 && expiresAt <= Date.now() + 60_000;
const batch = await c.mset([
  ["m1", "a"],
  ["m2", "b"],
]);
const read = await c.mget(["m1", "m2", "m3"]);
out.batch =
  batch.every((r) => r.ok) && read.map((r) => (r.ok && r.value ? dec.decode(r.value) : null)).join() === "a,b,";
out.aborted = await codeOf(c.get("p1", { signal: AbortSignal.abort() }));
// Listing as an async iterator.
let listed = 0;
for await (const _ of c.keys({ prefix: "p1" })) listed++;
out.listed = listed;
await c.close();
out.refused = await codeOf(KvClient.connect({ port: 1 }));
if (tlsPort !== undefined) {
  const tls = {
    ca: await readFile(caPath, "utf8"),
    cert: await readFile(certPath, "utf8"),
    key: await readFile(keyPath, "utf8"),
  };
  const secure = await KvClient.connect({ port: Number(tlsPort), tls });
  await secure.set("over-tls", "yes");
  out.mtls = dec.decode(await secure.get("over-tls"));
  await secure.close();
  out.untrusted = await codeOf(KvClient.connect({ port: Number(tlsPort), tls: {} }));
}
// A peer that accepts and never speaks: the TLS handshake cannot finish, and connecting gives up at its deadline.
const silent = createServer(() => {});
await new Promise((resolve) => silent.listen(0, "127.0.0.1", resolve));
const started = performance.now();
out.handshakeTimeout = await codeOf(
  KvClient.connect({ port: silent.address().port, tls: true, connectTimeoutMs: 300 }),
);
out.gaveUpInTime = performance.now() - started < 5_000;
silent.close();
for (const s of silent.connections ?? []) s.destroy();
out.codes = ErrorCode.Conflict === "KV_ERR_CONFLICT";
console.log(JSON.stringify(out));
