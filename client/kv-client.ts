import { backoffDelay } from "../src/wire/backoff.js";
import { deferred } from "../src/wire/deferred.js";
import { ErrorCode, errorMessage, KvError } from "../src/wire/errors.js";
import { Connection } from "./connection.js";
import { DerivedCalls } from "./derived-calls.js";
import type {
  Bytes,
  ClientAuth,
  ExpiryOptions,
  KvClientOptions,
  ListOptions,
  ListPage,
  RequestOptions,
  SetOptions,
  VersionedValue,
} from "./options.js";
import { parseServerUrl } from "./server-url.js";

export type {
  Bytes,
  ClientAuth,
  ClientTlsOptions,
  ExpiryOptions,
  KvClientOptions,
  ListOptions,
  ListPage,
  RequestOptions,
  SetOptions,
  VersionedValue,
} from "./options.js";
export { DEFAULT_PORT, DEFAULT_TLS_PORT, parseServerUrl } from "./server-url.js";

const decoder = new TextDecoder();

function closedClient(): KvError {
  return new KvError(
    ErrorCode.ConnectionClosed,
    "the client is closed: close() was called; connect a new one to go on",
  );
}

function drained(err: unknown): boolean {
  return err instanceof KvError && err.code === ErrorCode.Drained;
}

/**
 * A client for the service. Calls may be issued without awaiting earlier
 * ones: they are pipelined on one connection, sent in the order they were
 * made, and settle in request order.
 *
 * `set` resolves when the server acknowledged a durable write and rejects
 * when it answered `internal`, with the code the server gave
 * (`KV_ERR_VALUE_TOO_LARGE`, `KV_ERR_TIMEOUT`, `KV_ERR_STORAGE`, ...) or
 * `KV_ERR_SERVER_INTERNAL` when it gave none. `get` resolves the value, or
 * `undefined` for not_found.
 *
 * With `reconnect: true` the client survives its connection: when the
 * server closes it (a node drained and removed behind a load balancer) or it
 * breaks, the next call opens a new one. It resends only what the server
 * says it never read: a server that drains answers every request it read
 * and then sends a goodbye, so requests still unanswered then were not
 * applied, and go again, in their order, on the next connection. A request
 * that was on a connection that died without a goodbye (a crash, a network
 * fault) rejects with `KV_ERR_CONNECTION_CLOSED`: it may or may not have
 * been applied, and only the caller can tell whether repeating it is safe
 * (a conditional set is). Without `reconnect`, a closed connection rejects
 * every call, the drained ones with `KV_ERR_DRAINED`.
 */
export class KvClient extends DerivedCalls implements AsyncDisposable {
  #options: KvClientOptions;
  /** The latest connection; always set once `connect` resolved. */
  #connection: Connection | undefined;
  /** Without `reconnect`, the one connection, which calls go straight to. */
  #direct: Connection | undefined;
  #connecting: Promise<Connection> | undefined;
  #closing = false;
  readonly #closed = deferred<KvError>();
  /** Calls waiting for a connection: while there are any, later calls queue behind them, so none overtakes. */
  #waiting = 0;
  /** Connections opened after the first. */
  reconnects = 0;
  /** Calls sent again because a draining server closed their connection before reading them. */
  resent = 0;

  private constructor(options: KvClientOptions) {
    super();
    this.#options = options;
  }

