import { backoffDelay } from "../src/wire/backoff.js";
import { ErrorCode, errorMessage, KvError } from "../src/wire/errors.js";
import { DerivedCalls } from "./derived-calls.js";
import {
  type Bytes,
  type ExpiryOptions,
  KvClient,
  type KvClientOptions,
  type ListOptions,
  type ListPage,
  type RequestOptions,
  type SetOptions,
  type VersionedValue,
} from "./kv-client.js";

/** Settings of a {@link ReconnectingClient}: a {@link KvClient}'s, and how it reconnects. */
export interface ReconnectOptions extends KvClientOptions {
  /** First wait between connection attempts, in ms (default 50); it doubles per failure, with full jitter. */
  baseDelayMs?: number;
  /** Longest wait between attempts, in ms (default 2,000). */
  maxDelayMs?: number;
  /**
   * How long a call waits for a connection before it rejects with
   * `KV_ERR_CONNECTION_CLOSED`, in ms (default 10,000).
   */
  reconnectTimeoutMs?: number;
  /** A connection opened: the first, or a reconnect. */
  onConnect?: (info: { localPort: number; reconnect: boolean }) => void;
  /** The connection closed, and why (a graceful drain's goodbye, a crash, a network fault); the next call reconnects. */
  onDisconnect?: (reason: KvError) => void;
  /** An attempt to connect failed; the next comes after `delayMs`. */
  onReconnecting?: (info: { attempt: number; delayMs: number; error: KvError }) => void;
}

/**
 * A client that survives its connection: when the server closes it (a node
 * drained and removed behind a load balancer) or it breaks, the next call
 * opens a new one, retrying with full-jitter exponential backoff.
 *
 * It resends only what the server says it never read. A server that drains
 * answers every request it read and then sends a goodbye; requests still
 * unanswered then were not applied, and go again, in their order, on the
 * next connection. A request that was on a connection that died without a
 * goodbye (a crash, a network fault) rejects with `KV_ERR_CONNECTION_CLOSED`:
 * it may or may not have been applied, and only the caller can tell whether
 * repeating it is safe (a conditional set is). Calls are sent in the order
 * they were made, on one connection at a time, so a later call never
 * overtakes an earlier one.
 */
export class ReconnectingClient extends DerivedCalls implements AsyncDisposable {
  readonly #options: ReconnectOptions;
  #client: KvClient | undefined;
  #connecting: Promise<KvClient> | undefined;
  #closed = false;
  #lastPort: number | undefined;
  /** Connections opened after the first. */
  reconnects = 0;
  /** Calls sent again because a draining server closed their connection before reading them. */
  resent = 0;

  private constructor(options: ReconnectOptions) {
    super();
    this.#options = options;
  }

  /** The local port of the connection the latest call was sent on: what a load balancer saw as its source. */
  get lastPort(): number | undefined {
    return this.#lastPort;
  }

  /** Connects (with the same backoff as a reconnect) and resolves the client. */
  static async connect(options: ReconnectOptions): Promise<ReconnectingClient> {
    const client = new ReconnectingClient(options);
    await client.#current();
    return client;
  }

  /** See {@link KvClient.set}. */
  async set(key: Bytes, value: Bytes, options?: SetOptions): Promise<number | undefined> {
    return this.#run((c) => c.set(key, value, options));
  }

  /** See {@link KvClient.get}. */
  async get(key: Bytes, options?: RequestOptions): Promise<Uint8Array | undefined> {
    return this.#run((c) => c.get(key, options));
  }

  /** See {@link KvClient.getVersioned}. */
  async getVersioned(key: Bytes, options?: RequestOptions): Promise<VersionedValue | undefined> {
    return this.#run((c) => c.getVersioned(key, options));
  }

  /** See {@link KvClient.getString}. */
  async getString(key: Bytes): Promise<string | undefined> {
    return this.#run((c) => c.getString(key));
  }

  /** See {@link KvClient.delete}. */
  async delete(key: Bytes, options?: RequestOptions): Promise<boolean> {
    return this.#run((c) => c.delete(key, options));
  }

