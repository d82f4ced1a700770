import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvClient } from "../client/kv-client.js";
import { LocalKms } from "../src/local/kms-endpoint.js";
import type { Driver } from "./drivers.js";
import { connectMany, runLoad } from "./load.js";
import { type BenchSettings, localModeArgs, onDynamo, type Row } from "./scenarios.js";
import { startKvs, startNullDynamo } from "./targets.js";

/** The service's client, every set carrying `ttlMs`. */
function expiringDriver(ttlMs: number | undefined): Driver {
  return {
    name: ttlMs === undefined ? "kvs" : `kvs ttl ${ttlMs} ms`,
    async connect(port) {
      const c = await KvClient.connect({ port });
      return { set: (k, v) => c.set(k, v, { ttlMs }), get: (k) => c.get(k), close: () => c.close() };
    },
  };
}

const HOUR_MS = 3_600_000;

/** The cases of one round, in order: each get reads the keys the set before it left. */
const CASES = [
  { name: "set", op: "set", ttlMs: undefined },
  { name: "get", op: "get", ttlMs: undefined },
  { name: "set with TTL", op: "set", ttlMs: HOUR_MS },
  { name: "get of live TTL keys", op: "get", ttlMs: undefined },
  { name: "set with 1 ms TTL", op: "set", ttlMs: 1 },
  { name: "get of expired keys", op: "get", ttlMs: undefined },
] as const;

/**
 * Expiry's cost, on the memory store, on the DynamoDB path against the null
 * DynamoDB stand-in (as server-cost), and in local mode on DynamoDB Local;
 * the figure is the server's own CPU in each: 100 clients at depth 1 with 1 KiB values set a keyspace with no
 * TTL, read it, set it with a TTL of an hour, read it, set it with a TTL of
 * 1 ms, and read it expired. Rounds alternate the cases so that drift in
 * the machine's speed lands on all of them; each figure is the median over
 * rounds. The target: a TTL adds ≤ 5% CPU per set and per get.
 */
export async function expiry(s: BenchSettings): Promise<Row[]> {
  const rows: Row[] = [];
  await using kms = LocalKms.start();
  const rounds = s.quick ? 1 : 3;
  for (const store of ["memory", "dynamodb (stand-in)", "dynamodb-local"] as const) {
    await using ddb = await startNullDynamo();
    const dir = mkdtempSync(join(tmpdir(), "kvs-bench-expiry-"));
    const args =
      store === "memory"
        ? ["--store", "memory", "--log-level", "error"]
        : store === "dynamodb-local"
          ? [...(await localModeArgs(s, "expiry", dir)), "--log-level", "error"]
          : onDynamo("expiry", ddb.endpoint, kms.endpoint);
    // Removed after the server stops (disposal runs in reverse order).
    await using _dir = { [Symbol.asyncDispose]: async () => rmSync(dir, { recursive: true, force: true }) };
    await using target = await startKvs(`kvs ${store}`, args);
    const samples = new Map<string, { us: number[]; opsPerSec: number[]; errors: number }>();
    for (let round = 0; round < rounds; round++) {
      for (const c of CASES) {
        const driver = expiringDriver(c.ttlMs);
        const pool = await connectMany(driver, target.port, s.e2eClients);
        const spec = { driver, port: target.port, connections: s.e2eClients, depth: 1, op: c.op };
        const load = { ...spec, keyspace: 10_000, valueBytes: 1024 };
        if (round === 0 && !s.quick) await runLoad({ ...load, durationMs: 500 }, pool);
        // A 1 ms TTL has lapsed by the time the get that follows starts: the set's own run ends after it.
        // The server's own CPU: in local mode DynamoDB Local is its child, and not what is measured here.
        const cpu = target.ownCpuMs();
        const r = await runLoad({ ...load, durationMs: s.durationMs }, pool);
        const us = r.ops ? ((target.ownCpuMs() - cpu) * 1000) / r.ops : 0;
        await Promise.all(pool.map((p) => p.close().catch(() => {})));
        const sample = samples.get(c.name) ?? { us: [], opsPerSec: [], errors: 0 };
        sample.us.push(us);
        sample.opsPerSec.push(r.opsPerSec);
        sample.errors += r.errors;
        samples.set(c.name, sample);
        s.log(`expiry: ${store} ${c.name}: ${Math.round(r.opsPerSec)} ops/s, ${us.toFixed(1)} µs CPU/op`);
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
    const plain = { set: median(samples.get("set")?.us ?? [0]), get: median(samples.get("get")?.us ?? [0]) };
    for (const c of CASES) {
      const sample = samples.get(c.name);
      if (sample === undefined) continue;
      const us = median(sample.us);
      rows.push({
        store,
        case: c.name,
        "ops/s": Math.round(median(sample.opsPerSec)),
        "server µs CPU/op": +us.toFixed(2),
        [`× plain ${c.op}`]: +(us / plain[c.op]).toFixed(3),
        errors: sample.errors,
      });
    }
  }
  return rows;
}
