import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { KvClient } from "../client/kv-client.js";
import { startDynamoDbLocal } from "../src/local/dynamodb-local.js";
import { LocalKms } from "../src/local/kms-endpoint.js";
import { errorMessage } from "../src/wire/errors.js";
import { CountingProxy } from "./counting-proxy.js";
import { kvsDriver } from "./drivers.js";
import { connectMany, type LoadResult, runLoad } from "./load.js";
import { httpPortOf, startEcho, startKvs, startNullDynamo, startRedis, type Target } from "./targets.js";

/** Bench settings from flags or env. */
export interface BenchSettings {
  quick: boolean;
  durationMs: number;
  connections: number[];
  depths: number[];
  heldConnections: number[];
  e2eClients: number;
  /** Value size of the front-end scenario, in bytes. */
  valueBytes: number;
  /** Value sizes, in MiB, for the large-value scenario. */
  largeValueMiB: number[];
  log: (line: string) => void;
  /**
   * The run's one in-memory DynamoDB Local, started on first use, for
   * scenarios that need a fresh table, not a fresh instance (a quick run:
   * one JVM start instead of one per scenario); absent: each starts its own.
   */
  sharedDynamoDbLocal?: () => Promise<{ endpoint: string }>;
  /**
   * The run's one disk-backed DynamoDB Local and KMS endpoint, as local mode
   * runs them, started on first use, for the scenarios that measure local
   * mode (a quick run); absent: each server starts its own, in local mode.
   */
  sharedLocalMode?: () => Promise<{ endpoint: string; kmsEndpoint: string }>;
}

/**
 * Server flags for local mode's store: DynamoDB Local on disk and the local
 * KMS. In a quick run, the run's shared ones, in a fresh table; otherwise
 * local mode itself, in `dataDir`.
 */
export async function localModeArgs(s: BenchSettings, tablePrefix: string, dataDir: string): Promise<string[]> {
  if (s.sharedLocalMode === undefined) return ["--store", "dynamodb", "--data-dir", dataDir];
  const { endpoint, kmsEndpoint } = await s.sharedLocalMode();
  return onDynamo(tablePrefix, endpoint, kmsEndpoint);
}

/** DynamoDB Local for one scenario: the run's shared one when there is one (left running), else one of its own. */
async function dynamoDbLocalFor(s: BenchSettings): Promise<{ endpoint: string } & AsyncDisposable> {
  if (s.sharedDynamoDbLocal === undefined) return startDynamoDbLocal();
  const { endpoint } = await s.sharedDynamoDbLocal();
  return { endpoint, async [Symbol.asyncDispose]() {} };
}

/** One row of a result table. */
export type Row = Record<string, string | number>;

const round = (n: number, d = 0) => Number(n.toFixed(d));

/** One row of a scenario on a DynamoDB backend: throughput, latency, backend calls and CPU per op. */
function backendRow(
  config: string,
  op: string,
  clients: number,
  r: LoadResult,
  m: { cpuMs: number; ddbCalls: number; kmsCalls: number; standInCpuMs?: number },
): Row {
  const perOp = (x: number, scale: number, digits: number) => (r.ops ? round((x / r.ops) * scale, digits) : 0);
  return {
    config,
    op,
    clients,
    "ops/s": round(r.opsPerSec),
    "p50 ms": round(r.p50Ms, 2),
    "p99 ms": round(r.p99Ms, 2),
    "server CPU µs / op": perOp(m.cpuMs, 1000, 1),
    ...(m.standInCpuMs === undefined ? {} : { "stand-in CPU µs / op": perOp(m.standInCpuMs, 1000, 1) }),
    "DynamoDB req / 1k ops": perOp(m.ddbCalls, 1000, 1),
    "KMS calls / 1M ops": perOp(m.kmsCalls, 1e6, 0),
    ops: r.ops,
    errors: r.errors,
  };
}

