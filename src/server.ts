import { Authenticator, isLoopback } from "./auth/authenticator.js";
import { type BackendOverrides, startBackend } from "./backend.js";
import type { Config } from "./config.js";
import { HttpGateway } from "./http/gateway.js";
import type { Logger } from "./log.js";
import { Counter, Counters } from "./metrics.js";
import { ByteBudget } from "./net/byte-budget.js";
import { InFlightShare } from "./net/in-flight-share.js";
import { Listener } from "./net/listener.js";
import type { Peer } from "./net/peer.js";
import { loadTlsMaterial, type TlsMaterial } from "./net/tls-material.js";
import { AdminServer } from "./ops/admin-server.js";
import { LatencyReporter } from "./ops/latency-reporter.js";
import { MemoryGovernor } from "./ops/memory-governor.js";
import { Metrics } from "./ops/prometheus.js";
import { RequestStats } from "./ops/request-stats.js";
import { Dispatcher } from "./protocol/dispatch.js";
import { Session } from "./protocol/session.js";
import { RepeatLimiter } from "./repeat-limiter.js";
import { DeadlineStore } from "./store/deadline-store.js";
import { type KvStore, MAX_KEY_BYTES } from "./store/kv-store.js";
import { OrderedStore } from "./store/ordered-store.js";
import type { SweepResult } from "./store/orphan-sweeper.js";
import { ErrorCode, errorMessage, KvError } from "./wire/errors.js";

/**
 * Requests read but unanswered per connection before reading pauses. It
 * bounds what one connection holds in the store's queues; ordering does not
 * depend on it (OrderedStore orders each key's reads and writes).
 */
const MAX_IN_FLIGHT = 128;
/** Unsent response bytes per connection before reading pauses. */
const HIGH_WATER_BYTES = 1024 * 1024;
/**
 * Requests in flight across all connections past which a connection that
 * holds {@link MIN_SHARE} takes no more (see net/in-flight-share.ts): the
 * work the event loop does between two reads of a quiet connection.
 */
const IN_FLIGHT_POOL = 1024;
/** Requests in flight a connection may always have, however busy the others. */
const MIN_SHARE = 16;
/** How often the memory governor looks at the heap: what a fast writer can add between two looks is small. */
const GOVERNOR_INTERVAL_MS = 50;

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
  /** How clients authenticate, for the startup line (`none (protected mode: …)`, `2 tokens; 3 policy rules`). */
  readonly auth: string;
  /**
   * Re-reads the access policy and token files; requests from then on are
   * held to them. Throws `KV_ERR_CONFIG`, keeping what is in force, if they
   * are bad. Does nothing without authentication.
   */
  reloadAuth(): void;
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
export interface ServerOverrides extends BackendOverrides {
  /** Wraps the backend store, e.g. to inject faults. */
  wrapStore?: (store: KvStore) => KvStore;
}

