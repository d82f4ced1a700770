import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { KvClient } from "../../client/kv-client.js";
import type { Config } from "../../src/config.js";
import { DynamoCallError } from "../../src/store/data-plane.js";
import { ErrorCode, KvError } from "../../src/wire/errors.js";
import { type StoreConfigs, storeConfigs, useBackends } from "../support/backends.js";
import { startTestServer } from "../support/harness.js";
import { wrapping } from "../support/stores.js";

// Starts DynamoDB Local and servers; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(120_000);

const backends = useBackends();

const STORES = gatewayOn(storeConfigs(backends, "http"));

/** Each store's settings with the HTTP gateway on a free port. */
function gatewayOn(stores: StoreConfigs): Record<string, () => Partial<Config>> {
  return Object.fromEntries(
    Object.entries(stores).map(([name, config]) => [name, () => ({ ...config(), httpPort: 0 })]),
  );
}

/** GET (or `init.method`) on the server's gateway, answering status and body text. */
async function call(port: number, path: string, init: RequestInit = {}): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, init);
  return { status: res.status, body: await res.text() };
}

async function json(port: number, path: string): Promise<Record<string, unknown>> {
  const res = await call(port, path);
  expect(res.status).toBe(200);
  return JSON.parse(res.body) as Record<string, unknown>;
}

for (const [name, config] of Object.entries(STORES)) {
  describe(`the HTTP gateway on the ${name} store`, () => {
    test("the brief's endpoints answer with the brief's status codes", async () => {
      await using server = await startTestServer(config());
      const port = server.httpPort as number;
      expect(await call(port, "/set?k=greeting&v=hello%20world")).toEqual({ status: 200, body: "" });
      expect(await call(port, "/get?k=greeting")).toEqual({ status: 200, body: "hello world" });
      expect((await call(port, "/get?k=nope")).status).toBe(404);
      expect((await call(port, "/is?k=greeting")).status).toBe(200);
      expect((await call(port, "/is?k=nope")).status).toBe(404);
      expect((await call(port, "/rm?k=greeting")).status).toBe(200);
      const missing = await call(port, "/rm?k=greeting");
      expect(missing.status).toBe(404);
      expect(JSON.parse(missing.body)).toMatchObject({ error: "not_found" });
      expect((await call(port, "/get?k=greeting")).status).toBe(404);
      await call(port, "/set?k=a&v=1");
      await call(port, "/set?k=b&v=2");
      expect(await json(port, "/clear")).toEqual({ removed: 2 });
      expect(await json(port, "/getKeys")).toEqual({ keys: [] });
    });

    test("getKeys, getValues and getAll answer JSON; bytes that are not UTF-8 come as base64, losslessly", async () => {
      await using server = await startTestServer(config());
      const port = server.httpPort as number;
      await call(port, "/set?k=a&v=x");
      await call(port, "/set?k=%FF%00&v=%C3%28");
      await call(port, "/set?k=plus+sign&v=1%2B1");
      const keys = (await json(port, "/getKeys")).keys as unknown[];
      expect(keys).toHaveLength(3);
      expect(keys).toContainEqual({ base64: Buffer.from([0xff, 0x00]).toString("base64") });
      expect(keys).toContain("plus sign");
      const values = (await json(port, "/getValues")).values as unknown[];
      expect(values).toContainEqual({ base64: Buffer.from([0xc3, 0x28]).toString("base64") });
      expect(values).toContain("1+1");
      const items = (await json(port, "/getAll")).items as { key: unknown; value: unknown }[];
      expect(items).toContainEqual({ key: "a", value: "x" });
      const b64 = (await json(port, "/getAll?encoding=base64")).items as { key: string; value: string }[];
      const decoded = b64.map((i) => [Buffer.from(i.key, "base64"), Buffer.from(i.value, "base64")]);
      expect(decoded).toContainEqual([Buffer.from([0xff, 0x00]), Buffer.from([0xc3, 0x28])]);
      // The client sees the same bytes the URL carried.
      await using c = await KvClient.connect({ port: server.port });
      expect(await c.get(Uint8Array.of(0xff, 0x00))).toEqual(Uint8Array.of(0xc3, 0x28));
    });

    test("limit and cursor page a listing: every key exactly once", async () => {
      await using server = await startTestServer(config());
      const port = server.httpPort as number;
      await using c = await KvClient.connect({ port: server.port });
      await Promise.all(Array.from({ length: 45 }, (_, i) => c.set(`k${i}`, `v${i}`)));
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await json(port, `/getKeys?limit=10${cursor === undefined ? "" : `&cursor=${cursor}`}`);
        seen.push(...(page.keys as string[]));
        cursor = page.cursor as string | undefined;
      } while (cursor !== undefined);
      expect(seen.sort()).toEqual(Array.from({ length: 45 }, (_, i) => `k${i}`).sort());
      const rest = await json(port, "/v1/keys?limit=40&values=1");
      expect((rest.items as unknown[]).length).toBe(40);
      const next = await json(port, `/v1/keys?values=1&cursor=${rest.cursor}`);
      expect((next.items as unknown[]).length).toBe(5);
      expect(next.cursor).toBeUndefined();
      expect((await json(port, "/v1/keys?prefix=k4")).keys).toHaveLength(6);
    });

    test("the REST form stores raw bodies byte-exact, and answers HEAD and DELETE", async () => {
      await using server = await startTestServer(config());
      const port = server.httpPort as number;
      const body = new Uint8Array(randomBytes(600 * 1024));
      const put = await fetch(`http://127.0.0.1:${port}/v1/keys/blob%2F1`, { method: "PUT", body });
      expect(put.status).toBe(204);
      const got = await fetch(`http://127.0.0.1:${port}/v1/keys/blob%2F1`);
      expect(got.status).toBe(200);
      expect(new Uint8Array(await got.arrayBuffer())).toEqual(body);
      expect((await fetch(`http://127.0.0.1:${port}/v1/keys/blob%2F1`, { method: "HEAD" })).status).toBe(200);
      expect((await call(port, "/v1/keys/blob%2F1", { method: "DELETE" })).status).toBe(204);
      expect((await fetch(`http://127.0.0.1:${port}/v1/keys/blob%2F1`, { method: "HEAD" })).status).toBe(404);
      expect((await call(port, "/v1/keys/blob%2F1", { method: "DELETE" })).status).toBe(404);
      await using c = await KvClient.connect({ port: server.port });
      expect(await c.get("blob/1")).toBeUndefined();
    });
  });
}

