import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type DynamoDbLocal, startDynamoDbLocal } from "../src/local/dynamodb-local.js";
import { LocalKms } from "../src/local/kms-endpoint.js";
import { authCost } from "./auth-cost.js";
import { clientRuntimes } from "./client-runtimes.js";
import { clusterStress } from "./cluster-stress.js";
import { expiry } from "./expiry.js";
import { keyringCost } from "./keyring-cost.js";
import { httpGateway, listing } from "./kv-api.js";
import { runMicro } from "./micro.js";
import { htmlReport } from "./report.js";
import { type BenchSettings, concurrency, endToEnd, frontEnd, largeValues, type Row, serverCost } from "./scenarios.js";
import { slowReaders } from "./slow-readers.js";
import { tlsCost } from "./tls-cost.js";
import { waitingRequests } from "./waiting-requests.js";

const USAGE = `Usage: bun run bench [flags]

Scenarios (select with --filter): micro, front-end, slow-readers, client-runtimes (kvs-client's pipelined gets on
Node and on Bun beside the load generator), concurrency, end-to-end, server-cost, waiting-requests (heap per request waiting
in the store, on the DynamoDB path against a stand-in that never answers), expiry (CPU per set and get
with a TTL, and of expired keys, against plain ones),
large-values, listing (list and clear 1M keys in memory, 100k on DynamoDB Local), http (wrk: gateway vs bare Bun.serve), tls (TLS and mTLS cost
on the pipelined front end, beside redis with TLS), auth (CPU per request with a token and a 20-rule access policy
against none, at server-cost's shape and on the pipelined front end), keyring (KMS calls of random reads over a table written
under many key periods, KMS data keys vs the hierarchical keyring), cluster (stress through HAProxy while nodes are removed,
added and killed, with a linearizability check; exits 1 on a violation).

  --quick              every scenario briefly (51.2-59.5 s measured on 2 cores); it shares one DynamoDB Local
                       in memory and one on disk (as local mode runs it) between scenarios
  --filter REGEX       run scenarios (and micro cases) whose name matches  [KV_BENCH_FILTER]
  --duration MS        measuring time per load step (default 2000; quick 250)  [KV_BENCH_DURATION_MS]
  --connections LIST   front-end connection counts (default 1,10,50,100,1000,10000; quick 100)  [KV_BENCH_CONNECTIONS]
  --depths LIST        front-end pipeline depths (default 1,16)  [KV_BENCH_DEPTHS]
  --value-bytes N      front-end value size (default 24)  [KV_BENCH_VALUE_BYTES]
  --held LIST          connection counts for the concurrency scenario (default 10000)  [KV_BENCH_HELD]
  --clients N          concurrent clients in end-to-end and server-cost (default 100)  [KV_BENCH_CLIENTS]
  --large LIST         value sizes in MiB for the large-values scenario (default 1,8,32; quick 1)  [KV_BENCH_LARGE_MIB]
  --cluster-ops N      operations in the cluster stress run (default 110000; quick 2000)  [KV_BENCH_CLUSTER_OPS]
  --keyring-periods N  key periods the keyring scenario's table is written under (default 1000; quick 50)
                       [KV_BENCH_KEYRING_PERIODS]
  --keyring-gets N     random gets per pass in the keyring scenario (default 100000; quick 5000)  [KV_BENCH_KEYRING_GETS]
  --keyring-mixed N    operations in its get/set mix (default 1000000; quick 20000)  [KV_BENCH_KEYRING_MIXED]
  --json FILE          write every result as JSON
  --report FILE        write an HTML report with SVG charts

Environment only: KV_BENCH_PROFILE=DIR runs each server with bun --cpu-prof-md, writing profiles to DIR.`;

