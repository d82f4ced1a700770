import { basename } from "node:path";
import { MAX_BATCH_GET_KEYS } from "./store/batch-reader.js";
import { MAX_BATCH_WRITE_ITEMS } from "./store/batch-writer.js";

/**
 * The server's command line: every flag, its environment twin, its default
 * and its help line, in `--help` order. config.ts parses them.
 */

/** One flag's description. */
export interface FlagSpec {
  env: string;
  type: "string" | "boolean";
  short?: string;
  help: string;
  default?: string;
  placeholder?: string;
}

/** Every flag, its env twin, and its help line. Order is the `--help` order. */
export const FLAGS = {
  host: { env: "KV_HOST", type: "string", default: "127.0.0.1", placeholder: "ADDR", help: "address to listen on" },
  port: { env: "KV_PORT", type: "string", default: "7070", placeholder: "N", help: "TCP port; 0 picks a free one" },
  store: {
    env: "KV_STORE",
    type: "string",
    default: "dynamodb",
    placeholder: "dynamodb|memory",
    help: "backend; memory is not durable (tests, benchmarks)",
  },
  table: { env: "KV_TABLE", type: "string", placeholder: "NAME", help: "DynamoDB table (local default: kvs)" },
  "encryption-table": {
    env: "KV_ENCRYPTION_TABLE",
    type: "string",
    placeholder: "NAME",
    help: "table name the encryption is bound to (default: --table); the original name when serving a restored table",
  },
  "kms-key-id": {
    env: "KV_KMS_KEY_ID",
    type: "string",
    placeholder: "ID",
    help: "KMS key id, ARN or alias (local default: alias/kvs)",
  },
  region: { env: "AWS_REGION", type: "string", placeholder: "REGION", help: "AWS region (local default: us-east-1)" },
  "dynamodb-endpoint": {
    env: "KV_DYNAMODB_ENDPOINT",
    type: "string",
    placeholder: "URL",
    help: "DynamoDB endpoint; skips the embedded DynamoDB Local",
  },
  "kms-endpoint": {
    env: "KV_KMS_ENDPOINT",
    type: "string",
    placeholder: "URL",
    help: "KMS endpoint; skips the embedded local KMS",
  },
  "data-dir": {
    env: "KV_DATA_DIR",
    type: "string",
    default: "./data",
    placeholder: "DIR",
    help: "local mode: DynamoDB Local database and local KMS keys",
  },
  "max-value-bytes": {
    env: "KV_MAX_VALUE_BYTES",
    type: "string",
    default: String(64 * 1024 * 1024),
    placeholder: "N",
    help: "largest value a set may store; larger is answered internal",
  },
  "max-frame-bytes": {
    env: "KV_MAX_FRAME_BYTES",
    type: "string",
    placeholder: "N",
    help: "largest accepted frame; larger closes the connection (default max-value-bytes + 64 KiB)",
  },
  "max-buffered-bytes": {
    env: "KV_MAX_BUFFERED_BYTES",
    type: "string",
    default: String(256 * 1024 * 1024),
    placeholder: "N",
    help: "bytes held for clients across connections (frames being read, chunks in flight, answers unsent); past it, connections reading large frames pause",
  },
  "memory-soft-limit-mib": {
    env: "KV_MEMORY_SOFT_LIMIT_MIB",
    type: "string",
    default: "0",
    placeholder: "N",
    help: "JS heap in use, buffers included, in MiB, past which the server forces a full garbage collection (at most 5% of its time), trading pauses for a lower peak; 0 (default): leave it to the runtime",
  },
  "stream-from-bytes": {
    env: "KV_STREAM_FROM_BYTES",
    type: "string",
    default: String(4 * 1024 * 1024),
    placeholder: "N",
    help: "frames at least this long are read as they arrive, a set's value going to DynamoDB chunk by chunk",
  },
  "max-connections": {
    env: "KV_MAX_CONNECTIONS",
    type: "string",
    default: "100000",
    placeholder: "N",
    help: "connections beyond this are closed on accept",
  },
  "idle-timeout": {
    env: "KV_IDLE_TIMEOUT",
    type: "string",
    default: "0",
    placeholder: "SECONDS",
    help: "close connections silent this long; 0 never",
  },
  "write-batch": {
    env: "KV_WRITE_BATCH",
    type: "string",
    default: String(MAX_BATCH_WRITE_ITEMS),
    placeholder: "1-25",
    help: "items per BatchWriteItem (chunks of large values, deletes of clears); 1 = one call each. A set is always one UpdateItem",
  },
  "read-batch": {
    env: "KV_READ_BATCH",
    type: "string",
    default: String(MAX_BATCH_GET_KEYS),
    placeholder: "1-100",
    help: "keys per BatchGetItem; 1 = one GetItem per get",
  },
  "batch-window-ms": {
    env: "KV_BATCH_WINDOW_MS",
    type: "string",
    default: "10",
    placeholder: "MS",
    help: "how long a partial batch waits while others are in flight (idle: none)",
  },
  "max-pending": {
    env: "KV_MAX_PENDING",
    type: "string",
    default: "256",
    placeholder: "N",
    help: "store operations in progress before new ones wait, taking turns between connections",
  },
  "request-timeout-ms": {
    env: "KV_REQUEST_TIMEOUT_MS",
    type: "string",
    default: "5000",
    placeholder: "MS",
    help: "deadline of a get or set, retries included; then internal (a set: +1 per 16 MiB)",
  },
  "call-timeout-ms": {
    env: "KV_CALL_TIMEOUT_MS",
    type: "string",
    default: "2000",
    placeholder: "MS",
    help: "limit on one DynamoDB or KMS call; a timed-out call is retried within the deadline",
  },
  "sweep-interval-s": {
    env: "KV_SWEEP_INTERVAL_S",
    type: "string",
    default: "3600",
    placeholder: "SECONDS",
    help: "how often to delete orphaned chunks of large values; 0 never",
  },
  "data-key-max-age-ms": {
    env: "KV_DATA_KEY_MAX_AGE_MS",
    type: "string",
    default: "300000",
    placeholder: "MS",
    help: "with --keyring kms: data-key lifetime; 0 = no key cache (a KMS call per request)",
  },
  keyring: {
    env: "KV_KEYRING",
    type: "string",
    default: "hierarchical",
    placeholder: "hierarchical|kms",
    help: "keys for new writes: per-item keys from branch keys, or KMS data keys (both always read)",
  },
  "branch-key-rotation-ms": {
    env: "KV_BRANCH_KEY_ROTATION_MS",
    type: "string",
    default: "86400000",
    placeholder: "MS",
    help: "age at which the active branch key is replaced; 0 = only on demand (client admin rotate-key)",
  },
  "branch-key-ttl-ms": {
    env: "KV_BRANCH_KEY_TTL_MS",
    type: "string",
    default: "900000",
    placeholder: "MS",
    help: "how long a decrypted branch key serves without KMS (bounds use after KMS access is revoked)",
  },
  workers: {
    env: "KV_WORKERS",
    type: "string",
    default: "1",
    placeholder: "N",
    help: "server processes sharing the port (SO_REUSEPORT)",
  },
  "reuse-port": { env: "", type: "boolean", help: "bind with SO_REUSEPORT (set by --workers for its children)" },
  "log-level": {
    env: "KV_LOG_LEVEL",
    type: "string",
    default: "info",
    placeholder: "error|warn|info|debug",
    help: "log verbosity (logs never contain values)",
  },
  "http-port": {
    env: "KV_HTTP_PORT",
    type: "string",
    default: "7080",
    placeholder: "N|off",
    help: "HTTP gateway port (/set, /get, ..., /v1/keys) on --host; 0 picks a free one; off disables it",
  },
  "admin-port": {
    env: "KV_ADMIN_PORT",
    type: "string",
    placeholder: "N|off",
    help: "admin HTTP port for /healthz, /readyz and /metrics; 0 picks a free one; off: none (default: none; local mode: 127.0.0.1:7071 when free)",
  },
  "admin-host": {
    env: "KV_ADMIN_HOST",
    type: "string",
    placeholder: "ADDR",
    help: "address of the admin port (default: --host)",
  },
  "latency-log-interval-s": {
    env: "KV_LATENCY_LOG_INTERVAL_S",
    type: "string",
    default: "0",
    placeholder: "SECONDS",
    help: "log per-op request counts and p50/p99 latency this often (CloudWatch metric filters); 0 never",
  },
  "tls-cert": {
    env: "KV_TLS_CERT",
    type: "string",
    placeholder: "FILE",
    help: "PEM certificate chain: serve TLS on the TCP port and the HTTP gateway (with --tls-key; SIGHUP re-reads)",
  },
  "tls-key": { env: "KV_TLS_KEY", type: "string", placeholder: "FILE", help: "PEM private key of --tls-cert" },
  "tls-ca": {
    env: "KV_TLS_CA",
    type: "string",
    placeholder: "FILE",
    help: "PEM CA bundle: require client certificates signed by it (mutual TLS)",
  },
  "access-policy": {
    env: "KV_ACCESS_POLICY",
    type: "string",
    placeholder: "FILE",
    help: "JSON rules: which identity may read, write or administer which keys (SIGHUP re-reads; docs/security.md)",
  },
  "tokens-file": {
    env: "KV_TOKENS_FILE",
    type: "string",
    placeholder: "FILE",
    help: "bearer tokens, one NAME=SECRET (or NAME=sha256:HEX) per line; KV_TOKENS takes them comma-separated (SIGHUP re-reads)",
  },
  "iam-server-id": {
    env: "KV_IAM_SERVER_ID",
    type: "string",
    placeholder: "ID",
    help: "accept AWS IAM credentials (signed sts:GetCallerIdentity) that sign this server id in",
  },
  "iam-regions": {
    env: "KV_IAM_REGIONS",
    type: "string",
    placeholder: "R1,R2",
    help: "regions whose STS endpoints IAM credentials may name (default: --region)",
  },
  "iam-sts-endpoint": {
    env: "KV_IAM_STS_ENDPOINT",
    type: "string",
    placeholder: "URL",
    help: "another STS endpoint IAM credentials may name (a VPC endpoint)",
  },
  "insecure-no-auth": {
    env: "KV_INSECURE_NO_AUTH",
    type: "boolean",
    help: "serve clients beyond loopback with no authentication (otherwise refused: protected mode)",
  },
  "log-format": {
    env: "KV_LOG_FORMAT",
    type: "string",
    default: "text",
    placeholder: "text|json",
    help: "log line format; json is one object per line (the container image sets json)",
  },
  help: { env: "", type: "boolean", short: "h", help: "print this help and exit (also -h)" },
  version: { env: "", type: "boolean", help: "print the version and exit" },
} as const satisfies Record<string, FlagSpec>;

