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

/** Connection settings. */
export interface KvClientOptions {
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

/** A conditional write (see {@link KvClient.set}). At most one of the two. */
export interface SetOptions extends RequestOptions {
  /** Write only if the key is at this version (from {@link KvClient.getVersioned} or an earlier conditional set). */
  ifVersion?: number;
  /** Write only if the key has no value. */
  ifAbsent?: boolean;
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