/** Resolves when `header` names a principal with admin on every key (what rotate-key needs); rejects why not. */
async function authorizeAdmin(auth: Authenticator, header: string | null): Promise<void> {
  const principal = await auth.authenticateHeader(header);
  if (principal === undefined) {
    throw new KvError(ErrorCode.Unauthenticated, "send Authorization: Bearer TOKEN (or an IAM credential)");
  }
  if (!auth.grantOf(principal).allowsAll("admin")) {
    throw new KvError(ErrorCode.Forbidden, `${principal.identity} lacks admin permission on every key (*)`);
  }
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
    const auth = Authenticator.start(config.auth, tls?.mutual === true);
    if (auth.refusal(undefined) !== undefined && !isLoopback(config.host)) {
      log.warn(
        `protected mode: no authentication is configured, so clients beyond loopback are refused on ${config.host}; ` +
          "configure --tokens-file, --iam-server-id or --tls-ca with an --access-policy, or pass --insecure-no-auth",
      );
    } else log.info("authentication", { auth: auth.describe() });
    const backend = await startBackend(config, log, overrides, counters, cleanups);
    const { description, dynamodbEndpoint, kmsEndpoint, table, keys: keyCache } = backend;
    const store = overrides.wrapStore === undefined ? backend.store : overrides.wrapStore(backend.store);
    const ordered = store.appliesInOrder ? store : new OrderedStore(store);
    cleanups.push(() => ordered.close());
    // Above the ordering layer, so a request answered at its deadline still holds its key's place in line.
    const bounded =
      backend.deadlineMs === undefined ? ordered : new DeadlineStore(ordered, { timeoutMs: backend.deadlineMs });

    const dispatcher = new Dispatcher(bounded, log, {
      maxValueBytes: config.maxValueBytes,
      streamFromBytes: config.streamFromBytes,
    });
    // Counted apart, so metrics can say which front end a request came through.
    const httpStats = new RequestStats();
    const budget = new ByteBudget(config.maxBufferedBytes, config.budgetHoldMs);
    if (config.latencyLogIntervalSeconds > 0) {
      const reporter = new LatencyReporter([dispatcher.stats, httpStats], log, config.latencyLogIntervalSeconds * 1000);
      cleanups.push(async () => reporter.stop());
    }
    const governor = new MemoryGovernor({ limitBytes: config.memorySoftLimitBytes });
    governor.start(GOVERNOR_INTERVAL_MS, (ms) => {
      counters.add(Counter.forcedCollections);
      counters.add(Counter.forcedCollectionMicros, Math.round(ms * 1000));
    });
    cleanups.push(async () => governor.stop());
    let draining = false;
    const refusals = new RepeatLimiter(log, 10_000);
    /** Each connection's handler: the dispatcher itself, unless it must authenticate or is refused (protected mode). */
    const handlerFor = (peer: Peer) => {
      const refusal = auth.refusal(peer.remoteAddress);
      if (refusal !== undefined) {
        refusals.warn("protected", "refusing a client beyond loopback: protected mode", { remote: peer.remoteAddress });
        return new Session(dispatcher, auth, peer, log, new KvError(ErrorCode.Unauthenticated, refusal));
      }
      return auth.required ? new Session(dispatcher, auth, peer, log) : dispatcher;
    };
    const listener = Listener.start(handlerFor, log, counters, {
      host: config.host,
      port: config.port,
      maxFrameBytes: config.maxFrameBytes,
      maxInFlight: MAX_IN_FLIGHT,
      highWaterBytes: HIGH_WATER_BYTES,
      budget,
      share: new InFlightShare(IN_FLIGHT_POOL, MIN_SHARE),
      maxConnections: config.maxConnections,
      idleTimeoutSeconds: config.idleTimeoutSeconds,
      reusePort: config.reusePort,
      tls,
    });

    cleanups.push(async () => listener.stop());
    const gateway =
      config.httpPort === undefined
        ? undefined
        : HttpGateway.start(
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
            httpStats,
            log,
            auth,
          );
    if (gateway !== undefined) cleanups.push(() => gateway.stop());
    const startAdmin = (adminPort: number) => {
      const cache = keyCache;
      const metrics = new Metrics({
        stats: { tcp: dispatcher.stats, http: httpStats },
        counters,
        connections: () => listener.connectionCount,
        inFlight: () => listener.inFlight,
        keyCache: cache === undefined ? undefined : () => ({ hits: cache.hits, misses: cache.misses }),
        branchKey:
          cache === undefined
            ? undefined
            : () => ({ version: cache.branch.activeVersion ?? 0, rotations: cache.branch.rotations }),
        batchQueues: backend.batchQueues,
        tlsNotAfter: tls === undefined ? undefined : () => (tls as TlsMaterial).notAfter,
        budget: () => budget,
      });
      return AdminServer.start(
        { host: config.adminHost, port: adminPort, reusePort: config.reusePort },
        metrics,
        { draining: () => draining, backendReady: () => backend.ready() },
        {
          rotateKey: () => backend.rotateBranchKey(),
          ...(auth.required ? { authorize: (header: string | null) => authorizeAdmin(auth, header) } : {}),
        },
      );
    };
    const admin = config.adminPort === undefined ? undefined : startAdmin(config.adminPort);
    // Stopped last: readiness answers "draining" for as long as the drain lasts.
    if (admin !== undefined) cleanups.unshift(() => admin.stop());

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
      auth: auth.describe(),
      reloadAuth() {
        auth.reload();
        if (auth.required) log.info("access policy and tokens reloaded", { auth: auth.describe() });
      },
      sweepOrphans: (olderThanMs) => backend.sweep(olderThanMs),
      rotateBranchKey: () => backend.rotateBranchKey(),
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