describe("the HTTP gateway refuses bad input with a JSON error, never a false 200", () => {
  const expectError = async (port: number, path: string, status: number, error: string, init: RequestInit = {}) => {
    const res = await call(port, path, init);
    expect({ path, status: res.status }).toEqual({ path, status });
    expect(JSON.parse(res.body)).toMatchObject({ error });
  };

  test("missing, empty or oversized keys, missing values, bad escapes, limits, encodings and cursors", async () => {
    await using server = await startTestServer({ httpPort: 0 });
    const port = server.httpPort as number;
    await expectError(port, "/set?v=1", 400, "bad_request");
    await expectError(port, "/set?k=&v=1", 400, "bad_request");
    await expectError(port, "/set?k=a", 400, "bad_request");
    await expectError(port, `/get?k=${"x".repeat(1025)}`, 400, "key_too_large");
    await expectError(port, "/get?k=%G1", 400, "bad_request");
    await expectError(port, "/set?k=a%2&v=1", 400, "bad_request");
    await expectError(port, "/getKeys?limit=0", 400, "bad_request");
    await expectError(port, "/getKeys?limit=ten", 400, "bad_request");
    await expectError(port, "/getKeys?encoding=latin1", 400, "bad_request");
    await expectError(port, "/getKeys?cursor=AAAA", 400, "bad_cursor");
    await expectError(port, "/getKeys?cursor=%%%", 400, "bad_request");
    await expectError(port, "/v1/keys?cursor=not*base64", 400, "bad_cursor");
    await expectError(port, "/v1/keys/", 400, "bad_request", { method: "PUT", body: "x" });
    await expectError(port, "/nowhere", 404, "no_route");
    await expectError(port, "/set?k=a&v=1", 405, "method_not_allowed", { method: "POST" });
    await expectError(port, "/v1/keys/a", 405, "method_not_allowed", { method: "PATCH" });
    expect((await call(port, "/getKeys")).status).toBe(200);
  });

  test("a request body counts in the server's byte budget while it is read and until its value is stored", async () => {
    const reached = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    await using server = await startTestServer(
      { httpPort: 0, maxBufferedBytes: 1024 * 1024 },
      {
        wrapStore: (s) =>
          wrapping(s, {
            setSync: undefined,
            set: async (key, value) => {
              reached.resolve();
              await gate.promise;
              return s.set(key, value);
            },
          }),
      },
    );
    const body = new Uint8Array(3 * 1024 * 1024).fill(7);
    const put = fetch(`http://127.0.0.1:${server.httpPort}/v1/keys/held`, { method: "PUT", body });
    await reached.promise;
    // The whole body is held while the store writes it: counted, as a TCP frame would be.
    expect(server.budget.used).toBeGreaterThanOrEqual(body.length);
    gate.resolve();
    expect((await put).status).toBe(204);
    expect(server.budget.used).toBe(0);
  });

  test("a body that trickles while others wait for the budget is cut off after the hold limit, and they go on", async () => {
    await using server = await startTestServer({ httpPort: 0, maxBufferedBytes: 1024 * 1024, budgetHoldMs: 300 });
    const stall = Promise.withResolvers<void>();
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        // 2 MiB in 64 KiB pieces, then nothing: the client stalls with the budget held.
        if (sent >= 2 * 1024 * 1024) return stall.promise;
        controller.enqueue(new Uint8Array(64 * 1024).fill(1));
        sent += 64 * 1024;
      },
    });
    const trickling = fetch(`http://127.0.0.1:${server.httpPort}/v1/keys/slow`, { method: "PUT", body }).then(
      async (r) => ({ status: r.status, body: await r.json() }),
      (err) => ({ status: 0, body: String(err) }),
    );
    while (server.budget.used < 1024 * 1024) await new Promise((resolve) => setTimeout(resolve, 5));
    // Another large request must wait for the budget, until the trickling body is cut off.
    const other = fetch(`http://127.0.0.1:${server.httpPort}/v1/keys/other`, {
      method: "PUT",
      body: new Uint8Array(3 * 1024 * 1024).fill(2),
    });
    expect((await other).status).toBe(204);
    // Refused with the reason, not merely reset.
    expect(await trickling).toEqual({
      status: 400,
      body: { error: "bad_request", message: "the request body came too slowly while others waited" },
    });
    stall.resolve();
    expect((await fetch(`http://127.0.0.1:${server.httpPort}/v1/keys/slow`)).status).toBe(404);
  });

  test("the empty key is refused, as over TCP, with the reason; a repeated parameter is refused, not picked", async () => {
    await using server = await startTestServer({ httpPort: 0 });
    const port = server.httpPort as number;
    for (const path of ["/get?k=", "/set?k=&v=1", "/rm?k=", "/is?k="]) {
      const res = await call(port, path);
      expect({ path, status: res.status, body: JSON.parse(res.body) }).toMatchObject({
        path,
        status: 400,
        body: { error: "bad_request", message: "the key is empty: a key has 1 to 1024 bytes" },
      });
    }
    for (const path of ["/get?k=a&k=b", "/set?k=a&v=1&v=2", "/getKeys?limit=1&limit=2"]) {
      const res = await call(port, path);
      expect({ path, status: res.status }).toEqual({ path, status: 400 });
      expect(JSON.parse(res.body).message).toMatch(/ is given more than once$/);
    }
    // Nothing was written by the refused sets.
    expect((await call(port, "/get?k=a")).status).toBe(404);
  });

  test("a body over --max-value-bytes is refused 413, declared or streamed, and nothing is stored", async () => {
    await using server = await startTestServer({ httpPort: 0, maxValueBytes: 1000 });
    const port = server.httpPort as number;
    await expectError(port, "/v1/keys/a", 413, "value_too_large", { method: "PUT", body: new Uint8Array(1001) });
    const chunks = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 5; i++) controller.enqueue(new Uint8Array(300));
        controller.close();
      },
    });
    await expectError(port, "/v1/keys/a", 413, "value_too_large", { method: "PUT", body: chunks });
    await expectError(port, `/set?k=a&v=${"x".repeat(1001)}`, 413, "value_too_large");
    expect((await call(port, "/get?k=a")).status).toBe(404);
    expect((await call(port, "/v1/keys/a", { method: "PUT", body: new Uint8Array(1000) })).status).toBe(204);
  });

  test("a backend that may recover answers 503, a backend bug 500, and the gateway keeps serving", async () => {
    let mode: "throttled" | "broken" | "timeout" | "ok" = "throttled";
    await using server = await startTestServer(
      { httpPort: 0 },
      {
        wrapStore: (s) =>
          wrapping(s, {
            set: (k, v) => {
              const throttle = new DynamoCallError("ThrottlingException", "slow down", {
                status: 400,
                retryable: true,
              });
              if (mode === "throttled")
                return Promise.reject(
                  new KvError(ErrorCode.Storage, "throttled", { cause: throttle, retryable: true }),
                );
              if (mode === "broken") return Promise.reject(new KvError(ErrorCode.Storage, "ValidationException"));
              if (mode === "timeout") return Promise.reject(new KvError(ErrorCode.Timeout, "no answer"));
              return s.set(k, v);
            },
          }),
      },
    );
    const port = server.httpPort as number;
    await expectError(port, "/set?k=a&v=1", 503, "storage_unavailable");
    mode = "broken";
    await expectError(port, "/set?k=a&v=1", 500, "storage");
    mode = "timeout";
    await expectError(port, "/set?k=a&v=1", 503, "timeout");
    expect((await call(port, "/get?k=a")).status).toBe(404);
    mode = "ok";
    expect((await call(port, "/set?k=a&v=1")).status).toBe(200);
  });

  test("--http-port off starts no gateway", async () => {
    await using server = await startTestServer({});
    expect(server.httpPort).toBeUndefined();
  });
});