  /** See {@link KvClient.exists}. */
  async exists(key: Bytes, options?: RequestOptions): Promise<boolean> {
    return this.#run((c) => c.exists(key, options));
  }

  /**
   * See {@link KvClient.getTo}. A draining server never read it, so it is
   * sent again on the next connection before any piece reached `sink`.
   */
  async getTo(key: Bytes, sink: (piece: Uint8Array) => void | Promise<void>): Promise<boolean> {
    return this.#run((c) => c.getTo(key, sink));
  }

  /**
   * See {@link KvClient.setFrom}. Never sent again: `source` may be spent.
   * If a draining server closes the connection before reading the upload,
   * this rejects with `KV_ERR_DRAINED` (nothing was written), and a retry
   * with a fresh source is safe.
   */
  async setFrom(
    key: Bytes,
    size: number,
    source: AsyncIterable<Uint8Array>,
    options?: ExpiryOptions,
  ): Promise<number | undefined> {
    return this.#run((c) => c.setFrom(key, size, source, options), false);
  }

  /** See {@link KvClient.listPage}. A listing's pages may come from different connections: cursors are not tied to one. */
  async listPage(
    options: ListOptions & { values?: boolean } = {},
  ): Promise<ListPage<{ key: Uint8Array; value?: Uint8Array }>> {
    return this.#run((c) => c.listPage(options));
  }

  /** See {@link KvClient.clear}. */
  async clear(): Promise<number> {
    return this.#run((c) => c.clear());
  }

  /** Closes the connection once it has answered everything sent; later calls reject. */
  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client ?? (await this.#connecting?.catch(() => undefined));
    if (client !== undefined && !client.closed) await client.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Runs `call` on the current connection; with `resend`, again on the next one while a draining server had not read it. */
  async #run<T>(call: (client: KvClient) => Promise<T>, resend = true): Promise<T> {
    for (;;) {
      const client = await this.#current();
      this.#lastPort = client.localPort;
      try {
        return await call(client);
      } catch (err) {
        if (!resend || !(err instanceof KvError && err.code === ErrorCode.Drained)) throw err;
        this.resent++;
      }
    }
  }

  /** The open connection, or the one being opened: calls waiting here are sent in the order they came. */
  #current(): Promise<KvClient> {
    if (this.#closed) return Promise.reject(new KvError(ErrorCode.ConnectionClosed, "the client is closed"));
    const client = this.#client;
    if (client !== undefined && !client.closed) return Promise.resolve(client);
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #open(): Promise<KvClient> {
    const { baseDelayMs = 50, maxDelayMs = 2_000, reconnectTimeoutMs = 10_000 } = this.#options;
    const backoff = { baseDelayMs, maxDelayMs, maxElapsedMs: reconnectTimeoutMs };
    const deadline = Date.now() + reconnectTimeoutMs;
    const where = `${this.#options.host ?? "127.0.0.1"}:${this.#options.port}`;
    for (let attempt = 0; ; attempt++) {
      try {
        const client = await KvClient.connect(this.#options);
        const reconnect = this.#client !== undefined;
        if (reconnect) this.reconnects++;
        this.#client = client;
        this.#options.onConnect?.({ localPort: client.localPort, reconnect });
        void client.whenClosed().then((reason) => {
          if (!this.#closed) this.#options.onDisconnect?.(reason);
        });
        return client;
      } catch (err) {
        // A certificate that does not verify, or a credential the server refused, fails the next try too.
        // (A server that could not check a credential now answers KV_ERR_UNAVAILABLE, which is retried.)
        if (err instanceof KvError && (err.code === ErrorCode.Tls || err.code === ErrorCode.Unauthenticated)) throw err;
        const delay = backoffDelay(backoff, attempt);
        if (this.#closed || Date.now() + delay >= deadline) {
          throw new KvError(
            ErrorCode.ConnectionClosed,
            `could not connect to ${where} within ${reconnectTimeoutMs} ms: ${errorMessage(err)}`,
            { cause: err },
          );
        }
        const error =
          err instanceof KvError ? err : new KvError(ErrorCode.ConnectFailed, errorMessage(err), { cause: err });
        this.#options.onReconnecting?.({ attempt: attempt + 1, delayMs: delay, error });
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
}
