import { makeCerts } from "../test/support/certs.js";
import { type BenchSettings, pipelinedStep, type Row, redisBenchmark } from "./scenarios.js";
import { startKvs, startRedis, type Target } from "./targets.js";

const round = (n: number, d = 0) => Number(n.toFixed(d));

/**
 * The cost of TLS on the pipelined front end (memory store): kvs plaintext,
 * kvs with TLS and with mutual TLS, beside redis-server with and without TLS
 * as the reference, driven by bench/pipeline-load.ts at each connection
 * count and depth. Certificates are EC P-256, made with openssl for the run.
 * Reports ops/s, server CPU per request, and each TLS row's ratio to the
 * same target in plaintext.
 */
export async function tlsCost(s: BenchSettings): Promise<Row[]> {
  using certs = await makeCerts();
  const memory = ["--store", "memory", "--log-level", "error"];
  const serverTls = ["--tls-cert", certs.server.cert, "--tls-key", certs.server.key];
  const trustOnly = { KV_LOAD_TLS_CA: certs.ca };
  const withCert = { ...trustOnly, KV_LOAD_TLS_CERT: certs.client, KV_LOAD_TLS_KEY: certs.clientKey };
  const redisTls = { ...certs.server, ca: certs.ca };
  const targets: [string, "kvs" | "redis", () => Promise<Target | undefined>, Record<string, string>][] = [
    ["redis", "redis", () => startRedis(), {}],
    ["redis tls", "redis", () => startRedis(redisTls), trustOnly],
    ["kvs", "kvs", () => startKvs("kvs", memory), {}],
    ["kvs tls", "kvs", () => startKvs("kvs tls", [...memory, ...serverTls]), trustOnly],
    ["kvs mtls", "kvs", () => startKvs("kvs mtls", [...memory, ...serverTls, "--tls-ca", certs.ca]), withCert],
  ];
  const plain = new Map<string, number>();
  const rows: Row[] = [];
  // The largest connection counts measure accept storms more than TLS; a few shapes are enough here, one when quick.
  const shapes = s.connections.filter((c) => c <= 1000);
  const connections = s.quick ? shapes.slice(0, 1) : shapes;
  const depths = s.quick ? s.depths.slice(-1) : s.depths;
  for (const [name, protocol, start, env] of targets) {
    const target = await start();
    if (target === undefined) {
      s.log(`tls: ${name} not installed; skipped`);
      continue;
    }
    try {
      for (const conns of connections) {
        for (const depth of depths) {
          for (const op of ["set", "get"] as const) {
            const r = await pipelinedStep(target, protocol, conns, depth, op, s, env);
            const opsPerSec = r.opsPerSec;
            const shape = `${protocol} ${conns}×${depth} ${op}`;
            if (!name.includes("tls")) plain.set(shape, opsPerSec);
            const reference = plain.get(shape);
            rows.push({
              target: name,
              op,
              conns,
              depth,
              "ops/s": round(opsPerSec),
              "× plaintext": reference === undefined ? "" : round(opsPerSec / reference, 2),
              "p99 ms": round(r.p99Ms, 2),
              "server CPU µs / req": round(r.cpuUsPerReq, 2),
              errors: r.errors,
            });
            s.log(`tls: ${name} ${conns}×${depth} ${op}: ${round(opsPerSec)} ops/s`);
            if (protocol === "redis") {
              // The saturation check: redis-benchmark's own figure for the same load and the same TLS.
              const tlsArgs = name.includes("tls") ? ["--tls", "--cacert", certs.ca] : [];
              const check = await redisBenchmark(target.port, conns, depth, op, s.valueBytes, r.ops, tlsArgs);
              if (check !== undefined) {
                rows.push({ target: `${name} (redis-benchmark)`, op, conns, depth, "ops/s": round(check) });
                s.log(`tls: redis-benchmark on ${name} ${conns}×${depth} ${op}: ${round(check)} ops/s`);
              }
            }
          }
        }
      }
    } finally {
      await target.stop();
    }
  }
  return rows;
}
