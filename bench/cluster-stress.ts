import { KvClient } from "../client/kv-client.js";
import { Cluster } from "../src/cluster/cluster.js";
import { silentLogger } from "../src/log.js";
import { ErrorCode, KvError } from "../src/wire/errors.js";
import { checkHistory, type Op } from "./linearizability.js";
import type { Row } from "./scenarios.js";

/** Settings of a stress run. */
export interface StressSettings {
  /** Operations to run through the load balancer (the final reads come on top). */
  readonly ops: number;
  readonly clients: number;
  readonly keys: number;
  readonly nodes: number;
  /** Working directory for the cluster. */
  readonly dir: string;
  /** Extra flags for every node (a test gives each node a store of its own, to see the check fail). */
  readonly nodeArgs?: readonly string[];
  /** A DynamoDB Local to share (a quick run's); absent: the cluster starts its own. */
  readonly dynamodb?: { readonly endpoint: string };
  readonly log: (line: string) => void;
}

/** What happened in a run. */
export interface StressResult {
  readonly ops: number;
  readonly seconds: number;
  /** One row per second: throughput and latency, and the membership event of that second. */
  readonly timeline: Row[];
  readonly events: { t: number; what: string }[];
  /** Failed requests on connections of the node killed with SIGKILL, and anywhere else. */
  readonly errorsOnKilled: number;
  readonly errorsElsewhere: number;
  /** Examples of the errors elsewhere, for the report. */
  readonly errorSamples: string[];
  readonly conflicts: number;
  readonly verdict: ReturnType<typeof checkHistory>;
  /** Reads of every key through every node left, after the run: part of the checked history. */
  readonly finalReads: number;
}

/**
 * The cluster stress test: a mixed workload (gets, sets of values unique per
 * write, read-modify-writes with set-if-version) from many clients through
 * HAProxy, while a node is removed gracefully (at 25% of the operations),
 * one is added (50%), and one is killed with SIGKILL (75%; HAProxy stops
 * routing new connections to it a moment before, so that the connections
 * the crash hits are known exactly and its errors are counted apart). Every operation
 * is recorded with its call and return times; then every key is read
 * through every remaining node, and the whole history goes through the
 * linearizability checker.
 */
