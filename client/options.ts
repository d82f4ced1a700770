import { ErrorCode, KvError } from "../src/wire/errors.js";
import { type WriteCondition, writeCondition } from "../src/wire/write-condition.js";

/** What a client is told when it connects and calls: the package's option and listing types. */

/** Keys and values: bytes, or strings sent as UTF-8. */
export type Bytes = Uint8Array | string;

/**
 * TLS settings. PEM text or bytes; read files with `readFile` (node:fs/promises) or `Bun.file(path).text()`.
 * Without `ca` the server must present a certificate the system trusts (an
 * ACM certificate on the load balancer does).
 */
export interface ClientTlsOptions {
  /** CA bundle that signed the server's certificate, replacing the system's. */
  ca?: string | Uint8Array;
  /** Client certificate chain, for servers that require one (`--tls-ca`). */
  cert?: string | Uint8Array;
  /** Private key of `cert`. */
  key?: string | Uint8Array;
  /** Name the server's certificate must carry, when it differs from `host` (an IP address, a tunnel). */
  serverName?: string;
}

/**
 * How a connection authenticates to a server that requires it: a bearer
 * token (one of the server's `--tokens-file`), or a credential made afresh
 * for each connection, such as `iamAuth(...)` of `kvs-client/iam` makes.
 * With mutual TLS the client certificate may be the identity instead.
 */
export type ClientAuth = { token: string } | { credential: () => string | Promise<string> };

/** Connection settings. */
export interface KvClientOptions {
  /** Authenticate each connection, first thing; `connect` rejects with `KV_ERR_UNAUTHENTICATED` if refused. */
  auth?: ClientAuth;
  host?: string;
  port: number;
  /** Speak TLS: `true` with the system's CAs, or with these settings. */
  tls?: boolean | ClientTlsOptions;
  /** Largest response frame accepted (default 80 MiB: a 64 MiB value plus framing). */
  maxFrameBytes?: number;
  /** Default deadline of each request, in ms (see {@link RequestOptions}); none when omitted. */
  requestTimeoutMs?: number;
  /** Deadline of connecting (and the TLS handshake), in ms; default 10,000. Past it, `KV_ERR_CONNECT`. */
  connectTimeoutMs?: number;
  /**
   * Survive the connection: when it closes (a server draining, a crash, a
   * network fault), the next call opens a new one, with full-jitter
   * exponential backoff. Default false: a closed connection fails every
   * later call. See {@link KvClient} for what is resent.
   */
  reconnect?: boolean;
  /** With `reconnect`: first wait between connection attempts, in ms (default 50); it doubles per failure, with full jitter. */
  baseDelayMs?: number;
  /** With `reconnect`: longest wait between attempts, in ms (default 2,000). */
  maxDelayMs?: number;
  /**
   * With `reconnect`: how long a call waits for a connection before it
   * rejects with `KV_ERR_CONNECTION_CLOSED`, in ms (default 10,000). The
   * next call tries again.
   */
  reconnectTimeoutMs?: number;
  /** A connection opened: the first, or (with `reconnect`) a new one. */
  onConnect?: (info: { localPort: number; reconnect: boolean }) => void;
  /** The connection closed, and why (a graceful drain's goodbye, a crash, a network fault); not called for {@link KvClient.close}. */
  onDisconnect?: (reason: KvError) => void;
  /** With `reconnect`: an attempt to connect failed; the next comes after `delayMs`. */
  onReconnecting?: (info: { attempt: number; delayMs: number; error: KvError }) => void;
  /**
   * With `reconnect`: reconnecting gave up, with the error the waiting calls
   * reject with (the `reconnectTimeoutMs` passed, or the server refused the
   * certificate or credential). The next call tries again.
   */
  onError?: (error: KvError) => void;
}

/**
 * Per-request settings. A request whose deadline passes, or whose signal
 * fires, rejects at once (`KV_ERR_TIMEOUT`, `KV_ERR_ABORTED`); it was sent,
 * so the server may still apply it, and its answer, when it comes, is
 * dropped. Later requests on the connection are unaffected.
 */
export interface RequestOptions {
  signal?: AbortSignal;
  /** Overrides the client's `requestTimeoutMs`. */
  timeoutMs?: number;
}

/** How a value is written: when it expires (see {@link KvClient.set}). */
export interface ExpiryOptions {
  /**
   * The value expires this many ms after the server applies the write, and
   * is then absent to every request. A whole number from 1 to ten years;
   * without it the value never expires, and any expiry the key had is removed.
   */
  ttlMs?: number;
}

/** A write's options: conditional with at most one of `ifVersion` and `ifAbsent`, expiring with `ttlMs`. */
export interface SetOptions extends RequestOptions, ExpiryOptions {
  /** Write only if the key is at this version (from {@link KvClient.getVersioned} or an earlier conditional set). */
  ifVersion?: number;
  /** Write only if the key has no value. */
  ifAbsent?: boolean;
}

/** A value read with its version (see {@link KvClient.getVersioned}). */
export interface VersionedValue {
  value: Uint8Array;
  version: number;
  /** When the value expires, in ms since the Unix epoch; absent: never. */
  expiresAt?: number;
}

/** What to list; see {@link KvClient.list}. */
export interface ListOptions {
  /** Only keys starting with these bytes. */
  prefix?: Bytes;
  /** Entries per page, 1-1000 (default 1000). */
  pageSize?: number;
  /** Start from this cursor, from an earlier page, instead of the beginning. */
  cursor?: Uint8Array;
}

/** One page of a listing; no `cursor` means the listing is complete. */
export interface ListPage<E> {
  entries: E[];
  cursor: Uint8Array | undefined;
}

/** A write's `ttlMs`, checked to be one the wire can carry (the server checks its range). */
export function ttlOf(options: ExpiryOptions): number | undefined {
  const { ttlMs } = options;
  if (ttlMs === undefined) return undefined;
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) {
    throw new KvError(ErrorCode.BadRequest, `ttlMs must be a whole number of ms, at least 1; got ${ttlMs}`);
  }
  return ttlMs;
}

/** The wire condition of a set's options; at most one of `ifVersion` and `ifAbsent`. */
export function conditionOf(options: SetOptions): WriteCondition | undefined {
  const condition = writeCondition(options.ifVersion, options.ifAbsent, { version: "ifVersion", absent: "ifAbsent" });
  if (typeof condition === "string") throw new KvError(ErrorCode.BadRequest, condition);
  return condition;
}
