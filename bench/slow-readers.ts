import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";
import { KvClient } from "../client/kv-client.js";
import { encodeGetRequest, encodeSetRequest } from "../src/wire/client-codec.js";
import { type BenchSettings, localModeArgs, type Row } from "./scenarios.js";
import { startKvs, type Target } from "./targets.js";

const round = (n: number, d = 0) => Number(n.toFixed(d));
const mib = (n: number) => round(n / 2 ** 20, 1);

/** Non-reading connections of a run. */
const READERS = 50;
/** How often the healthy client sets its value, in ms. */
const HEALTHY_EVERY_MS = 50;
/** The servers measured, each with its extra flags. */
const STORES = [
  { store: "memory", extra: [] },
  { store: "dynamodb-local", extra: [] },
  { store: "dynamodb-local", extra: ["--memory-soft-limit-mib", "48"] },
] as const;

/**
 * Scenario 1b: 50 connections that pipeline requests and never read the
 * answers, beside a healthy client on its own connection that sets a
 * 100-byte value every 50 ms. On the memory store, and in local mode on
 * DynamoDB Local, where requests really wait in the store; the greedy
 * connections pipeline gets of one key, or sets of it. Reports the server's
 * RSS over its baseline while they are open and after they close, and the
 * healthy client's p99 with them against its own p99 without them, measured
 * in the same run.
 */
export async function slowReaders(s: BenchSettings): Promise<Row[]> {
  const rows: Row[] = [];
  // A full run also measures local mode with the memory governor on (ops/memory-governor.ts).
  const stores = s.quick ? STORES.slice(0, 2) : STORES;
  for (const { store, extra } of stores) {
    for (const op of s.quick ? (["get"] as const) : (["get", "set"] as const)) {
      // A fresh server per run: its peak RSS is then this run's alone.
      const dir = mkdtempSync(join(tmpdir(), "kvs-bench-slow-"));
      try {
        const args =
          store === "memory" ? ["--store", "memory", "--data-dir", dir] : await localModeArgs(s, "slow", dir);
        const target = await startKvs(`kvs ${store}`, [...args, ...extra, "--log-level", "error"]);
        try {
          const row = await run(s, target, extra.length === 0 ? store : `${store} ${extra.join(" ")}`, op);
          // A graceful stop answers what it read: slow when closed connections' requests were not dropped.
          const stopping = performance.now();
          await target.stop();
          row["server stop s"] = round((performance.now() - stopping) / 1000, 2);
          rows.push(row);
        } finally {
          await target.stop();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  return rows;
}

async function run(s: BenchSettings, target: Target, store: string, op: "get" | "set"): Promise<Row> {
  const healthy = await KvClient.connect({ port: target.port });
  const key = new TextEncoder().encode("big");
  await healthy.set(key, new Uint8Array(1024).fill(1));
  // Warm up, so the baseline is a running server.
  for (let i = 0; i < 500; i++) await healthy.get(key);
  Bun.gc(true);
  const small = new Uint8Array(100).fill(2);
  const paced = async (ms: number): Promise<number[]> => {
    const latencies: number[] = [];
    const until = performance.now() + ms;
    while (performance.now() < until) {
      const t0 = performance.now();
      await healthy.set("healthy", small);
      const took = performance.now() - t0;
      latencies.push(took);
      if (took < HEALTHY_EVERY_MS) await Bun.sleep(HEALTHY_EVERY_MS - took);
    }
    return latencies.sort((a, b) => a - b);
  };
  const alone = await paced(s.durationMs * 2);
  const baseline = target.rss();

  const request =
    op === "get"
      ? encodeGetRequest(key)
      : new Uint8Array(Buffer.concat(encodeSetRequest(key, new Uint8Array(1024).fill(3))));
  const burst = new Uint8Array(Buffer.concat(Array.from({ length: 4096 }, () => request)));
  let written = 0;
  /** Writes the burst over and over, from where the kernel stopped taking it, so frames stay whole. */
  const pump = (socket: Socket<{ at: number }>) => {
    for (;;) {
      const n = socket.write(burst, socket.data.at, burst.length - socket.data.at);
      if (n <= 0) return;
      written += n;
      socket.data.at = (socket.data.at + n) % burst.length;
      if (socket.data.at !== 0) return;
    }
  };
  const greedy: Socket<{ at: number }>[] = await Promise.all(
    Array.from({ length: READERS }, () =>
      Bun.connect({
        hostname: "127.0.0.1",
        port: target.port,
        data: { at: 0 },
        socket: {
          open(socket) {
            // Never read: the answers pile up in the kernel, then in the server if it lets them.
            socket.pause();
            pump(socket);
          },
          drain: pump,
          data() {},
        },
      }),
    ),
  );
  const withThem = await paced(s.durationMs * (s.quick ? 2 : 4));
  const peakOpen = target.peakRss();
  const rssOpen = target.rss();
  for (const socket of greedy) socket.terminate();
  // After they closed: the server must not go on answering their requests into the void, nor keep their memory.
  const after = await paced(s.quick ? s.durationMs : 20_000);
  const peakAfter = target.peakRss();
  const rssAfter = target.rss();
  await healthy.close();
  const p99 = (l: number[]) => l[Math.floor(l.length * 0.99)] ?? 0;
  const peakOver = Math.max(peakOpen, peakAfter) - baseline;
  s.log(
    `slow readers: ${store}, ${op}s: peak ${mib(peakOver)} MiB over baseline; ` +
      `healthy p99 ${round(p99(withThem), 2)} ms with them, ${round(p99(alone), 2)} ms alone`,
  );
  return {
    store,
    "their requests": `${op}s`,
    "non-reading connections": READERS,
    "request bytes they sent": written,
    "baseline RSS MiB": mib(baseline),
    "RSS while open MiB": mib(rssOpen),
    "RSS after close MiB": mib(rssAfter),
    "peak over baseline MiB": mib(peakOver),
    "healthy p99 alone ms": round(p99(alone), 2),
    "healthy p99 with them ms": round(p99(withThem), 2),
    "healthy max with them ms": round(withThem.at(-1) ?? 0, 2),
    "healthy p99 after ms": round(p99(after), 2),
    "healthy sets": alone.length + withThem.length + after.length,
  };
}