const { values } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    quick: { type: "boolean" },
    filter: { type: "string" },
    duration: { type: "string" },
    connections: { type: "string" },
    depths: { type: "string" },
    "value-bytes": { type: "string" },
    held: { type: "string" },
    clients: { type: "string" },
    large: { type: "string" },
    "cluster-ops": { type: "string" },
    "keyring-periods": { type: "string" },
    "keyring-gets": { type: "string" },
    "keyring-mixed": { type: "string" },
    json: { type: "string" },
    report: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
  strict: true,
});
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

function list(flag: string | undefined, env: string, fallback: number[]): number[] {
  const raw = flag ?? process.env[env];
  if (raw === undefined) return fallback;
  const nums = raw.split(",").map((x) => Number(x.trim()));
  if (nums.some((n) => !Number.isInteger(n) || n < 1)) {
    console.error(`bad list ${JSON.stringify(raw)}: positive integers separated by commas\n\n${USAGE}`);
    process.exit(2);
  }
  return nums;
}

const quick = values.quick === true;
/** A quick run's one DynamoDB Local (see BenchSettings.sharedDynamoDbLocal), stopped at the end. */
let sharedDdb: Promise<DynamoDbLocal> | undefined;

/** The quick run's in-memory DynamoDB Local, started on first use. */
function sharedDynamoDbLocal(): Promise<DynamoDbLocal> {
  sharedDdb ??= startDynamoDbLocal();
  return sharedDdb;
}

/** A quick run's local-mode services (see BenchSettings.sharedLocalMode): DynamoDB Local on disk, the local KMS. */
interface LocalMode {
  endpoint: string;
  kmsEndpoint: string;
  stop(): Promise<void>;
}
let sharedLocal: Promise<LocalMode> | undefined;

