import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvClient } from "../client/kv-client.js";
import { type BenchSettings, localModeArgs, type Row } from "./scenarios.js";
import { httpPortOf, startBareHttp, startKvs, type Target } from "./targets.js";

const MiB = 1024 * 1024;

/**
 * Sets `n` keys of `valueBytes` through one pipelined connection, `window`
 * at a time. A set that fails (DynamoDB Local on a shared 2-core machine can
 * exceed the request deadline) is retried up to three times; only the fill
 * is retried, never the measured operations.
 */
async function fill(c: KvClient, n: number, valueBytes: number, window: number): Promise<number> {
  const value = new Uint8Array(valueBytes).fill(0x61);
  let retries = 0;
  const setWithRetry = async (key: string): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      try {
        await c.set(key, value);
        return;
      } catch (err) {
        if (attempt === 3) throw err;
        retries++;
      }
    }
  };
  for (let first = 0; first < n; first += window) {
    const sets: Promise<void>[] = [];
    for (let i = first; i < Math.min(n, first + window); i++) sets.push(setWithRetry(`key:${i}`));
    await Promise.all(sets);
  }
  return retries;
}

/** Runs `work` while sampling the target's RSS; resolves the work's duration and the highest RSS seen. */
async function sampled(target: Target, work: () => Promise<void>): Promise<{ ms: number; peakRss: number }> {
  let peakRss = target.rss();
  const timer = setInterval(() => {
    peakRss = Math.max(peakRss, target.rss());
  }, 20);
  const started = performance.now();
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return { ms: performance.now() - started, peakRss: Math.max(peakRss, target.rss()) };
}

/**
 * Listing and clear at scale: fill a store, list every key (and every
 * value) over TCP, and on the memory store through the HTTP gateway's
 * `/getKeys` and `/getAll` too, then clear it; report keys/s, the server's
 * RSS before and at its peak during each, and the clear's time. The memory store holds 1,000,000
 * keys, DynamoDB Local 100,000 (quick: 50,000 and 1,000).
 */
export async function listing(s: BenchSettings): Promise<Row[]> {
  const rows: Row[] = [];
  const stores: [string, string[], number, number][] = [
    ["memory", ["--store", "memory"], s.quick ? 20_000 : 1_000_000, 500],
    ["dynamodb-local", [], s.quick ? 1_000 : 100_000, 100],
  ];
  for (const [store, storeArgs, n, window] of stores) {
    const dir = mkdtempSync(join(tmpdir(), "kvs-bench-list-"));
    try {
      const args = store === "memory" ? [...storeArgs, "--data-dir", dir] : await localModeArgs(s, "listing", dir);
      await using target = await startKvs(`kvs ${store}`, [...args, "--http-port", "0"]);
      await using c = await KvClient.connect({ port: target.port });
      s.log(`listing: filling ${n} keys on ${store}`);
      let retries = 0;
      const filled = await sampled(target, async () => {
        retries = await fill(c, n, 16, window);
      });
      const baseline = target.rss();
      for (const values of [false, true]) {
        let count = 0;
        const cpu = target.cpuMs();
        const ownCpu = target.ownCpuMs();
        const run = await sampled(target, async () => {
          if (values) for await (const _ of c.entries()) count++;
          else for await (const _ of c.keys()) count++;
        });
        rows.push({
          store,
          op: values ? "list keys+values" : "list keys",
          keys: count,
          "keys/s": Math.round(count / (run.ms / 1000)),
          "kvs µs CPU/key": +(((target.ownCpuMs() - ownCpu) * 1000) / count).toFixed(2),
          // With DynamoDB Local, its Java process is a child of the server and counts here.
          "+ children µs CPU/key": +(((target.cpuMs() - cpu) * 1000) / count).toFixed(2),
          "RSS before MiB": +(baseline / MiB).toFixed(1),
          "RSS peak MiB": +(run.peakRss / MiB).toFixed(1),
        });
      }
      for (const path of store === "memory" ? ["/getKeys", "/getAll"] : []) {
        const cpu = target.cpuMs();
        const before = target.rss();
        let bytes = 0;
        const run = await sampled(target, async () => {
          const res = await fetch(`http://127.0.0.1:${httpPortOf(target)}${path}`);
          if (!res.ok || res.body === null) throw new Error(`${path} answered ${res.status}`);
          for await (const chunk of res.body) bytes += chunk.byteLength;
        });
        rows.push({
          store,
          op: `HTTP ${path}`,
          keys: n,
          "keys/s": Math.round(n / (run.ms / 1000)),
          "kvs µs CPU/key": +(((target.cpuMs() - cpu) * 1000) / n).toFixed(2),
          "answer MiB": +(bytes / MiB).toFixed(1),
          "RSS before MiB": +(before / MiB).toFixed(1),
          "RSS peak MiB": +(run.peakRss / MiB).toFixed(1),
        });
      }
      const cleared = await sampled(target, async () => {
        const removed = await c.clear();
        if (removed !== n) throw new Error(`clear removed ${removed} of ${n}`);
      });
      rows.push({
        store,
        op: "clear",
        keys: n,
        "keys/s": Math.round(n / (cleared.ms / 1000)),
        "clear s": +(cleared.ms / 1000).toFixed(2),
        "fill keys/s": Math.round(n / (filled.ms / 1000)),
        "fill retries": retries,
        "RSS peak MiB": +(cleared.peakRss / MiB).toFixed(1),
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return rows;
}

/** Runs wrk and returns requests/s. */
async function wrk(url: string, durationS: number, connections: number): Promise<number> {
  const proc = Bun.spawn(["wrk", "-t2", `-c${connections}`, `-d${durationS}s`, url], { stdout: "pipe" });
  const out = await new Response(proc.stdout).text();
  await proc.exited;
  const m = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!m) throw new Error(`wrk printed no rate:\n${out}`);
  return Number(m[1]);
}

/**
 * HTTP gateway on the memory store against a bare Bun.serve answering a
 * constant, driven by wrk in the same run: GET /get and /set at 50
 * connections. The target is at least 0.7× the bare server.
 */
export async function httpGateway(s: BenchSettings): Promise<Row[]> {
  if (Bun.which("wrk") === null) {
    s.log("http: wrk is not installed (apt-get install wrk); skipped");
    return [];
  }
  const durationS = Math.max(1, Math.round(s.durationMs / 1000) * 2);
  const rows: Row[] = [];
  await using bare = await startBareHttp();
  await using kvs = await startKvs("kvs http", ["--store", "memory", "--http-port", "0"]);
  const httpPort = httpPortOf(kvs);
  await fetch(`http://127.0.0.1:${httpPort}/set?k=key&v=${"v".repeat(24)}`);
  const cases: [string, Target, string][] = [
    ["bare Bun.serve", bare, `http://127.0.0.1:${bare.port}/`],
    ["kvs /get", kvs, `http://127.0.0.1:${httpPort}/get?k=key`],
    ["kvs /set", kvs, `http://127.0.0.1:${httpPort}/set?k=key&v=${"v".repeat(24)}`],
  ];
  let reference = 0;
  for (const [name, target, url] of cases) {
    const cpu = target.cpuMs();
    const rate = await wrk(url, durationS, 50);
    const cpuUs = ((target.cpuMs() - cpu) * 1000) / (rate * durationS);
    if (reference === 0) reference = rate;
    rows.push({
      target: name,
      "req/s": Math.round(rate),
      "× bare": +(rate / reference).toFixed(2),
      "server µs CPU/req": +cpuUs.toFixed(2),
    });
  }
  return rows;
}