/** A flag's name. */
export type FlagName = keyof typeof FLAGS;

/** How the server was started, for usage lines: the binary's name when compiled, else `bun run server`. */
export function programName(): string {
  // `bun build --compile` binaries run their code from Bun's embedded file system.
  return Bun.main.startsWith("/$bunfs/") ? basename(process.execPath) : "bun run server";
}

/** The `--help` text. */
export function helpText(): string {
  const lines = [
    `Usage: ${programName()} [flags]`,
    "",
    "Every flag can also be set by the environment variable shown.",
    "",
  ];
  for (const [name, spec] of Object.entries(FLAGS) as [string, FlagSpec][]) {
    const flag = `--${name}${spec.placeholder ? ` ${spec.placeholder}` : ""}`;
    const env = spec.env ? ` [${spec.env}]` : "";
    const def = spec.default !== undefined ? ` (default ${spec.default})` : "";
    lines.push(`  ${flag.padEnd(38)} ${spec.help}${def}${env}`);
  }
  lines.push(
    "",
    "Local mode (the default unless both --table and --kms-key-id are set): starts DynamoDB Local",
    "(Java 17+) and a loopback KMS endpoint, persisting under --data-dir. AWS mode uses the default",
    "credential chain.",
  );
  return lines.join("\n");
}
