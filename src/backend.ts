import type { AwsCredentialIdentityProvider } from "@smithy/types";
import { dynamoClient, isAwsEndpoint, kmsClient, maxSocketsFor } from "./aws-clients.js";
import { type Config, LOCAL_DEFAULTS, StoreKind } from "./config.js";
import { checkIntervalMs, HierarchicalKeyring, type HierarchyLimits } from "./crypto/hierarchical-keyring.js";
import { DataKeyCache, type KeyCacheLimits } from "./crypto/key-cache.js";
import { Keyring, KeyringKind } from "./crypto/keyring.js";
import { ensureKey } from "./crypto/kms-key.js";
import { KmsKeyring } from "./crypto/kms-keyring.js";
import { startLocalServices } from "./local/local-services.js";
import type { Logger } from "./log.js";
import type { Counters } from "./metrics.js";
import type { MetricSources } from "./ops/prometheus.js";
import { DynamoBranchKeyStore } from "./store/branch-key-store.js";
import { DynamoDataClient } from "./store/dynamo-data-client.js";
import { DynamoStore, type StoreFaults } from "./store/dynamo-store.js";
import { ensureTable } from "./store/dynamo-table.js";
import type { KvStore } from "./store/kv-store.js";
import { MemoryStore } from "./store/memory-store.js";
import type { SweepResult } from "./store/orphan-sweeper.js";
import { DEFAULT_RETRY } from "./store/retry.js";
import { ErrorCode, errorMessage, KvError } from "./wire/errors.js";

/** Wiring of the backend for tests and benchmarks. */
export interface BackendOverrides {
  /** Key cache limits (tests shorten them). */
  keyCache?: Partial<KeyCacheLimits>;
  /** Branch-key limits (tests shorten them). */
  branchKeys?: Partial<HierarchyLimits>;
  /** The branch-key cache's clock (tests move it past the TTL). */
  keyClock?: () => number;
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

/** The store a config names, with what the rest of the server needs to know and do about it. */
export interface Backend {
  readonly store: KvStore;
  /** Where data goes, for the startup line. */
  readonly description: string;
  /** Endpoints in use; undefined for AWS or the memory store. */
  readonly dynamodbEndpoint: string | undefined;
  readonly kmsEndpoint: string | undefined;
  readonly table: string | undefined;
  /** Each request's deadline, where requests can wait (DynamoDB); undefined for the memory store. */
  readonly deadlineMs: number | undefined;
  /** The keyring, for metrics; undefined for the memory store. */
  readonly keys: Keyring | undefined;
  readonly batchQueues: MetricSources["batchQueues"];
  /** Whether the store can serve (/readyz). */
  ready(): Promise<boolean>;
  /** Makes a new branch-key version active; `KV_ERR_CONFIG` on the memory store. */
  rotateBranchKey(): Promise<number>;
  /** One orphan-chunk sweep; a no-op on the memory store. */
  sweep(olderThanMs?: number): Promise<SweepResult>;
}

/**
 * Starts the backend `config` names: the memory store, or the DynamoDB
 * store with its local services (started here when no endpoint is given),
 * clients, table, key and keyring. What must be stopped is pushed onto
 * `cleanups`, in start order.
 */
export async function startBackend(
  config: Config,
  log: Logger,
  overrides: BackendOverrides,
  counters: Counters,
  cleanups: (() => Promise<void>)[],
): Promise<Backend> {
  if (config.store === StoreKind.memory) {
    return {
      store: new MemoryStore({ clock: overrides.clock, counters }),
      description: "store=memory (not durable)",
      dynamodbEndpoint: undefined,
      kmsEndpoint: undefined,
      table: undefined,
      deadlineMs: undefined,
      keys: undefined,
      batchQueues: undefined,
      ready: async () => true,
      rotateBranchKey: async () => {
        throw new KvError(ErrorCode.Config, "the memory store has no branch keys to rotate");
      },
      sweep: async () => ({ scanned: 0, deleted: 0 }),
    };
  }
  const table = config.table ?? LOCAL_DEFAULTS.table;
  const keyId = config.kmsKeyId ?? LOCAL_DEFAULTS.kmsKeyId;

  const local = await startLocalServices(config, log);
  cleanups.push(() => local.stop());
  const { dynamodbEndpoint, kmsEndpoint } = local;
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
  const data = await DynamoDataClient.create(ddbClient, {
    callTimeoutMs: config.callTimeoutMs,
    onFailure: (op, throttled) => counters.outcome("dynamodb", op, throttled ? "throttle" : "error"),
  });
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
  return {
    store: dynamo,
    description:
      `store=dynamodb table=${table} dynamodb=${dynamodbEndpoint ?? `aws:${region ?? "default region"}`}${dynamoNote} ` +
      `kms=${kmsEndpoint ?? "aws"}${kmsNote} key=${keyId}`,
    dynamodbEndpoint,
    kmsEndpoint,
    table,
    deadlineMs: config.requestTimeoutMs,
    keys,
    batchQueues: () => dynamo.batchQueues,
    ready: readinessProbe(data, table, config.callTimeoutMs, overrides.readyRecentMs ?? READY_RECENT_MS),
    rotateBranchKey: () => branch.rotate(),
    sweep: (olderThanMs) => dynamo.sweepOrphans(olderThanMs),
  };
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