export async function clusterStress(s: StressSettings): Promise<StressResult> {
  await using cluster = await Cluster.start({
    nodes: s.nodes,
    dir: s.dir,
    nodeArgs: s.nodeArgs,
    log: silentLogger,
    ...(s.dynamodb === undefined ? {} : { dynamodb: s.dynamodb }),
  });
  const history: Op[] = [];
  const latencies: { at: number; ms: number }[] = [];
  const events: { t: number; what: string }[] = [];
  const failures: { port: number | undefined; at: number; code: string; message: string }[] = [];
  let conflicts = 0;
  let issued = 0;
  let seq = 0;
  const t0 = performance.now();
  const clients = await Promise.all(
    Array.from({ length: s.clients }, () =>
      KvClient.connect({ reconnect: true, port: cluster.port, requestTimeoutMs: 20_000, reconnectTimeoutMs: 20_000 }),
    ),
  );
  const key = () => `k${Math.floor(Math.random() * s.keys)}`;

  /** Runs one request, recording it; resolves what the op observed, or undefined if it failed. */
  const timed = async <T>(
    client: KvClient,
    record: (call: number, ret: number, result: T | undefined, failed: unknown) => void,
    work: () => Promise<T>,
  ): Promise<T | undefined> => {
    const call = performance.now();
    try {
      const result = await work();
      const ret = performance.now();
      latencies.push({ at: ret - t0, ms: ret - call });
      record(call, ret, result, undefined);
      return result;
    } catch (err) {
      const code = err instanceof KvError ? err.code : "unknown";
      if (code === ErrorCode.Conflict) {
        conflicts++;
      } else {
        failures.push({ port: client.localPort, at: performance.now() - t0, code, message: (err as Error).message });
      }
      record(call, Number.POSITIVE_INFINITY, undefined, err);
      return undefined;
    }
  };
  const dec = new TextDecoder();
  /**
   * Records a set: a conflict wrote nothing and is left out; any other
   * failure may still have been applied, so it returns at infinity.
   */
  const recordSet = (key: string, value: string) => (call: number, ret: number, _result: unknown, failed: unknown) => {
    if (failed instanceof KvError && failed.code === ErrorCode.Conflict) return;
    history.push({ key, kind: "set", value, call, ret: failed === undefined ? ret : Number.POSITIVE_INFINITY });
  };

  const worker = async (client: KvClient, id: number) => {
    while (issued < s.ops) {
      issued++;
      const k = key();
      const r = Math.random();
      if (r < 0.5) {
        await timed(
          client,
          (call, ret, value, failed) => {
            // A failed read observed nothing.
            if (failed === undefined) history.push({ key: k, kind: "get", value, call, ret });
          },
          async () => {
            const v = await client.get(k);
            return v === undefined ? undefined : dec.decode(v);
          },
        );
      } else if (r < 0.85) {
        const value = `${id}:${seq++}`;
        await timed(client, recordSet(k, value), () => client.set(k, value));
      } else {
        // Read-modify-write: the read is a get; the write happened only if it did not conflict.
        const read = await timed(
          client,
          (call, ret, found, failed) => {
            if (failed === undefined) history.push({ key: k, kind: "get", value: found?.value, call, ret });
          },
          async () => {
            const found = await client.getVersioned(k);
            return found === undefined ? undefined : { value: dec.decode(found.value), version: found.version };
          },
        );
        if (read === undefined) continue;
        issued++;
        const value = `${id}:${seq++}`;
        await timed(client, recordSet(k, value), () => client.set(k, value, { ifVersion: read.version }));
      }
    }
  };

  // Membership changes at fixed shares of the work, while the workers run.
  let killedPorts = new Set<number>();
  const choreography = (async () => {
    const at = async (share: number) => {
      while (issued < s.ops * share) await Bun.sleep(20);
    };
    const note = (what: string) => {
      events.push({ t: (performance.now() - t0) / 1000, what });
      s.log(`cluster stress: ${what} after ${issued} operations`);
    };
    await at(0.25);
    const [first] = cluster.nodes;
    if (first !== undefined) {
      note(`remove ${first.name} (drain, graceful stop)`);
      await cluster.remove(first.name);
    }
    await at(0.5);
    const added = await cluster.add();
    note(`add ${added.name}`);
    await at(0.75);
    const victim = cluster.nodes[0];
    if (victim !== undefined) {
      // So that the connections the crash hits are exactly those listed next, none may land on it in
      // between; the node itself, and its clients, get no warning.
      await cluster.stopRouting(victim.name);
      const sessions = await cluster.sessions();
      killedPorts = new Set([...sessions].filter(([, node]) => node === victim.name).map(([port]) => port));
      note(`SIGKILL ${victim.name} (${killedPorts.size} client connections on it)`);
      await cluster.kill(victim.name);
    }
  })();

  await Promise.all([...clients.map((c, i) => worker(c, i)), choreography]);
  const seconds = (performance.now() - t0) / 1000;
  const ops = history.length;

  // Every key through every node that is left, directly, after all the writes.
  let finalReads = 0;
  for (const node of cluster.nodes) {
    await using direct = await KvClient.connect({ port: node.port });
    await Promise.all(
      Array.from({ length: s.keys }, async (_, i) => {
        const k = `k${i}`;
        const call = performance.now();
        const v = await direct.get(k);
        history.push({
          key: k,
          kind: "get",
          value: v === undefined ? undefined : dec.decode(v),
          call,
          ret: performance.now(),
        });
        finalReads++;
      }),
    );
  }
  await Promise.all(clients.map((c) => c.close().catch(() => {})));

  const onKilled = failures.filter((f) => f.port !== undefined && killedPorts.has(f.port));
  const elsewhere = failures.filter((f) => !(f.port !== undefined && killedPorts.has(f.port)));
  const verdict = checkHistory(history);
  return {
    ops,
    seconds,
    timeline: timeline(latencies, events),
    events,
    errorsOnKilled: onKilled.length,
    errorsElsewhere: elsewhere.length,
    errorSamples: [...new Set(elsewhere.map((f) => `${f.code} at ${f.at.toFixed(0)} ms: ${f.message}`))].slice(0, 5),
    conflicts,
    verdict,
    finalReads,
  };
}

/** Per-second throughput and latency percentiles, with the events of each second. */
function timeline(latencies: { at: number; ms: number }[], events: { t: number; what: string }[]): Row[] {
  const bySecond = new Map<number, number[]>();
  for (const l of latencies) {
    const second = Math.floor(l.at / 1000);
    const list = bySecond.get(second);
    if (list === undefined) bySecond.set(second, [l.ms]);
    else list.push(l.ms);
  }
  const last = Math.max(0, ...bySecond.keys());
  const rows: Row[] = [];
  for (let second = 0; second <= last; second++) {
    const ms = (bySecond.get(second) ?? []).sort((a, b) => a - b);
    const pct = (p: number) =>
      ms.length === 0 ? 0 : (ms[Math.min(ms.length - 1, Math.floor(p * ms.length))] as number);
    rows.push({
      t_s: second,
      "ops/s": ms.length,
      "p50 ms": Math.round(pct(0.5) * 100) / 100,
      "p99 ms": Math.round(pct(0.99) * 100) / 100,
      event: events
        .filter((e) => Math.floor(e.t) === second)
        .map((e) => e.what)
        .join("; "),
    });
  }
  return rows;
}
