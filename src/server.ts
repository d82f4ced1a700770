import type { AwsCredentialIdentityProvider } from "@smithy/types";
import { dynamoClient, isAwsEndpoint, kmsClient, maxSocketsFor } from "./aws-clients.js";
import { type Config, LOCAL_DEFAULTS, StoreKind } from "./config.js";
import { checkIntervalMs, HierarchicalKeyring, type HierarchyLimits } from "./crypto/hierarchical-keyring.js";
import { DataKeyCache, type KeyCacheLimits } from "./crypto/key-cache.js";
import { Keyring, KeyringKind } from "./crypto/keyring.js";
import { ensureKey } from "./crypto/kms-key.js";
import { KmsKeyring } from "./crypto/kms-keyring.js";
import { HttpGateway } from "./http/gateway.js";
import { startLocalServices } from "./local/local-services.js";
import type { Logger } from "./log.js";
import { Counter, Counters } from "./metrics.js";
import { ByteBudget } from "./net/byte-budget.js";
import { Listener } from "./net/listener.js";
import { loadTlsMaterial, type TlsMaterial } from "./net/tls-material.js";
import { AdminServer } from "./ops/admin-server.js";
import { LatencyReporter } from "./ops/latency-reporter.js";
import { type MetricSources, Metrics } from "./ops/prometheus.js";
import { Dispatcher } from "./protocol/dispatch.js";
import { DynamoBranchKeyStore } from "./store/branch-key-store.js";
import { DeadlineStore } from "./store/deadline-store.js";
import { DynamoDataClient } from "./store/dynamo-data-client.js";
import { DynamoStore, type StoreFaults } from "./store/dynamo-store.js";
import { ensureTable } from "./store/dynamo-table.js";
import { type KvStore, MAX_KEY_BYTES } from "./store/kv-store.js";
import { MemoryStore } from "./store/memory-store.js";
import { OrderedStore } from "./store/ordered-store.js";
import type { SweepResult } from "./store/orphan-sweeper.js";
import { DEFAULT_RETRY } from "./store/retry.js";
import { ErrorCode, errorMessage, KvError } from "./wire/errors.js";

/**
 * Requests read but unanswered per connection before reading pauses. It
 * bounds what one connection holds in the store's queues; ordering does not
 * depend on it (OrderedStore orders each key's reads and writes).
 */
const MAX_IN_FLIGHT = 128;
/** Unsent response bytes per connection before reading pauses. */
const HIGH_WATER_BYTES = 1024 * 1024;

/** A running server. */
export interface KvServer extends AsyncDisposable {
  readonly host: string;
  readonly port: number;
  /** Backend call and connection counters. */
  readonly counters: Counters;
  /** Human-readable description of where data goes, for the startup line. */
  readonly description: string;
  /** The DynamoDB endpoint in use, or undefined for AWS or the memory store. */
  readonly dynamodbEndpoint: string | undefined;
  /** The KMS endpoint in use, or undefined for AWS or the memory store. */
  readonly kmsEndpoint: string | undefined;
  readonly table: string | undefined;
  /** Open client connections. */
  readonly connectionCount: number;
  /** Bytes held for clients across connections, against --max-buffered-bytes. */
  readonly budget: { readonly used: number; readonly limit: number; readonly waiting: number };
  /** The HTTP gateway's port, or undefined when it is off. */
  readonly httpPort: number | undefined;
  /** The admin port (/healthz, /readyz, /metrics), or undefined when there is none. */
  readonly adminPort: number | undefined;
  /** `tls` or `mtls` when the data ports serve TLS, else undefined. */
  readonly tls: "tls" | "mtls" | undefined;
  /**
   * Re-reads the TLS files and serves new connections with them; open
   * connections keep theirs. Throws `KV_ERR_CONFIG`, keeping the current
   * certificate, if the files are bad or TLS is off.
   */
  reloadTls(): void;
  /** Runs one orphan-chunk sweep now (DynamoDB store only). */
  sweepOrphans(olderThanMs?: number): Promise<SweepResult>;
  /**
   * Makes a new branch-key version active and resolves its number (DynamoDB
   * store only; throws `KV_ERR_CONFIG` on the memory store).
   */
  rotateBranchKey(): Promise<number>;
  /** Graceful stop: stop accepting, answer in-flight requests, close, stop local services. Idempotent. */
  stop(): Promise<void>;
}