/** Server flags for a fresh table on the given DynamoDB and KMS endpoints. */
export function onDynamo(tablePrefix: string, dynamodbEndpoint: string, kmsEndpoint: string): string[] {
  const table = `${tablePrefix}-${randomBytes(4).toString("hex")}`;
  const endpoints = ["--dynamodb-endpoint", dynamodbEndpoint, "--kms-endpoint", kmsEndpoint];
  return ["--store", "dynamodb", "--table", table, "--kms-key-id", "alias/bench", "--log-level", "error", ...endpoints];
}

/** What one run of bench/pipeline-load.ts measured. */
interface PipelineResult {
  ops: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

const root = join(import.meta.dir, "..");

/** Runs the lean generator of bench/pipeline-load.ts in its own process against `port`; `env` carries its TLS settings. */
export async function pipelineLoad(
  protocol: "kvs" | "echo" | "redis",
  port: number,
  conns: number,
  depth: number,
  op: "set" | "get",
  durationMs: number,
  valueBytes: number,
  env: Record<string, string> = {},
): Promise<PipelineResult> {
  const proc = Bun.spawn(
    [
      process.execPath,
      "bench/pipeline-load.ts",
      protocol,
      String(port),
      String(conns),
      String(depth),
      op,
      String(durationMs),
      String(valueBytes),
    ],
    { cwd: root, stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } },
  );
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  if (code !== 0) throw new Error(`load generator failed (${code}): ${err}`);
  return JSON.parse(out.trim().split("\n").pop() as string) as PipelineResult;
}

/** What one {@link pipelinedStep} measured: the generator's figures and the server's CPU over them. */
export interface StepResult extends PipelineResult {
  opsPerSec: number;
  /** Server CPU over the step, as a percentage of one core. */
  cpuPercent: number;
  /** Server CPU per request, in µs. */
  cpuUsPerReq: number;
}

/** One pipelined load step against `target` (bench/pipeline-load.ts), with the server's CPU over it. */
export async function pipelinedStep(
  target: Target,
  protocol: "kvs" | "echo" | "redis",
  conns: number,
  depth: number,
  op: "set" | "get",
  s: BenchSettings,
  env: Record<string, string> = {},
): Promise<StepResult> {
  const cpuBefore = target.cpuMs();
  const r = await pipelineLoad(protocol, target.port, conns, depth, op, s.durationMs, s.valueBytes, env);
  const cpuMs = target.cpuMs() - cpuBefore;
  return {
    ...r,
    opsPerSec: r.ops / r.seconds,
    cpuPercent: (cpuMs / (r.seconds * 1000)) * 100,
    cpuUsPerReq: r.ops ? (cpuMs * 1000) / r.ops : 0,
  };
}

/**
 * redis-benchmark's own figure for the same load, when it is installed: the
 * check that the generator saturates. `extraArgs` adds its TLS flags.
 */