describe("the HTTP gateway and browsers", () => {
  test("a cross-site browser request may not change the store, while curl, scripts and same-origin pages may", async () => {
    await using server = await startTestServer({ store: "memory", httpPort: 0 });
    const port = server.httpPort as number;
    const own = `http://127.0.0.1:${port}`;
    const changes: [string, RequestInit][] = [
      ["/set?k=a&v=evil", {}],
      ["/rm?k=a", {}],
      ["/clear", {}],
      ["/v1/keys/a", { method: "PUT", body: "evil" }],
      ["/v1/keys/a", { method: "DELETE" }],
    ];
    const browsers: Record<string, string>[] = [
      { "sec-fetch-site": "cross-site" },
      { "sec-fetch-site": "same-site" },
      { origin: "http://attacker.example" },
      { origin: "null" },
      { origin: `http://127.0.0.1:${port + 1}` },
    ];
    expect((await call(port, "/set?k=a&v=mine")).status).toBe(200);
    for (const [path, init] of changes) {
      for (const headers of browsers) {
        const res = await fetch(`${own}${path}`, { ...init, headers });
        const body = (await res.json()) as { error: string };
        expect({ path, headers, status: res.status, error: body.error }).toEqual({
          path,
          headers,
          status: 403,
          error: "cross_site",
        });
      }
    }
    // Nothing changed, and reading stays open to every caller.
    expect((await call(port, "/get?k=a", { headers: { "sec-fetch-site": "cross-site" } })).body).toBe("mine");
    // A same-origin page, a typed-in URL, and a request with no browser headers are served.
    const allowed: Record<string, string>[] = [
      { "sec-fetch-site": "same-origin" },
      { "sec-fetch-site": "none" },
      { origin: own },
      {},
    ];
    for (const headers of allowed) {
      expect({ headers, status: (await call(port, "/set?k=a&v=ok", { headers })).status }).toEqual({
        headers,
        status: 200,
      });
    }
    expect((await call(port, "/get?k=a")).body).toBe("ok");
  });
});
