import { describe, expect, test } from "bun:test";
import { KvClient } from "../../client/kv-client.js";
import { KvError } from "../../src/wire/errors.js";
import { startTestServer } from "../support/harness.js";

/** The server's reason from a client error: what follows `CODE: `. */
async function tcpReason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KvError) return err.message.replace(/^server answered \w+ with internal: KV_ERR_\w+: /, "");
    throw err;
  }
  throw new Error("the request was not refused");
}

async function httpReason(url: string, init?: RequestInit): Promise<{ status: number; message: string }> {
  const res = await fetch(url, init);
  return { status: res.status, message: ((await res.json()) as { message: string }).message };
}

describe("one request policy for both front ends", () => {
  test("the same refusal has the same reason over TCP and over HTTP, and is counted under its op on both", async () => {
    await using server = await startTestServer({ httpPort: 0, adminPort: 0, maxValueBytes: 1000 });
    await using c = await KvClient.connect({ port: server.port });
    const http = `http://127.0.0.1:${server.httpPort}`;
    const longKey = "k".repeat(1025);
    const cases: [() => Promise<unknown>, () => Promise<{ status: number; message: string }>, number][] = [
      [() => c.get(longKey), () => httpReason(`${http}/get?k=${longKey}`), 400],
      [
        () => c.set("k", "v".repeat(1001)),
        () => httpReason(`${http}/v1/keys/k`, { method: "PUT", body: "v".repeat(1001) }),
        413,
      ],
      [() => c.set("", "v"), () => httpReason(`${http}/set?k=&v=v`), 400],
      [() => c.delete(longKey), () => httpReason(`${http}/rm?k=${longKey}`), 400],
    ];
    for (const [tcp, viaHttp, status] of cases) {
      const reason = await tcpReason(tcp());
      expect(await viaHttp()).toEqual({ status, message: reason });
    }
    const metrics = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
    for (const frontEnd of ["tcp", "http"]) {
      expect(metrics).toContain(`kvs_requests_total{front_end="${frontEnd}",op="get",result="refused"} 1`);
      expect(metrics).toContain(`kvs_requests_total{front_end="${frontEnd}",op="set",result="refused"} 2`);
      expect(metrics).toContain(`kvs_requests_total{front_end="${frontEnd}",op="delete",result="refused"} 1`);
    }
  });

  test("an HTTP request refused before its key is read (a repeated parameter) is still counted under its op", async () => {
    await using server = await startTestServer({ httpPort: 0, adminPort: 0 });
    const res = await fetch(`http://127.0.0.1:${server.httpPort}/get?k=a&k=b`);
    expect(res.status).toBe(400);
    const metrics = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
    expect(metrics).toContain('kvs_requests_total{front_end="http",op="get",result="refused"} 1');
  });
});