export async function redisBenchmark(
  port: number,
  conns: number,
  depth: number,
  op: "set" | "get",
  valueBytes: number,
  requests: number,
  extraArgs: string[] = [],
): Promise<number | undefined> {
  const bin = Bun.which("redis-benchmark");
  if (bin === null) return undefined;
  // As many requests as our generator made, so both runs take about as long.
  const n = Math.max(10_000, requests);
  const args = ["-p", String(port), "-P", String(depth), "-c", String(conns), "-t", op, "-d", String(valueBytes)];
  args.push(...extraArgs);
  const run = Bun.spawnSync([bin, ...args, "-n", String(n), "-r", "10000", "--csv"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const line = run.stdout
    .toString()
    .split("\n")
    .find((l) => l.startsWith(`"${op.toUpperCase()}"`));
  const rps = line === undefined ? Number.NaN : Number(line.split(",")[1]?.replaceAll('"', ""));
  return Number.isFinite(rps) ? rps : undefined;
}

/**
 * Scenario 1: the front end on the memory store, against the echo ceiling and
 * redis-server, driven by bench/pipeline-load.ts in its own process (it drives
 * redis-server at redis-benchmark's rate; the redis-benchmark row checks
 * that). Server CPU per request comes from the server's /proc/PID/stat, so the
 * comparison holds whichever side saturates.
 */
export async function frontEnd(s: BenchSettings): Promise<Row[]> {
  const rows: Row[] = [];
  const memory = ["--store", "memory", "--log-level", "error"];
  const all: [string, "kvs" | "echo" | "redis", () => Promise<Target | undefined>][] = [
    ["redis", "redis", startRedis],
    ["kvs", "kvs", () => startKvs("kvs", memory)],
    ["kvs --workers 2", "kvs", () => startKvs("kvs --workers 2", [...memory, "--workers", "2"])],
    ["echo", "echo", startEcho],
  ];
  // A quick run leaves out the second worker, the longest of the four and not a comparison with redis.
  const targets = s.quick ? all.filter(([name]) => name !== "kvs --workers 2") : all;
  const redisOps = new Map<string, number>();
  for (const [name, protocol, start] of targets) {
    const target = await start();
    if (target === undefined) {
      s.log(`front end: ${name} not installed; skipped`);
      continue;
    }
    try {
      for (const conns of s.connections) {
        for (const depth of s.depths) {
          for (const op of ["set", "get"] as const) {
            const r = await pipelinedStep(target, protocol, conns, depth, op, s);
            const opsPerSec = r.opsPerSec;
            const shape = `${conns}×${depth} ${op}`;
            if (name === "redis") redisOps.set(shape, opsPerSec);
            const reference = redisOps.get(shape);
            rows.push({
              target: name,
              op,
              conns,
              depth,
              "ops/s": round(opsPerSec),
              "p50 ms": round(r.p50Ms, 2),
              "p99 ms": round(r.p99Ms, 2),
              "server CPU %": round(r.cpuPercent),
              "server CPU µs / req": round(r.cpuUsPerReq, 2),
              "÷ redis": reference ? round(opsPerSec / reference, 2) : "",
              errors: r.errors,
            });
            s.log(`front end: ${name} ${shape}: ${round(opsPerSec)} ops/s, ${round(r.cpuUsPerReq, 2)} µs CPU/req`);
            if (name === "redis") {
              const check = await redisBenchmark(target.port, conns, depth, op, s.valueBytes, r.ops);
              if (check !== undefined) {
                rows.push({
                  target: "redis (redis-benchmark's own figure)",
                  op,
                  conns,
                  depth,
                  "ops/s": round(check),
                  "÷ redis": round(check / opsPerSec, 2),
                });
                s.log(`front end: redis-benchmark ${shape}: ${round(check)} ops/s (ours ${round(opsPerSec)})`);
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

/** Scenario 2: how many connections the server holds and serves, and its memory per connection. */
export async function concurrency(s: BenchSettings): Promise<Row[]> {
  const rows: Row[] = [];
  for (const n of s.heldConnections) {
    await using target = await startKvs("kvs", ["--store", "memory", "--log-level", "error"]);
    // Warm up the allocator and JIT so the baseline is not the cold process.
    const warm = await connectMany(kvsDriver, target.port, 50);
    await Promise.all(warm.map((c) => c.get(new TextEncoder().encode("warm"))));
    await Promise.all(warm.map((c) => c.close()));
    Bun.gc(true);
    const before = target.rss();
    const t0 = performance.now();
    let conns: Awaited<ReturnType<typeof connectMany>> = [];
    let served = 0;
    let error = "";
    try {
      conns = await connectMany(kvsDriver, target.port, n);
      const key = new TextEncoder().encode("k");
      const res = await Promise.allSettled(conns.map((c) => c.get(key)));
      served = res.filter((r) => r.status === "fulfilled").length;
    } catch (err) {
      error = errorMessage(err);
    }
    const after = target.rss();
    rows.push({
      connections: n,
      held: conns.length,
      served,
      "connect+serve s": round((performance.now() - t0) / 1000, 2),
      "RSS before MiB": round(before / 2 ** 20, 1),
      "RSS after MiB": round(after / 2 ** 20, 1),
      "KiB per conn": conns.length ? round((after - before) / conns.length / 1024, 2) : 0,
      error,
    });
    s.log(
      `concurrency: ${conns.length}/${n} held, ${served} served, ${round((after - before) / Math.max(1, conns.length) / 1024, 2)} KiB/conn`,
    );
    await Promise.all(conns.map((c) => c.close().catch(() => {})));
  }
  return rows;
}

/** Scenario 3: end to end on DynamoDB Local and the local KMS, batched and cached against the naive configuration. */
export async function endToEnd(s: BenchSettings): Promise<Row[]> {
  const rows: Row[] = [];
  await using ddb = await dynamoDbLocalFor(s);
  await using kms = LocalKms.start();
  const proxy = new CountingProxy(ddb.endpoint);
  const configs: [string, string[]][] = [
    ["batched+cached", []],
    ["KMS data keys (--keyring kms)", ["--keyring", "kms"]],
    ["naive (seed 002)", ["--write-batch", "1", "--read-batch", "1", "--keyring", "kms", "--data-key-max-age-ms", "0"]],
  ].filter(([name]) => !s.quick || !String(name).startsWith("KMS")) as [string, string[]][];
  try {
    for (const [name, extra] of configs) {
      await using target = await startKvs(name, [...onDynamo("bench", proxy.endpoint, kms.endpoint), ...extra]);
      const pool = await connectMany(kvsDriver, target.port, s.e2eClients);
      // Warm the server's JIT; the first configuration also warms DynamoDB Local's, which runs far slower
      // in its first seconds, so the first configuration would otherwise be measured against a cold backend.
      const warmMs =
        name === configs[0]?.[0] ? Math.max(s.quick ? 1_000 : 6_000, s.durationMs) : Math.min(500, s.durationMs);
      for (const op of ["set", "get"] as const) {
        const warm = { driver: kvsDriver, port: target.port, connections: s.e2eClients, depth: 1, op };
        await runLoad({ ...warm, durationMs: warmMs, keyspace: 2_000, valueBytes: 1024 }, pool);
      }
      // Gets read only keys the set phase wrote, so every get finds a value and decrypts it.
      let written = 2_000;
      for (const op of ["set", "get"] as const) {
        proxy.reset();
        const cpuBefore = target.cpuMs();
        const kmsBefore = kms.calls("GenerateDataKey") + kms.calls("Decrypt");
        const r = await runLoad(
          {
            driver: kvsDriver,
            port: target.port,
            connections: s.e2eClients,
            depth: 1,
            op,
            durationMs: s.durationMs * 2,
            keyspace: op === "set" ? 2_000 : Math.max(1, written),
            valueBytes: 1024,
          },
          pool,
        );
        if (op === "set") written = Math.min(2_000, r.ops);
        const ddbCalls = proxy.snapshot().total;
        const cpuMs = target.cpuMs() - cpuBefore;
        const kmsCalls = kms.calls("GenerateDataKey") + kms.calls("Decrypt") - kmsBefore;
        rows.push(backendRow(name, op, s.e2eClients, r, { cpuMs, ddbCalls, kmsCalls }));
        s.log(
          `end to end: ${name} ${op}: ${round(r.opsPerSec)} ops/s, ${ddbCalls} DynamoDB requests, ${kmsCalls} KMS calls`,
        );
      }
      await Promise.all(pool.map((c) => c.close().catch(() => {})));
    }
  } finally {
    await proxy.stop();
  }
  return rows;
}

/**
 * Scenario 3b: the server's own CPU per DynamoDB-backed operation, with
 * DynamoDB Local's speed taken out. The server runs its full data path
 * (batching, envelope encryption, signing, HTTP, JSON, checksums) against
 * bench/null-dynamo.ts, an in-memory stand-in in its own process that answers
 * in microseconds, so the server runs at its own pace and its CPU time per op
 * is not inflated by idle costs while waiting on a slow backend.
 */
export async function serverCost(s: BenchSettings): Promise<Row[]> {
  const rows: Row[] = [];
  await using kms = LocalKms.start();
  const configs: [string, string[] | "memory"][] = [
    // The front end's own cost at the same shape, the yardstick of the DynamoDB path's.
    ["memory store (front end only)", "memory"],
    ["batched+cached", []],
    ["KMS data keys (--keyring kms)", ["--keyring", "kms"]],
    ["naive (seed 002)", ["--write-batch", "1", "--read-batch", "1", "--keyring", "kms", "--data-key-max-age-ms", "0"]],
  ].filter(([name]) => !s.quick || !String(name).startsWith("KMS")) as [string, string[] | "memory"][];
  const perOp = new Map<string, number>();
  for (const [name, extra] of configs) {
    await using ddb = await startNullDynamo();
    const args =
      extra === "memory"
        ? ["--store", "memory", "--log-level", "error"]
        : [...onDynamo("cost", ddb.endpoint, kms.endpoint), ...extra];
    await using target = await startKvs(name, args);
    const pool = await connectMany(kvsDriver, target.port, s.e2eClients);
    for (const op of ["set", "get"] as const) {
      const spec = { driver: kvsDriver, port: target.port, connections: s.e2eClients, depth: 1, op };
      // Warm the JIT and the key cache for as long as a step (2 s; a quick run's figures are indicative
      // only): JSC's JIT threads, whose CPU counts as the server's, compile the DynamoDB path for about 2 s.
      await runLoad({ ...spec, durationMs: s.durationMs, keyspace: 10_000, valueBytes: 1024 }, pool);
      const requestsBefore = await ddb.requests();
      const cpuBefore = target.cpuMs();
      const backendCpuBefore = ddb.cpuMs();
      const kmsBefore = kms.calls("GenerateDataKey") + kms.calls("Decrypt");
      const r = await runLoad({ ...spec, durationMs: s.durationMs * 2, keyspace: 10_000, valueBytes: 1024 }, pool);
      const cpuMs = target.cpuMs() - cpuBefore;
      const requests = (await ddb.requests()) - requestsBefore - 1;
      const kmsCalls = kms.calls("GenerateDataKey") + kms.calls("Decrypt") - kmsBefore;
      rows.push(
        backendRow(name, op, s.e2eClients, r, {
          cpuMs,
          ddbCalls: Math.max(0, requests),
          kmsCalls,
          standInCpuMs: ddb.cpuMs() - backendCpuBefore,
        }),
      );
      const us = r.ops ? (cpuMs * 1000) / r.ops : 0;
      perOp.set(`${name} ${op}`, us);
      s.log(`server cost: ${name} ${op}: ${round(r.opsPerSec)} ops/s, ${round(us, 1)} µs CPU/op`);
    }
    await Promise.all(pool.map((c) => c.close().catch(() => {})));
  }
  const memory = ((perOp.get(`${configs[0]?.[0]} set`) ?? 0) + (perOp.get(`${configs[0]?.[0]} get`) ?? 0)) / 2;
  const set = perOp.get("batched+cached set") ?? 0;
  const get = perOp.get("batched+cached get") ?? 0;
  s.log(
    `server cost: batched+cached set/get CPU ${round(set / get, 2)}×; set ${round(set / memory, 2)}× and get ${round(get / memory, 2)}× the memory store's ${round(memory, 1)} µs/request`,
  );
  return rows;
}

/** Scenario 4: large values on DynamoDB Local: MB/s for set then get, and the server's peak memory. */
export async function largeValues(s: BenchSettings): Promise<Row[]> {
  const rows: Row[] = [];
  await using ddb = await dynamoDbLocalFor(s);
  await using kms = LocalKms.start();
  for (const mib of s.largeValueMiB) {
    // At least 32 MiB each way: three rounds of 1 MiB took ~100 ms, too short to tell a change from noise.
    const rounds = s.quick ? 1 : Math.max(3, Math.ceil(32 / mib));
    // A fresh server per size, so its peak memory is this size's alone.
    await using target = await startKvs("kvs", onDynamo("bench-large", ddb.endpoint, kms.endpoint));
    const client = await KvClient.connect({ port: target.port });
    // Warm the SDK and JIT so the baseline is a running server, not a cold one.
    await client.set("warm-up", new Uint8Array(2 ** 20));
    await client.get("warm-up");
    const size = mib * 2 ** 20;
    const value = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) value[i] = i & 0xff;
    const baseline = target.peakRss();
    const setStart = performance.now();
    for (let r = 0; r < rounds; r++) await client.set(`large-${mib}-${r}`, value);
    const setSec = (performance.now() - setStart) / 1000;
    const getStart = performance.now();
    for (let r = 0; r < rounds; r++) {
      const got = await client.get(`large-${mib}-${r}`);
      if (got?.length !== size) throw new Error(`large value of ${mib} MiB came back wrong`);
    }
    const getSec = (performance.now() - getStart) / 1000;
    const peak = target.peakRss();
    const mb = (size * rounds) / 1e6;
    rows.push({
      "value MiB": mib,
      rounds,
      "set MB/s": round(mb / setSec, 1),
      "get MB/s": round(mb / getSec, 1),
      "set ms": round((setSec * 1000) / rounds),
      "get ms": round((getSec * 1000) / rounds),
      "server peak RSS before MiB": round(baseline / 2 ** 20),
      "server peak RSS MiB": round(peak / 2 ** 20),
      "(peak - before) / value": round((peak - baseline) / size, 2),
    });
    s.log(`large values: ${mib} MiB: set ${round(mb / setSec, 1)} MB/s, get ${round(mb / getSec, 1)} MB/s`);
    await client.close();
  }
  rows.push(...(await largeValueMemory(s, ddb.endpoint, kms.endpoint)));
  rows.push(await smallGetsBesideLargeTransfers(s));
  return rows;
}

/** A server on `args`, warmed with a 1 MiB set and get, and its peak RSS (VmHWM) once warm. */
async function warmServer(args: string[]): Promise<{ target: Target; baseline: number }> {
  const target = await startKvs("kvs", args);
  await using c = await KvClient.connect({ port: target.port });
  await c.set("warm-up", new Uint8Array(2 ** 20));
  await c.get("warm-up");
  return { target, baseline: target.peakRss() };
}

/**
 * Server memory per large transfer (issue targets): a fresh server for each
 * of one 64 MiB set, one 64 MiB get (over TCP, then over HTTP), and ten
 * concurrent 64 MiB sets on ten connections, each reporting its peak RSS
 * above its warm baseline.
 */
async function largeValueMemory(s: BenchSettings, ddbEndpoint: string, kmsEndpoint: string): Promise<Row[]> {
  const mib = s.quick ? 8 : 64;
  const size = mib * 2 ** 20;
  const value = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) value[i] = i & 0xff;
  const args = onDynamo("bench-large-memory", ddbEndpoint, kmsEndpoint);
  const rows: Row[] = [];
  const row = (what: string, baseline: number, peak: number, ms: number, failures: number, values: number) => {
    rows.push({
      "value MiB": mib,
      case: what,
      "MB/s": round((values * size) / 1e6 / (ms / 1000), 1),
      "server peak RSS before MiB": round(baseline / 2 ** 20),
      "server peak RSS MiB": round(peak / 2 ** 20),
      "peak - before MiB": round((peak - baseline) / 2 ** 20),
      failures,
    });
    s.log(`large values: ${what}: +${round((peak - baseline) / 2 ** 20)} MiB, ${failures} failed`);
  };
  {
    const { target, baseline } = await warmServer(args);
    await using _ = target;
    await using c = await KvClient.connect({ port: target.port });
    const started = performance.now();
    await c.set("one", value);
    row(`one ${mib} MiB set`, baseline, target.peakRss(), performance.now() - started, 0, 1);
  }
  {
    // The same table: the value set above is there to read.
    const { target, baseline } = await warmServer(args);
    await using _ = target;
    await using c = await KvClient.connect({ port: target.port });
    const started = performance.now();
    const got = await c.get("one");
    if (got?.length !== size) throw new Error("the 64 MiB value came back wrong");
    row(`one ${mib} MiB get`, baseline, target.peakRss(), performance.now() - started, 0, 1);
  }
  {
    // The same value through the HTTP gateway, which streams it through Bun.serve's response buffer instead.
    const { target, baseline } = await warmServer([...args, "--http-port", "0"]);
    await using _ = target;
    const httpPort = httpPortOf(target);
    const started = performance.now();
    const res = await fetch(`http://127.0.0.1:${httpPort}/v1/keys/one`);
    let got = 0;
    const reader = res.body?.getReader();
    for (let r = await reader?.read(); r && !r.done; r = await reader?.read()) got += r.value.length;
    if (res.status !== 200 || got !== size) throw new Error(`the ${mib} MiB value came back wrong over HTTP`);
    row(`one ${mib} MiB HTTP GET`, baseline, target.peakRss(), performance.now() - started, 0, 1);
  }
  {
    const { target, baseline } = await warmServer(args);
    await using _ = target;
    const n = s.quick ? 3 : 10;
    const clients = await Promise.all(Array.from({ length: n }, () => KvClient.connect({ port: target.port })));
    const started = performance.now();
    const outcomes = await Promise.allSettled(clients.map((c, i) => c.set(`concurrent-${i}`, value)));
    const ms = performance.now() - started;
    await Promise.all(clients.map((c) => c.close()));
    const failures = outcomes.filter((o) => o.status === "rejected").length;
    row(`${n} concurrent ${mib} MiB sets`, baseline, target.peakRss(), ms, failures, n - failures);
  }
  return rows;
}

/**
 * Latency of small gets on one connection of a memory-store server while
 * another connection, in a process of its own (bench/large-transfers.ts),
 * sets and gets 64 MiB values back to back: the p50, p99 and worst of the
 * small gets (issue target: p99 ≤ 10 ms). In one process with the large
 * client, the small gets would also wait for that client's own 64 MiB
 * encoding and decoding, which is not the server's doing.
 */
async function smallGetsBesideLargeTransfers(s: BenchSettings): Promise<Row> {
  const mib = s.quick ? 8 : 64;
  await using target = await startKvs("kvs memory", ["--store", "memory", "--log-level", "error"]);
  await using small = await KvClient.connect({ port: target.port });
  await small.set("small", "v".repeat(24));
  const loader = Bun.spawn([process.execPath, "bench/large-transfers.ts", String(target.port), String(mib)], {
    cwd: root,
    stdout: "pipe",
    stderr: "inherit",
  });
  let transfers = 0;
  const counting = (async () => {
    const lines = loader.stdout.pipeThrough(new TextDecoderStream());
    for await (const text of lines) transfers += text.split("transfer").length - 1;
  })();
  const latencies: number[] = [];
  let during = 0;
  try {
    while (transfers < 1) await small.get("small"); // the loader is running
    const until = performance.now() + Math.max(3000, s.durationMs * 2);
    const from = transfers;
    while (performance.now() < until || transfers - from < 2) {
      const t = performance.now();
      await small.get("small");
      latencies.push(performance.now() - t);
    }
    during = transfers - from;
  } finally {
    loader.kill();
    await loader.exited;
    await counting;
  }
  latencies.sort((a, b) => a - b);
  const at = (q: number) => round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0, 2);
  s.log(`large values: small gets beside ${mib} MiB transfers: p99 ${at(0.99)} ms over ${latencies.length}`);
  return {
    "value MiB": mib,
    case: `small gets beside ${mib} MiB set+get (memory store)`,
    "small gets": latencies.length,
    "large transfers": during,
    "p50 ms": at(0.5),
    "p99 ms": at(0.99),
    "max ms": at(1),
  };
}