/** DynamoDB Local on disk, as local mode starts it (WAL included), and a local KMS endpoint. */
async function startLocalMode(): Promise<LocalMode> {
  const dataDir = mkdtempSync(join(tmpdir(), "kvs-bench-local-"));
  const ddb = await startDynamoDbLocal({ dataDir });
  const kms = LocalKms.start();
  return {
    endpoint: ddb.endpoint,
    kmsEndpoint: kms.endpoint,
    async stop() {
      await kms.stop();
      await ddb.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
const durationMs = Number(values.duration ?? process.env.KV_BENCH_DURATION_MS ?? (quick ? 250 : 2000));
if (!Number.isFinite(durationMs) || durationMs <= 0) {
  console.error(`--duration must be a positive number of milliseconds\n\n${USAGE}`);
  process.exit(2);
}
const settings: BenchSettings = {
  quick,
  durationMs,
  connections: list(values.connections, "KV_BENCH_CONNECTIONS", quick ? [100] : [1, 10, 50, 100, 1000, 10000]),
  depths: list(values.depths, "KV_BENCH_DEPTHS", [1, 16]),
  heldConnections: list(values.held, "KV_BENCH_HELD", quick ? [2000] : [10000]),
  e2eClients: list(values.clients, "KV_BENCH_CLIENTS", [100])[0] as number,
  valueBytes: list(values["value-bytes"], "KV_BENCH_VALUE_BYTES", [24])[0] as number,
  largeValueMiB: list(values.large, "KV_BENCH_LARGE_MIB", quick ? [1] : [1, 8, 32]),
  log: (line) => console.error(`[${((performance.now() - start) / 1000).toFixed(1)}s] ${line}`),
  ...(quick
    ? {
        sharedDynamoDbLocal,
        // Both DynamoDB Locals start together, before the first scenario that needs one measures anything:
        // their JVMs start in about the time of one, and none starts while a load runs.
        sharedLocalMode: () => {
          sharedLocal ??= Promise.all([startLocalMode(), sharedDynamoDbLocal()]).then(([local]) => local);
          return sharedLocal;
        },
      }
    : {}),
};
const filter = new RegExp(values.filter ?? process.env.KV_BENCH_FILTER ?? ".", "i");
const start = performance.now();

const header = `bun ${Bun.version}, ${process.platform}/${process.arch}, ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB; ${quick ? "quick" : "full"} run, ${durationMs} ms per step`;
console.log(header);

const results: Record<string, Row[]> = {};

/** The cluster stress test (bench/cluster-stress.ts): its timeline, then a summary row; exits 1 on a violation. */
async function clusterScenario(ops: number): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), "kvs-stress-"));
  try {
    const dynamodb = settings.sharedDynamoDbLocal === undefined ? undefined : await settings.sharedDynamoDbLocal();
    const r = await clusterStress({
      ops,
      clients: 32,
      keys: 200,
      nodes: 3,
      dir,
      log: settings.log,
      ...(dynamodb === undefined ? {} : { dynamodb }),
    });
    const summary: Row = {
      t_s: "total",
      "ops/s": Math.round(r.ops / r.seconds),
      "p50 ms": "",
      "p99 ms": "",
      event: [
        `${r.ops} operations in ${r.seconds.toFixed(1)} s`,
        `linearizable: ${r.verdict.ok ? "yes" : `NO (${r.verdict.key}: ${r.verdict.reason})`}`,
        `errors on the killed node's connections ${r.errorsOnKilled}, elsewhere ${r.errorsElsewhere}`,
        `conflicts ${r.conflicts}, final reads through every node ${r.finalReads}`,
      ].join("; "),
    };
    for (const sample of r.errorSamples) settings.log(`cluster stress: error elsewhere: ${sample}`);
    if (!r.verdict.ok) process.exitCode = 1;
    return [...r.timeline, summary];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const scenarios: [string, () => Promise<Row[]>][] = [
  ["micro", async () => (await runMicro(/./, quick ? 100 : 1000)) as Row[]],
  ["front-end", () => frontEnd(settings)],
  ["slow-readers", () => slowReaders(settings)],
  ["client-runtimes", () => clientRuntimes(settings)],
  ["concurrency", () => concurrency(settings)],
  ["end-to-end", () => endToEnd(settings)],
  ["server-cost", () => serverCost(settings)],
  ["waiting-requests", () => waitingRequests(settings)],
  ["expiry", () => expiry(settings)],
  ["large-values", () => largeValues(settings)],
  ["listing", () => listing(settings)],
  ["http", () => httpGateway(settings)],
  ["tls", () => tlsCost(settings)],
  ["auth", () => authCost(settings)],
  [
    "keyring",
    () =>
      keyringCost({
        periods: list(values["keyring-periods"], "KV_BENCH_KEYRING_PERIODS", [quick ? 50 : 1000])[0] as number,
        perPeriod: 4,
        gets: list(values["keyring-gets"], "KV_BENCH_KEYRING_GETS", [quick ? 5000 : 100_000])[0] as number,
        mixed: list(values["keyring-mixed"], "KV_BENCH_KEYRING_MIXED", [quick ? 20_000 : 1_000_000])[0] as number,
        log: settings.log,
      }),
  ],
  [
    "cluster",
    () => clusterScenario(list(values["cluster-ops"], "KV_BENCH_CLUSTER_OPS", [quick ? 2000 : 110_000])[0] as number),
  ],
];
for (const [name, run] of scenarios) {
  if (!filter.test(name)) continue;
  settings.log(`${name}: running`);
  results[name] = await run();
  console.log(`\n${name}`);
  console.table(results[name]);
}
if (sharedDdb !== undefined) await (await sharedDdb).stop();
if (sharedLocal !== undefined) await (await sharedLocal).stop();
if (Object.keys(results).length === 0) {
  console.error(`no scenario matches ${filter}`);
  process.exit(2);
}
console.log(`\ndone in ${((performance.now() - start) / 1000).toFixed(1)} s`);
if (values.json) await Bun.write(values.json, `${JSON.stringify({ header, settings, results }, null, 2)}\n`);
if (values.report) await Bun.write(values.report, htmlReport(results, header));