  /**
   * Opens a connection to `options`, or to a `kvs://` or `kvss://` URL. With
   * TLS it resolves once the handshake is done, and rejects with
   * `KV_ERR_TLS` if the server's certificate does not verify. With
   * `reconnect`, a refused connection is retried with backoff for up to
   * `reconnectTimeoutMs`, as a reconnect is.
   */
  static async connect(options: KvClientOptions | string): Promise<KvClient> {
    const client = new KvClient(typeof options === "string" ? parseServerUrl(options) : options);
    if (client.#options.reconnect === true) await client.#current();
    else {
      client.#direct = await Connection.connect(client.#options);
      client.#adopt(client.#direct);
    }
    return client;
  }

  /** The identity the server gave the current connection when it authenticated (`token:NAME`, `arn:...`, `cert:NAME`). */
  get identity(): string | undefined {
    return this.#connection?.identity;
  }

  /**
   * Authenticates the connection (as `connect` does with `auth`) and
   * resolves the identity the server gave it. Rejects with
   * `KV_ERR_UNAUTHENTICATED` and the server's reason if refused (the
   * connection keeps the identity it had), or `KV_ERR_UNAVAILABLE` when the
   * server could not check the credential now. Once accepted, connections
   * the client opens later authenticate with `auth` too.
   */
  async authenticate(auth: ClientAuth, options?: RequestOptions): Promise<string> {
    const identity = await this.#run((c) => c.authenticate(auth, options));
    this.#options = { ...this.#options, auth };
    return identity;
  }

  /**
   * The local port of the current connection, or of the last one once it
   * closed: what a load balancer sees as its source.
   */
  get localPort(): number {
    return (this.#connection as Connection).localPort;
  }

  /**
   * Settles once the client is closed for good, with the error its later
   * calls reject with: without `reconnect`, when its connection closes, for
   * whatever reason; with it, once {@link close} was called.
   */
  whenClosed(): Promise<KvError> {
    return this.#options.reconnect === true ? this.#closed.promise : (this.#connection as Connection).whenClosed();
  }

  /** Whether every call now rejects: without `reconnect`, once the connection has failed or closed; with it, once {@link close} was called. */
  get closed(): boolean {
    return this.#options.reconnect === true ? this.#closing : (this.#connection as Connection).closed;
  }

  /** Requests sent on the current connection and not yet answered. */
  get pending(): number {
    return this.#connection?.pending ?? 0;
  }

  /**
   * Stores `value` under `key` and resolves the version written, to pass
   * as `ifVersion` later without reading the key first (undefined only from
   * a server older than versions on every set). With `ifVersion` or
   * `ifAbsent` the write is conditional: it rejects with `KV_ERR_CONFLICT`,
   * having written nothing, when the condition failed. With `ttlMs` the
   * value expires (see {@link ExpiryOptions}); a TTL the server refuses
   * rejects with `KV_ERR_INTERNAL` and the server's reason.
   */
  set(key: Bytes, value: Bytes, options?: SetOptions): Promise<number | undefined> {
    return this.#direct?.set(key, value, options) ?? this.#run((c) => c.set(key, value, options));
  }

  /**
   * Stores a value of exactly `size` bytes read from `source` piece by piece
   * (a file's stream, say): neither this process nor the server holds it
   * whole. Requests issued meanwhile are sent after it, in order. A source
   * that fails or ends short leaves a frame that cannot be finished: the
   * connection is closed and the call rejects. Resolves the version written,
   * as {@link set}; `ttlMs` as there. Never sent again, as `source` may be
   * spent: if a draining server closes the connection before reading the
   * upload, this rejects with `KV_ERR_DRAINED` (nothing was written), and a
   * retry with a fresh source is safe.
   */
  setFrom(
    key: Bytes,
    size: number,
    source: AsyncIterable<Uint8Array>,
    options?: ExpiryOptions,
  ): Promise<number | undefined> {
    return this.#run((c) => c.setFrom(key, size, source, options), false);
  }

  /**
   * Hands the value of `key` to `sink` as it arrives, piece by piece, in
   * order; the connection reads no further while a promise `sink` returned
   * is pending. Resolves true, or false when the key has no value. A sink
   * that throws makes the call reject once the answer has been read. A
   * draining server never read a request it did not answer, so with
   * `reconnect` it is sent again before any piece reached `sink`.
   */
  getTo(key: Bytes, sink: (piece: Uint8Array) => void | Promise<void>): Promise<boolean> {
    return this.#direct?.getTo(key, sink) ?? this.#run((c) => c.getTo(key, sink));
  }

  /** The value of `key`, or undefined if it has none. */
  get(key: Bytes, options?: RequestOptions): Promise<Uint8Array | undefined> {
    return this.#direct?.get(key, options) ?? this.#run((c) => c.get(key, options));
  }

  /**
   * The value of `key` with its version, or undefined if it has none: the
   * version to pass as `ifVersion` for a read-modify-write without lost
   * updates, and the value's expiry if it has one.
   */
  getVersioned(key: Bytes, options?: RequestOptions): Promise<VersionedValue | undefined> {
    return this.#direct?.getVersioned(key, options) ?? this.#run((c) => c.getVersioned(key, options));
  }

  /** The value of `key` decoded as UTF-8, or undefined. */
  async getString(key: Bytes, options?: RequestOptions): Promise<string | undefined> {
    const v = await this.get(key, options);
    return v === undefined ? undefined : decoder.decode(v);
  }

  /** Removes `key`; resolves false if it had no value. */
  delete(key: Bytes, options?: RequestOptions): Promise<boolean> {
    return this.#direct?.delete(key, options) ?? this.#run((c) => c.delete(key, options));
  }

  /** Whether `key` has a value. */
  exists(key: Bytes, options?: RequestOptions): Promise<boolean> {
    return this.#direct?.exists(key, options) ?? this.#run((c) => c.exists(key, options));
  }

  /**
   * One page of a listing, for callers that page themselves (say, across
   * HTTP requests): pass the page's `cursor` back to get the next. A page may
   * be short, even empty, and still have a cursor; cursors are not tied to a
   * connection.
   */
  listPage(
    options: ListOptions & { values?: boolean } = {},
  ): Promise<ListPage<{ key: Uint8Array; value?: Uint8Array }>> {
    return this.#direct?.listPage(options) ?? this.#run((c) => c.listPage(options));
  }

  /** Removes every key; resolves how many were removed. Can take long on a large DynamoDB store. */
  clear(): Promise<number> {
    return this.#direct?.clear() ?? this.#run((c) => c.clear());
  }

  /** Closes the connection once the server answered everything sent; settles once closed. Later calls reject. */
  async close(): Promise<void> {
    this.#closing = true;
    const connection = this.#connection ?? (await this.#connecting?.catch(() => undefined));
    if (connection !== undefined && !connection.closed) await connection.close();
    this.#closed.resolve(closedClient());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Runs `call` on the current connection. With `reconnect`, a call waits
   * for a connection when there is none, and with `resend`, goes again on
   * the next one while a draining server had not read it.
   */
  #run<T>(call: (c: Connection) => Promise<T>, resend = true): Promise<T> {
    const connection = this.#connection as Connection;
    if (this.#direct !== undefined) return call(connection);
    if (this.#waiting > 0 || this.#connecting !== undefined || connection.closed || this.#closing) {
      return this.#queued(call, resend);
    }
    const answer = call(connection);
    return resend ? answer.catch((err) => this.#again(err, call)) : answer;
  }

  #again<T>(err: unknown, call: (c: Connection) => Promise<T>): Promise<T> {
    if (!drained(err)) throw err;
    this.resent++;
    return this.#queued(call, true);
  }

  async #queued<T>(call: (c: Connection) => Promise<T>, resend: boolean): Promise<T> {
    for (;;) {
      this.#waiting++;
      let connection: Connection;
      try {
        connection = await this.#current();
      } finally {
        this.#waiting--;
      }
      try {
        return await call(connection);
      } catch (err) {
        if (!resend || !drained(err)) throw err;
        this.resent++;
      }
    }
  }

  /** The open connection, or the one being opened: calls waiting here are sent in the order they came. */
  #current(): Promise<Connection> {
    if (this.#closing) return Promise.reject(closedClient());
    const connection = this.#connection;
    if (this.#connecting === undefined && connection !== undefined && !connection.closed) {
      return Promise.resolve(connection);
    }
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  /** Takes `connection` as the current one, and reports it. */
  #adopt(connection: Connection): void {
    const reconnect = this.#connection !== undefined;
    if (reconnect) this.reconnects++;
    this.#connection = connection;
    this.#options.onConnect?.({ localPort: connection.localPort, reconnect });
    void connection.whenClosed().then((reason) => {
      if (!this.#closing) this.#options.onDisconnect?.(reason);
    });
  }

  async #open(): Promise<Connection> {
    const { baseDelayMs = 50, maxDelayMs = 2_000, reconnectTimeoutMs = 10_000 } = this.#options;
    const backoff = { baseDelayMs, maxDelayMs, maxElapsedMs: reconnectTimeoutMs };
    const deadline = Date.now() + reconnectTimeoutMs;
    const where = `${this.#options.host ?? "127.0.0.1"}:${this.#options.port}`;
    for (let attempt = 0; ; attempt++) {
      try {
        const connection = await Connection.connect(this.#options);
        if (this.#closing) {
          await connection.close();
          throw closedClient();
        }
        this.#adopt(connection);
        return connection;
      } catch (err) {
        // A certificate that does not verify, or a credential the server refused, fails the next try too.
        // (A server that could not check a credential now answers KV_ERR_UNAVAILABLE, which is retried.)
        const final = err instanceof KvError && (err.code === ErrorCode.Tls || err.code === ErrorCode.Unauthenticated);
        const delay = backoffDelay(backoff, attempt);
        if (final || this.#closing || Date.now() + delay >= deadline) {
          const error = this.#closing
            ? closedClient()
            : final
              ? err
              : new KvError(
                  ErrorCode.ConnectionClosed,
                  `could not connect to ${where} within ${reconnectTimeoutMs} ms: ${errorMessage(err)}`,
                  { cause: err },
                );
          if (!this.#closing) this.#options.onError?.(error);
          throw error;
        }
        const error =
          err instanceof KvError ? err : new KvError(ErrorCode.ConnectFailed, errorMessage(err), { cause: err });
        this.#options.onReconnecting?.({ attempt: attempt + 1, delayMs: delay, error });
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
}