/** Extra wiring for tests and benchmarks. */
export interface ServerOverrides {
  /** Key cache limits (tests shorten them). */
  keyCache?: Partial<KeyCacheLimits>;
  /** Branch-key limits (tests shorten them). */
  branchKeys?: Partial<HierarchyLimits>;
  /** The branch-key cache's clock (tests move it past the TTL). */
  keyClock?: () => number;
  /** Wraps the backend store, e.g. to inject faults. */
  wrapStore?: (store: KvStore) => KvStore;
  /** Failure injection inside the DynamoDB store. */
  faults?: StoreFaults;
  /** Credentials for both AWS clients instead of the default chain (tests hand out short-lived ones). */
  credentials?: AwsCredentialIdentityProvider;
  /** Leave a table made without the keys index as it is (no index, no TTL), as a server older than both would (tests). */
  skipIndex?: boolean;
  /** How long a DynamoDB answer keeps /readyz ready without a probe (tests set 0). */
  readyRecentMs?: number;
  /** The clock values expire by (tests move it past an expiry); default `Date.now`. */
  clock?: () => number;
}

/** Starts a server for `config`: local services first if needed, then the listener. */
export async function startServer(config: Config, log: Logger, overrides: ServerOverrides = {}): Promise<KvServer> {
  const counters = new Counters();
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        log.warn("cleanup failed", { reason: errorMessage(err) });
      }
    }
    cleanups.length = 0;
  };

  try {
    // Before anything slow starts: a bad certificate fails in milliseconds, not after DynamoDB Local.
    let tls: TlsMaterial | undefined = config.tls === undefined ? undefined : loadTlsMaterial(config.tls);
    let store: KvStore;
    let description: string;
    let dynamodbEndpoint: string | undefined;
    let kmsEndpoint: string | undefined;
    let table: string | undefined;
    let deadlineMs: number | undefined;
    let keyCache: Keyring | undefined;
    let rotateBranchKey = async (): Promise<number> => {
      throw new KvError(ErrorCode.Config, "the memory store has no branch keys to rotate");
    };
    let batchQueues: MetricSources["batchQueues"];
    let backendReady: () => Promise<boolean> = async () => true;
    let sweep: (olderThanMs?: number) => Promise<SweepResult> = async () => ({ scanned: 0, deleted: 0 });

    if (config.store === StoreKind.memory) {
      store = new MemoryStore({ clock: overrides.clock, counters });
      description = "store=memory (not durable)";
    } else {
      table = config.table ?? LOCAL_DEFAULTS.table;
      const keyId = config.kmsKeyId ?? LOCAL_DEFAULTS.kmsKeyId;

      const local = await startLocalServices(config, log);
      cleanups.push(() => local.stop());
      dynamodbEndpoint = local.dynamodbEndpoint;
      kmsEndpoint = local.kmsEndpoint;
      const dynamoNote = local.startedDynamo ? " (embedded DynamoDB Local)" : "";
      const kmsNote = local.startedKms ? " (embedded local KMS)" : "";

      const localDynamo = !isAwsEndpoint(dynamodbEndpoint);
      const localKms = !isAwsEndpoint(kmsEndpoint);
      // Local endpoints ignore the region but the SDK insists on one; on AWS the SDK's own chain finds it.
      const region = config.region ?? (localDynamo && localKms ? LOCAL_DEFAULTS.region : undefined);
      const timeouts = { callTimeoutMs: config.callTimeoutMs, credentials: overrides.credentials, logger: log };
      const ddbOptions = { region, endpoint: dynamodbEndpoint, localCredentials: localDynamo, ...timeouts };
      const ddbClient = dynamoClient(ddbOptions);
      const kms = kmsClient({ region, endpoint: kmsEndpoint, localCredentials: localKms, ...timeouts });
      cleanups.push(async () => {
        ddbClient.destroy();
        kms.destroy();
      });

      // On AWS the table and key come from template.yaml, and the task role may not describe them.
      if (localDynamo) {
        const old = overrides.skipIndex === true;
        const outcome = await ensureTable(ddbClient, table, { addIndex: !old, enableTtl: !old });
        if (outcome === "created") log.info("created table", { table });
        if (outcome === "indexed") log.info("added the keys index to the table", { table });
      }
      const keyRef = localKms ? await ensureKey(kms, keyId, true) : keyId;

      // Restored tables keep serving data encrypted under their original name.
      const encryptionScope = config.encryptionTable ?? table;
      const kmsKeys = new KmsKeyring(kms, keyRef, encryptionScope, counters, config.requestTimeoutMs);
      const legacy = new DataKeyCache(kmsKeys, { maxAgeMs: config.dataKeyMaxAgeMs, ...overrides.keyCache });
      const branchStore = new DynamoBranchKeyStore(ddbClient, table, counters, config.requestTimeoutMs);
      const branch = new HierarchicalKeyring(
        branchStore,
        kmsKeys,
        encryptionScope,
        log,
        {
          ttlMs: config.branchKeyTtlMs,
          rotationMs: config.branchKeyRotationMs,
          checkMs: checkIntervalMs(config.branchKeyRotationMs),
          ...overrides.branchKeys,
        },
        overrides.keyClock,
      );
      cleanups.push(async () => branch.close());
      const keys = new Keyring(branch, legacy, config.keyring);
      // Fails fast on a wrong key or missing permission, and warms the cache.
      if (config.keyring === KeyringKind.hierarchical) await branch.start();
      else await legacy.encryptionKey(0, 0);
      rotateBranchKey = () => branch.rotate();
      const data = await DynamoDataClient.create(ddbClient, {
        callTimeoutMs: config.callTimeoutMs,
        onFailure: (op, throttled) => counters.outcome("dynamodb", op, throttled ? "throttle" : "error"),
      });
      keyCache = keys;
      backendReady = readinessProbe(data, table, config.callTimeoutMs, overrides.readyRecentMs ?? READY_RECENT_MS);
      const dynamo = new DynamoStore({
        client: ddbClient,
        data,
        retry: {
          ...DEFAULT_RETRY,
          maxElapsedMs: config.requestTimeoutMs,
          onRetry: (what) => counters.outcome("dynamodb", what, "retry"),
        },
        table,
        encryptionScope,
        keys,
        counters,
        log,
        clock: overrides.clock,
        faults: overrides.faults,
        maxConcurrency: maxSocketsFor(ddbOptions),
        maxPending: config.maxPending,
        writeBatchItems: config.writeBatch,
        readBatchKeys: config.readBatch,
        windowMs: config.batchWindowMs,
      });
      store = dynamo;
      batchQueues = () => dynamo.batchQueues;
      deadlineMs = config.requestTimeoutMs;
      sweep = (olderThanMs) => dynamo.sweepOrphans(olderThanMs);
      if (config.sweepIntervalSeconds > 0) {
        const every = config.sweepIntervalSeconds * 1000;
        // Jitter spreads the sweeps of many servers over the interval.
        const timer = setInterval(
          () => {
            dynamo.sweepOrphans().then(
              (r) => log.info("orphan sweep", { scanned: r.scanned, deleted: r.deleted }),
              (err) => log.warn("orphan sweep failed", { reason: errorMessage(err) }),
            );
          },
          every + Math.floor(Math.random() * every * 0.2),
        );
        timer.unref();
        cleanups.push(async () => clearInterval(timer));
      }
      description =
        `store=dynamodb table=${table} dynamodb=${dynamodbEndpoint ?? `aws:${region ?? "default region"}`}${dynamoNote} ` +
        `kms=${kmsEndpoint ?? "aws"}${kmsNote} key=${keyId}`;
    }

    if (overrides.wrapStore) store = overrides.wrapStore(store);
    const ordered = store.appliesInOrder ? store : new OrderedStore(store);
    cleanups.push(() => ordered.close());
    // Above the ordering layer, so a request answered at its deadline still holds its key's place in line.
    const bounded = deadlineMs === undefined ? ordered : new DeadlineStore(ordered, { timeoutMs: deadlineMs });

    const dispatcher = new Dispatcher(bounded, log, {
      maxValueBytes: config.maxValueBytes,
      streamFromBytes: config.streamFromBytes,
    });
    const budget = new ByteBudget(config.maxBufferedBytes, config.budgetHoldMs);
    if (config.latencyLogIntervalSeconds > 0) {
      const reporter = new LatencyReporter(dispatcher.stats, log, config.latencyLogIntervalSeconds * 1000);
      cleanups.push(async () => reporter.stop());
    }
    let draining = false;
    const listener = Listener.start(dispatcher, log, counters, {
      host: config.host,
      port: config.port,
      maxFrameBytes: config.maxFrameBytes,
      maxInFlight: MAX_IN_FLIGHT,
      highWaterBytes: HIGH_WATER_BYTES,
      budget,
      maxConnections: config.maxConnections,
      idleTimeoutSeconds: config.idleTimeoutSeconds,
      reusePort: config.reusePort,
      tls,
    });

    cleanups.push(async () => listener.stop());
    let gateway: HttpGateway | undefined;
    if (config.httpPort !== undefined) {
      const started = HttpGateway.start(
        {
          host: config.host,
          port: config.httpPort,
          reusePort: config.reusePort,
          maxKeyBytes: MAX_KEY_BYTES,
          maxValueBytes: config.maxValueBytes,
          tls,
          budget,
        },
        bounded,
        dispatcher.stats,
        log,
      );
      gateway = started;
      cleanups.push(() => started.stop());
    }
    let admin: AdminServer | undefined;
    if (config.adminPort !== undefined) {
      const cache = keyCache;
      const metrics = new Metrics({
        stats: dispatcher.stats,
        counters,
        connections: () => listener.connectionCount,
        inFlight: () => listener.inFlight,
        keyCache: cache === undefined ? undefined : () => ({ hits: cache.hits, misses: cache.misses }),
        branchKey:
          cache === undefined
            ? undefined
            : () => ({ version: cache.branch.activeVersion ?? 0, rotations: cache.branch.rotations }),
        batchQueues,
        tlsNotAfter: tls === undefined ? undefined : () => (tls as TlsMaterial).notAfter,
        budget: () => budget,
      });
      const started = AdminServer.start(
        { host: config.adminHost, port: config.adminPort, reusePort: config.reusePort },
        metrics,
        { draining: () => draining, backendReady },
        { rotateKey: () => rotateBranchKey() },
      );
      admin = started;
      // Stopped last: readiness answers "draining" for as long as the drain lasts.
      cleanups.unshift(() => started.stop());
    }

    let stopping: Promise<void> | undefined;
    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        draining = true;
        await Promise.all([listener.stop(), gateway?.stop()]);
        await cleanup();
      })();
      return stopping;
    };

    return {
      host: listener.host,
      port: listener.port,
      counters,
      description,
      dynamodbEndpoint,
      kmsEndpoint,
      table,
      get connectionCount() {
        return listener.connectionCount;
      },
      budget,
      httpPort: gateway?.port,
      adminPort: admin?.port,
      tls: tls === undefined ? undefined : tls.mutual ? "mtls" : "tls",
      reloadTls() {
        try {
          if (config.tls === undefined || tls === undefined) {
            throw new KvError(ErrorCode.Config, "TLS is off (no --tls-cert); restart with it to turn TLS on");
          }
          const next = loadTlsMaterial(config.tls);
          listener.reloadTls(next);
          gateway?.reloadTls(next);
          tls = next;
          counters.add(Counter.tlsReloads);
          log.info("TLS certificate reloaded", { subject: next.subject, not_after: next.notAfter.toISOString() });
        } catch (err) {
          counters.add(Counter.tlsReloadFailures);
          throw err;
        }
      },
      sweepOrphans: (olderThanMs) => sweep(olderThanMs),
      rotateBranchKey: () => rotateBranchKey(),
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** Recent answers count as ready for this long; after that a probe decides. */
const READY_RECENT_MS = 10_000;
/** A probe's verdict is reused this long, so scrapes and health checks cost DynamoDB at most one read per interval. */
const PROBE_REUSE_MS = 2_000;

/**
 * Readiness of the DynamoDB path: ready if DynamoDB answered any call in the
 * last {@link READY_RECENT_MS}; otherwise one shared probe (a GetItem of an
 * unused key) decides, and its verdict is reused briefly.
 */
function readinessProbe(
  data: DynamoDataClient,
  table: string,
  timeoutMs: number,
  recentMs: number,
): () => Promise<boolean> {
  let last: { at: number; ok: Promise<boolean> } | undefined;
  return () => {
    const now = Date.now();
    if (now - data.lastAnswerAt < recentMs) return Promise.resolve(true);
    if (last === undefined || now - last.at > Math.min(PROBE_REUSE_MS, recentMs)) {
      last = {
        at: now,
        ok: data.probe(table, timeoutMs).then(
          () => true,
          () => false,
        ),
      };
    }
    return last.ok;
  };
}
