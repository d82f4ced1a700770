/**
 * Scenario: what a request waiting in the store costs the server's memory.
 * The server runs in this process on the DynamoDB path, against the
 * stand-in holding every data-plane call, so every request read waits: in a DynamoDB call, in the batcher or for admission. Many
 * connections each pipeline a few requests of distinct keys (no two share a
 * read or collapse into one write); once the server has read them all, the
 * JS heap after a full collection, against the same heap with the
 * connections open and idle, over the requests, is what one waiting request
 * holds (its frame, promises, closures, batch entry, call body).
 */

import { heapStats } from "bun:jsc";
import { parseConfig } from "../src/config.js";
import { LocalKms } from "../src/local/kms-endpoint.js";
import { silentLogger } from "../src/log.js";
import { Counter } from "../src/metrics.js";
import { startServer } from "../src/server.js";
import { encodeGetRequest, encodeSetRequest } from "../src/wire/client-codec.js";
import { type BenchSettings, onDynamo, type Row } from "./scenarios.js";
import { startNullDynamo } from "./targets.js";

const round = (n: number, d = 0) => Number(n.toFixed(d));
const enc = new TextEncoder();

/** Connections, and requests each pipelines: under the server's 16 per connection once 1,024 are in flight. */
const CONNECTIONS = 500;
const PER_CONNECTION = 16;

/** The JS heap in use after full collections, buffers included (Bun counts them), and its objects by type. */
function settledHeap(): { bytes: number; objects: Record<string, number> } {
  Bun.gc(true);
  Bun.gc(true);
  return { bytes: process.memoryUsage().heapUsed, objects: heapStats().objectTypeCounts };
}

/**
 * The scenario: each op in a process of its own (`bun bench/waiting-requests.ts
 * OP CONNECTIONS`), so the heap is that server's alone and nothing of the
 * server outlives it in the bench's process.
 */
export async function waitingRequests(s: BenchSettings): Promise<Row[]> {
  const rows: Row[] = [];
  const connections = s.quick ? 100 : CONNECTIONS;
  for (const op of ["get", "set"] as const) {
    const proc = Bun.spawn([process.execPath, import.meta.path, op, String(connections)], {
      stdout: "pipe",
      stderr: "inherit",
    });
    const out = await new Response(proc.stdout).text();
    if ((await proc.exited) !== 0) throw new Error(`waiting-requests: the ${op} probe failed`);
    const row = JSON.parse(out.trim().split("\n").at(-1) ?? "{}") as Row;
    rows.push(row);
    s.log(
      `waiting requests: ${op}: ${row["requests waiting"]} waiting, ${row["bytes per waiting request"]} bytes and ${row["JS objects per request"]} objects each`,
    );
  }
  return rows;
}

/** One op's measurement, in this process: prints its row as JSON. */
async function probe(op: "get" | "set", connections: number): Promise<Row> {
  await using ddb = await startNullDynamo();
  await using kms = LocalKms.start();
  const args = [
    ...onDynamo("waiting", ddb.endpoint, kms.endpoint),
    ...["--port", "0", "--http-port", "off", "--admin-port", "off", "--sweep-interval-s", "0"],
    // Nothing may time out while the requests are counted.
    ...["--request-timeout-ms", "600000", "--call-timeout-ms", "600000"],
  ];
  const config = parseConfig(args, {});
  if (config === "help" || config === "version") throw new Error("unreachable");
  await using server = await startServer(config, silentLogger);
  const sockets = await Promise.all(
    Array.from({ length: connections }, () =>
      Bun.connect({ hostname: "127.0.0.1", port: server.port, socket: { data() {} } }),
    ),
  );
  const value = new Uint8Array(1024).fill(0x61);
  const frames = sockets.map((_, c) =>
    Buffer.concat(
      Array.from({ length: PER_CONNECTION }, (_, i) => {
        const key = enc.encode(`w:${c}:${i}`);
        return Buffer.concat(op === "get" ? [encodeGetRequest(key)] : encodeSetRequest(key, value));
      }),
    ),
  );
  // Started and serving (its branch key written): from here the stand-in answers nothing.
  await ddb.hold();
  const readBefore = server.counters.get(Counter.requests);
  const before = settledHeap();
  for (const [c, socket] of sockets.entries()) socket.write(frames[c] as Uint8Array);
  frames.length = 0;
  const n = connections * PER_CONNECTION;
  const deadline = performance.now() + 30_000;
  while (server.counters.get(Counter.requests) - readBefore < n) {
    if (performance.now() > deadline) throw new Error(`waiting-requests: the server read only some of ${n} requests`);
    await Bun.sleep(10);
  }
  const after = settledHeap();
  const perRequest = (after.bytes - before.bytes) / n;
  const per = (type: string) => ((after.objects[type] ?? 0) - (before.objects[type] ?? 0)) / n;
  let objects = 0;
  for (const type of Object.keys(after.objects)) objects += per(type);
  const row: Row = {
    op,
    connections,
    "requests waiting": n,
    "heap before MiB": round(before.bytes / 2 ** 20, 1),
    "heap with them MiB": round(after.bytes / 2 ** 20, 1),
    "bytes per waiting request": round(perRequest),
    "JS objects per request": round(objects, 1),
    functions: round(per("Function") + per("AsyncFunction"), 1),
    "closure scopes": round(per("JSLexicalEnvironment"), 1),
    promises: round(per("Promise"), 1),
  };
  await ddb.release();
  for (const socket of sockets) socket.end();
  return row;
}

if (import.meta.main) {
  const [op, connections] = Bun.argv.slice(2);
  if (op !== "get" && op !== "set") throw new Error("usage: bun bench/waiting-requests.ts get|set CONNECTIONS");
  console.log(JSON.stringify(await probe(op, Number(connections))));
  process.exit(0);
}
