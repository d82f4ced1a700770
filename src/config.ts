import { parseArgs } from "node:util";
import type { AuthSettings } from "./auth/authenticator.js";
import { KeyringKind } from "./crypto/keyring.js";
import { FLAGS, type FlagName, type FlagSpec } from "./flags.js";
import { LogFormat, type LogLevel } from "./log.js";
import type { TlsFiles } from "./net/tls-material.js";
import { MAX_BATCH_GET_KEYS } from "./store/batch-reader.js";
import { MAX_BATCH_WRITE_ITEMS } from "./store/batch-writer.js";
import { ErrorCode, errorMessage, KvError } from "./wire/errors.js";

/** Storage backends. */
export const StoreKind = { dynamodb: "dynamodb", memory: "memory" } as const;
export type StoreKind = (typeof StoreKind)[keyof typeof StoreKind];

/** Server configuration, after flags and environment are merged. */
export interface Config {
  host: string;
  port: number;
  store: StoreKind;
  /** DynamoDB table; with `kmsKeyId` set and no endpoints, selects AWS mode. */
  table: string | undefined;
  /** Table name bound into AADs and the KMS encryption context; defaults to `table`. */
  encryptionTable: string | undefined;
  kmsKeyId: string | undefined;
  region: string | undefined;
  dynamodbEndpoint: string | undefined;
  kmsEndpoint: string | undefined;
  dataDir: string;
  /** Largest value a set may store. */
  maxValueBytes: number;
  maxFrameBytes: number;
  /** Bytes held for clients across all connections before those reading large frames pause. */
  maxBufferedBytes: number;
  /** Frames at least this long are read as they arrive: a set's value goes to the store chunk by chunk. */
  streamFromBytes: number;
  /** JS heap in use, buffers included, past which a full collection is forced (ops/memory-governor.ts); 0: off. */
  memorySoftLimitBytes: number;
  maxConnections: number;
  idleTimeoutSeconds: number;
  /** Items per BatchWriteItem; 1 writes each value alone with PutItem. */
  writeBatch: number;
  /** Keys per BatchGetItem; 1 reads each key alone with GetItem. */
  readBatch: number;
  /** How long a partial batch waits while other batches are in flight; 0 sends at once. */
  batchWindowMs: number;
  /** Store operations accepted and unfinished before new ones wait. */
  maxPending: number;
  /** A get or set not answered by DynamoDB and KMS within this is answered internal. */
  requestTimeoutMs: number;
  /** One HTTP call to DynamoDB or one KMS attempt longer than this fails, and may be retried. */
  callTimeoutMs: number;
  /** Seconds between orphan-chunk sweeps; 0 disables them. */
  sweepIntervalSeconds: number;
  /** Data-key lifetime for encryption with `--keyring kms`; 0 disables the key cache (one KMS call per request). */
  dataKeyMaxAgeMs: number;
  /** Which keys new writes use: per-item keys from branch keys, or KMS data keys (the earlier format). */
  keyring: KeyringKind;
  /** Age at which the active branch key is replaced; 0: only on demand. */
  branchKeyRotationMs: number;
  /** How long a decrypted branch key is used before KMS is asked again. */
  branchKeyTtlMs: number;
  /** Server processes sharing the port. */
  workers: number;
  /** Bind with SO_REUSEPORT (set by --workers for its children). */
  reusePort: boolean;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** HTTP gateway port (the sibling brief's API and /v1/keys); undefined: off. */
  httpPort: number | undefined;
  /** Admin HTTP port (health, metrics); undefined: none. */
  adminPort: number | undefined;
  adminHost: string;
  /**
   * Neither `--admin-port` nor `KV_ADMIN_PORT` was given (`off` counts as
   * given): local mode then offers the client's default, 127.0.0.1:7071.
   */
  adminPortDefaulted?: boolean;
  /**
   * How long one connection or HTTP body may hold the byte budget on one
   * frame while others wait, in ms, before it is closed (default 30,000).
   * Not a flag: tests shorten it.
   */
  budgetHoldMs?: number;
  /** Seconds between `request latency` log lines (for CloudWatch metric filters); 0: none. */
  latencyLogIntervalSeconds: number;
  /** TLS for the TCP listener and the HTTP gateway; undefined: plaintext. */
  tls: TlsFiles | undefined;
  /** Who may connect and what they may do (docs/security.md); every method off by default. */
  auth: AuthSettings;
}

/** Frame bytes allowed beyond --max-value-bytes: room for a 1 KiB key and the envelope. */
export const FRAME_HEADROOM = 64 * 1024;

/** Table and key names used in local mode when none are given. */
export const LOCAL_DEFAULTS = { table: "kvs", kmsKeyId: "alias/kvs", region: "us-east-1" } as const;

function int(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw))
    throw new KvError(ErrorCode.Config, `--${name} must be a whole number, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n < min || n > max) throw new KvError(ErrorCode.Config, `--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function url(name: string, raw: string | undefined): string | undefined {
  if (raw === undefined || raw === "") return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new KvError(ErrorCode.Config, `--${name} must be a URL, got ${JSON.stringify(raw)}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new KvError(ErrorCode.Config, `--${name} must be an http(s) URL, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

/**
 * Parses flags, falling back to their env twins, then to defaults.
 * Returns `"help"` for `--help` or `-h`, `"version"` for `--version`.
 * Throws `KV_ERR_CONFIG` with a message fit
 * for the terminal on an unknown flag or a bad value.
 */
export function parseConfig(argv: string[], env: Record<string, string | undefined>): Config | "help" | "version" {
  const fromEnv = new Map<string, string>();
  try {
    return parseFlags(argv, env, fromEnv);
  } catch (err) {
    // A bad value that came from the environment is named by its variable, not by a flag nobody typed.
    const flag = err instanceof KvError ? /^--([a-z0-9-]+)\b/.exec(err.message)?.[1] : undefined;
    const assignment = flag === undefined ? undefined : fromEnv.get(flag);
    if (assignment === undefined) throw err;
    throw new KvError(ErrorCode.Config, `${assignment} (from the environment): ${(err as KvError).message}`, {
      cause: err,
    });
  }
}

function parseFlags(
  argv: string[],
  env: Record<string, string | undefined>,
  fromEnv: Map<string, string>,
): Config | "help" | "version" {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {};
  for (const [name, spec] of Object.entries(FLAGS) as [string, FlagSpec][]) {
    options[name] = spec.short ? { type: spec.type, short: spec.short } : { type: spec.type };
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new KvError(ErrorCode.Config, `${errorMessage(err)} (see --help)`);
  }
  if (values.help === true) return "help";
  if (values.version === true) return "version";
  const get = (name: FlagName): string | undefined => {
    const spec: FlagSpec = FLAGS[name];
    const v = values[name];
    if (typeof v === "string") return v;
    const envValue = spec.env ? env[spec.env] : undefined;
    if (envValue !== undefined && envValue !== "") {
      fromEnv.set(name, `${spec.env}=${envValue}`);
      return envValue;
    }
    return spec.default;
  };

  /** A boolean flag, or its env twin set to 1 or true. */
  const flag = (name: FlagName): boolean => {
    if (values[name] === true) return true;
    const spec: FlagSpec = FLAGS[name];
    const raw = spec.env ? env[spec.env] : undefined;
    if (raw === undefined || raw === "" || raw === "0" || raw === "false") return false;
    if (raw === "1" || raw === "true") {
      fromEnv.set(name, `${spec.env}=${raw}`);
      return true;
    }
    throw new KvError(ErrorCode.Config, `${spec.env} must be 1 or 0, got ${JSON.stringify(raw)}`);
  };

  const store = get("store");
  if (store !== StoreKind.dynamodb && store !== StoreKind.memory) {
    throw new KvError(ErrorCode.Config, `--store must be dynamodb or memory, got ${JSON.stringify(store)}`);
  }
  const logLevel = get("log-level");
  if (logLevel !== "error" && logLevel !== "warn" && logLevel !== "info" && logLevel !== "debug") {
    throw new KvError(
      ErrorCode.Config,
      `--log-level must be error, warn, info or debug, got ${JSON.stringify(logLevel)}`,
    );
  }
  const logFormat = get("log-format");
  if (logFormat !== LogFormat.text && logFormat !== LogFormat.json) {
    throw new KvError(ErrorCode.Config, `--log-format must be text or json, got ${JSON.stringify(logFormat)}`);
  }
  const host = get("host") as string;
  if (host === "") throw new KvError(ErrorCode.Config, "--host must not be empty");
  // A value at the limit, with its key and framing, must fit in a frame.
  const maxValueBytes = int("max-value-bytes", get("max-value-bytes") as string, 0, 0xffff_ffff - FRAME_HEADROOM);
  const frameRaw = get("max-frame-bytes");
  const maxFrameBytes =
    frameRaw === undefined ? maxValueBytes + FRAME_HEADROOM : int("max-frame-bytes", frameRaw, 16, 0xffff_ffff);
  const maxBufferedBytes = int("max-buffered-bytes", get("max-buffered-bytes") as string, 1024 * 1024, 2 ** 50);
  const streamFromBytes = int("stream-from-bytes", get("stream-from-bytes") as string, 1024, 0xffff_ffff);

  const keyring = get("keyring");
  if (keyring !== KeyringKind.hierarchical && keyring !== KeyringKind.kms) {
    throw new KvError(ErrorCode.Config, `--keyring must be hierarchical or kms, got ${JSON.stringify(keyring)}`);
  }

  const adminPortRaw = get("admin-port");
  const httpPortRaw = get("http-port") as string;
  const table = get("table") || undefined;
  const kmsKeyId = get("kms-key-id") || undefined;
  if ((table === undefined) !== (kmsKeyId === undefined)) {
    // One without the other used to fall back to local mode silently, hiding a deployment mistake.
    throw new KvError(
      ErrorCode.Config,
      `${table === undefined ? "--kms-key-id" : "--table"} was given without ${table === undefined ? "--table" : "--kms-key-id"}: ` +
        "give both (AWS mode, or your own endpoints) or neither (local mode)",
    );
  }

  const tlsCert = get("tls-cert") || undefined;
  const tlsKey = get("tls-key") || undefined;
  const tlsCa = get("tls-ca") || undefined;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new KvError(
      ErrorCode.Config,
      `${tlsCert === undefined ? "--tls-key" : "--tls-cert"} was given without ${tlsCert === undefined ? "--tls-cert" : "--tls-key"}: TLS needs both`,
    );
  }
  if (tlsCa !== undefined && tlsCert === undefined) {
    throw new KvError(
      ErrorCode.Config,
      "--tls-ca needs --tls-cert and --tls-key: mutual TLS is TLS with client certificates",
    );
  }

  const config: Config = {
    host,
    port: int("port", get("port") as string, 0, 65535),
    store,
    table,
    encryptionTable: get("encryption-table") || undefined,
    kmsKeyId,
    region: get("region") || undefined,
    dynamodbEndpoint: url("dynamodb-endpoint", get("dynamodb-endpoint")),
    kmsEndpoint: url("kms-endpoint", get("kms-endpoint")),
    dataDir: get("data-dir") as string,
    maxValueBytes,
    maxFrameBytes,
    maxBufferedBytes,
    streamFromBytes,
    memorySoftLimitBytes:
      int("memory-soft-limit-mib", get("memory-soft-limit-mib") as string, 0, 2 ** 30) * 1024 * 1024,
    maxConnections: int("max-connections", get("max-connections") as string, 1, 10_000_000),
    idleTimeoutSeconds: int("idle-timeout", get("idle-timeout") as string, 0, 86_400),
    writeBatch: int("write-batch", get("write-batch") as string, 1, MAX_BATCH_WRITE_ITEMS),
    readBatch: int("read-batch", get("read-batch") as string, 1, MAX_BATCH_GET_KEYS),
    batchWindowMs: int("batch-window-ms", get("batch-window-ms") as string, 0, 1000),
    maxPending: int("max-pending", get("max-pending") as string, 1, 10_000_000),
    requestTimeoutMs: int("request-timeout-ms", get("request-timeout-ms") as string, 1, 600_000),
    callTimeoutMs: int("call-timeout-ms", get("call-timeout-ms") as string, 1, 600_000),
    sweepIntervalSeconds: int("sweep-interval-s", get("sweep-interval-s") as string, 0, 30 * 86_400),
    dataKeyMaxAgeMs: int("data-key-max-age-ms", get("data-key-max-age-ms") as string, 0, 86_400_000),
    keyring,
    branchKeyRotationMs: int("branch-key-rotation-ms", get("branch-key-rotation-ms") as string, 0, 366 * 86_400_000),
    branchKeyTtlMs: int("branch-key-ttl-ms", get("branch-key-ttl-ms") as string, 1_000, 86_400_000),
    workers: int("workers", get("workers") as string, 1, 256),
    reusePort: values["reuse-port"] === true,
    logLevel,
    logFormat,
    httpPort: httpPortRaw === "off" ? undefined : int("http-port", httpPortRaw, 0, 65535),
    adminPort:
      adminPortRaw === undefined || adminPortRaw === "" || adminPortRaw === "off"
        ? undefined
        : int("admin-port", adminPortRaw, 0, 65535),
    adminHost: get("admin-host") || host,
    adminPortDefaulted: adminPortRaw === undefined || adminPortRaw === "",
    latencyLogIntervalSeconds: int("latency-log-interval-s", get("latency-log-interval-s") as string, 0, 86_400),
    tls:
      tlsCert === undefined || tlsKey === undefined
        ? undefined
        : { cert: tlsCert, key: tlsKey, ...(tlsCa === undefined ? {} : { ca: tlsCa }) },
    auth: authSettings(get, flag, env, get("region") || undefined),
  };
  distinctPorts(config);
  return config;
}

/** Bearer tokens given in the environment (no flag: a secret in argv is visible to every user of the host). */
const TOKENS_ENV = "KV_TOKENS";

/** The authentication flags, checked (the files are read when the server starts). */
function authSettings(
  get: (name: FlagName) => string | undefined,
  flag: (name: FlagName) => boolean,
  env: Record<string, string | undefined>,
  region: string | undefined,
): AuthSettings {
  const settings: AuthSettings = {};
  const policyFile = get("access-policy") || undefined;
  if (policyFile !== undefined) settings.policyFile = policyFile;
  const tokensFile = get("tokens-file") || undefined;
  if (tokensFile !== undefined) settings.tokensFile = tokensFile;
  const tokensText = env[TOKENS_ENV];
  if (tokensText !== undefined && tokensText !== "") settings.tokensText = tokensText;
  const serverId = get("iam-server-id") || undefined;
  const regionsRaw = get("iam-regions") || undefined;
  const endpoint = url("iam-sts-endpoint", get("iam-sts-endpoint"));
  if (serverId !== undefined) {
    if (!/^[\x21-\x7e]{1,128}$/.test(serverId)) {
      throw new KvError(ErrorCode.Config, "--iam-server-id must be 1-128 printable characters without spaces");
    }
    settings.iamServerId = serverId;
    const regions = (regionsRaw ?? region ?? LOCAL_DEFAULTS.region).split(",").map((r) => r.trim());
    for (const r of regions) {
      if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(r)) {
        throw new KvError(ErrorCode.Config, `--iam-regions: ${JSON.stringify(r)} is not an AWS region`);
      }
    }
    settings.iamRegions = regions;
    if (endpoint !== undefined) settings.iamStsEndpoints = [endpoint];
  } else if (regionsRaw !== undefined || endpoint !== undefined) {
    throw new KvError(ErrorCode.Config, "--iam-regions and --iam-sts-endpoint need --iam-server-id");
  }
  if (flag("insecure-no-auth")) settings.insecureNoAuth = true;
  return settings;
}

/**
 * Refuses two of our listeners on one port: found here, before anything
 * slow starts, rather than as a bind failure after DynamoDB Local is up.
 * Port 0 (a free one each) never clashes; the admin port clashes only on
 * the same host.
 */
function distinctPorts(config: Config): void {
  const ports: [string, number | undefined][] = [
    ["--port", config.port],
    ["--http-port", config.httpPort],
    ["--admin-port", config.adminHost === config.host ? config.adminPort : undefined],
  ];
  for (let i = 0; i < ports.length; i++) {
    for (let j = i + 1; j < ports.length; j++) {
      const [a, pa] = ports[i] as [string, number | undefined];
      const [b, pb] = ports[j] as [string, number | undefined];
      if (pa !== undefined && pa !== 0 && pa === pb) {
        throw new KvError(ErrorCode.Config, `${a} and ${b} are both ${pa}: each listener needs a port of its own`);
      }
    }
  }
}

/** Whether the config names AWS resources and no local stand-ins: the server then starts nothing locally. */
export function isAwsMode(config: Config): boolean {
  return config.table !== undefined && config.kmsKeyId !== undefined;
}
