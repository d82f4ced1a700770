import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvClient } from "../client/kv-client.js";
import { LocalKms } from "../src/local/kms-endpoint.js";
import { type Driver, kvsDriver } from "./drivers.js";
import { connectMany, runLoad } from "./load.js";
import { type BenchSettings, onDynamo, pipelinedStep, type Row } from "./scenarios.js";
import { startKvs, startNullDynamo } from "./targets.js";

const round = (n: number, d = 0) => Number(n.toFixed(d));

/**
 * What authentication and authorization cost per request: the same loads
 * with no authentication, and with a bearer token whose identity holds a
 * prefix grant among 20 rules (a realistic policy: every request is checked
 * against it). Two shapes:
 * - `server-cost`'s: 100 clients, one 1 KiB request each in flight, on the
 *   memory store and on the DynamoDB stand-in;
 * - the pipelined front end on the memory store, where a request costs least
 *   and a check per request shows most.
 * Configurations alternate over `rounds` (3; `KV_BENCH_AUTH_ROUNDS`), and
 * each figure is the median, so that the machine's drift does not land on
 * one side. Authentication is
 * once per connection, before the measured window.
 */
export async function authCost(s: BenchSettings): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), "kvs-auth-bench-"));
  const token = randomBytes(32).toString("hex");
  const rules: { identity: string; read: string[]; write?: string[] }[] = Array.from({ length: 19 }, (_, i) => ({
    identity: `token:other${i}`,
    read: [`team${i}/*`],
  }));
  rules.push({ identity: "token:bench", read: ["tenant/*", "key:*"], write: ["tenant/*", "key:*"] });
  const policyFile = join(dir, "policy.json");
  writeFileSync(policyFile, JSON.stringify({ rules }));
  const tokensFile = join(dir, "tokens");
  writeFileSync(tokensFile, `bench=${token}\n`);
  const authArgs = ["--access-policy", policyFile, "--tokens-file", tokensFile];
  const rounds = Number(process.env.KV_BENCH_AUTH_ROUNDS ?? (s.quick ? 1 : 3));
  await using kms = LocalKms.start();
  const figures = new Map<string, { opsPerSec: number[]; us: number[] }>();
  const note = (key: string, opsPerSec: number, us: number) => {
    const f = figures.get(key) ?? { opsPerSec: [], us: [] };
    f.opsPerSec.push(opsPerSec);
    f.us.push(us);
    figures.set(key, f);
  };
  try {
    for (let round_ = 0; round_ < rounds; round_++) {
      for (const auth of [false, true]) {
        const label = auth ? "token + 20-rule policy" : "no authentication";
        // A quick run measures server-cost's shape alone.
        for (const store of s.quick ? (["DynamoDB stand-in"] as const) : (["memory", "DynamoDB stand-in"] as const)) {
          await using ddb = store === "memory" ? undefined : await startNullDynamo();
          const base =
            ddb === undefined
              ? ["--store", "memory", "--log-level", "error"]
              : onDynamo("auth-cost", ddb.endpoint, kms.endpoint);
          await using target = await startKvs(label, [...base, ...(auth ? authArgs : [])]);
          const driver = auth ? tokenDriver(token) : kvsDriver;
          const pool = await connectMany(driver, target.port, s.e2eClients);
          for (const op of ["set", "get"] as const) {
            const spec = { driver, port: target.port, connections: s.e2eClients, depth: 1, op };
            await runLoad(
              { ...spec, durationMs: Math.min(500, s.durationMs), keyspace: 10_000, valueBytes: 1024 },
              pool,
            );
            const cpuBefore = target.cpuMs();
            const r = await runLoad({ ...spec, durationMs: s.durationMs, keyspace: 10_000, valueBytes: 1024 }, pool);
            if (r.errors > 0) throw new Error(`auth cost: ${label} ${store} ${op}: ${r.errors} errors`);
            note(
              `${store}|100×1|${op}|${label}`,
              r.opsPerSec,
              r.ops ? ((target.cpuMs() - cpuBefore) * 1000) / r.ops : 0,
            );
          }
          await Promise.all(pool.map((c) => c.close().catch(() => {})));
          if (store === "memory") {
            for (const op of ["set", "get"] as const) {
              const r = await pipelinedStep(target, "kvs", 50, 16, op, s, auth ? { KV_LOAD_TOKEN: token } : {});
              if (r.errors > 0) throw new Error(`auth cost: ${label} pipelined ${op}: ${r.errors} errors`);
              note(`${store}|50×16|${op}|${label}`, r.opsPerSec, r.cpuUsPerReq);
            }
          }
          s.log(`auth cost: round ${round_ + 1} ${label} on ${store} done`);
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const rows: Row[] = [];
  for (const [key, f] of figures) {
    const [store, shape, op, label] = key.split("|") as [string, string, string, string];
    const us = median(f.us);
    const plain = figures.get(`${store}|${shape}|${op}|no authentication`);
    const reference = plain === undefined ? us : median(plain.us);
    rows.push({
      store,
      shape,
      op,
      config: label,
      "ops/s": round(median(f.opsPerSec)),
      "server CPU µs / req": round(us, 2),
      "× no authentication": round(us / reference, 3),
      rounds,
    });
  }
  return rows;
}

/** Clients that authenticate each connection with `token` before the load starts. */
function tokenDriver(token: string): Driver {
  return {
    name: "kvs+token",
    async connect(port) {
      const c = await KvClient.connect({ port, auth: { token } });
      return { set: (k, v) => c.set(k, v), get: (k) => c.get(k), close: () => c.close() };
    },
  };
}
