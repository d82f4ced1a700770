import type { Driver, DriverConnection } from "./drivers.js";

/** One load run's settings. */
export interface LoadSpec {
  driver: Driver;
  port: number;
  connections: number;
  /** Requests each connection keeps outstanding. */
  depth: number;
  op: "get" | "set";
  durationMs: number;
  /** Distinct keys cycled through. */
  keyspace: number;
  valueBytes: number;
}

/** What one run measured. */
export interface LoadResult {
  ops: number;
  /** Requests issued; with a fresh keyspace the first `issued` keys were touched. */
  issued: number;
  errors: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  connectMs: number;
}

/** Opens `n` connections, at most `parallel` connects at a time so the listen backlog never overflows. */
export async function connectMany(
  driver: Driver,
  port: number,
  n: number,
  parallel = 256,
): Promise<DriverConnection[]> {
  const conns: DriverConnection[] = [];
  for (let i = 0; i < n; i += parallel) {
    const batch = await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, () => driver.connect(port)));
    conns.push(...batch);
  }
  return conns;
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

const enc = new TextEncoder();

/**
 * Closed-loop load: every connection keeps `depth` requests outstanding for
 * `durationMs`, then the run waits for what is in flight. Latency is measured
 * per request, from issue to answer.
 */
export async function runLoad(spec: LoadSpec, existing?: DriverConnection[]): Promise<LoadResult> {
  const keys = Array.from({ length: spec.keyspace }, (_, i) => enc.encode(`key:${i}`));
  const value = new Uint8Array(spec.valueBytes).fill(0x61);
  const t0 = performance.now();
  const conns = existing ?? (await connectMany(spec.driver, spec.port, spec.connections));
  const connectMs = performance.now() - t0;

  const latencies: number[] = [];
  let ops = 0;
  let errors = 0;
  let stop = false;
  let cursor = 0;
  const loop = async (c: DriverConnection) => {
    while (!stop) {
      const key = keys[cursor++ % keys.length] as Uint8Array;
      const start = performance.now();
      try {
        await (spec.op === "set" ? c.set(key, value) : c.get(key));
        ops++;
        latencies.push(performance.now() - start);
      } catch {
        errors++;
      }
    }
  };
  const started = performance.now();
  const timer = setTimeout(() => {
    stop = true;
  }, spec.durationMs);
  await Promise.all(conns.flatMap((c) => Array.from({ length: spec.depth }, () => loop(c))));
  clearTimeout(timer);
  const elapsed = (performance.now() - started) / 1000;
  if (!existing) await Promise.all(conns.map((c) => c.close().catch(() => {})));
  const sorted = Float64Array.from(latencies).sort();
  return {
    ops,
    issued: cursor,
    errors,
    opsPerSec: ops / elapsed,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    p999Ms: percentile(sorted, 0.999),
    connectMs,
  };
}
