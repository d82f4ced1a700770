import {
  decodeResponse,
  encodeAuthRequest,
  encodeClearRequest,
  encodeGetRequest,
  encodeKeyRequest,
  encodeListRequest,
  encodeSetRequest,
  encodeSetRequestHead,
  type Response,
} from "../src/wire/client-codec.js";
import { deferred } from "../src/wire/deferred.js";
import {
  AuthError,
  ClearError,
  GetError,
  KeyError,
  ListError,
  type ReplyKind,
  SetError,
} from "../src/wire/envelope.js";
import { ErrorCode, errorMessage, KvError } from "../src/wire/errors.js";
import { Fifo } from "../src/wire/fifo.js";
import { type FrameConsumer, FrameDecoder, FrameMode } from "../src/wire/frame-decoder.js";
import { IAM_CREDENTIAL_PREFIX } from "../src/wire/iam-credential.js";
import { SocketWriter } from "../src/wire/socket-writer.js";
import { InboundValue } from "./inbound-value.js";
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
import { conditionOf, ttlOf } from "./options.js";
import { serverFailed } from "./server-failure.js";
import { connectTransport, type Transport } from "./transport.js";

interface Waiter {
  readonly kind: ReplyKind;
  resolve(response: Response): void;
  reject(err: KvError): void;
  /** Rejected early (deadline, abort): its answer, when it comes, is dropped. */
  abandoned?: boolean;
  /** For {@link KvClient.getTo}: where a large value's pieces go as they arrive. */
  readonly sink?: (piece: Uint8Array) => void | Promise<void>;
}

/** Unsent bytes an upload lets the socket hold before it waits for `drain`. */
const UPLOAD_HIGH_WATER_BYTES = 1024 * 1024;

/** Answers at least this long to a {@link KvClient.getTo} are taken as they arrive. */
const STREAM_ANSWERS_FROM_BYTES = 64 * 1024;

const encoder = new TextEncoder();

function aborted(signal: AbortSignal): KvError {
  return new KvError(ErrorCode.Aborted, "the request was aborted; if it was sent, the server may still apply it", {
    cause: signal.reason,
  });
}

function unreachable(): KvError {
  return new KvError(ErrorCode.Protocol, "unreachable: response kind checked on receipt");
}

function toBytes(b: Bytes): Uint8Array {
  return typeof b === "string" ? encoder.encode(b) : b;
}

/**
 * One connection to a server, pipelined: the engine under {@link KvClient},
 * which adds reconnection. Calls may be issued without awaiting earlier
 * ones; they are sent in order and settle in request order. Once the
 * connection has closed, for whatever reason, every call rejects.
 */
export class Connection {
  readonly #socket: Transport;
  readonly #writer: SocketWriter;
  readonly #decoder: FrameDecoder;
  #waiters = new Fifo<Waiter>();
  #error: KvError | null = null;
  /** Called once nothing is outstanding. */
  #idle: (() => void)[] = [];
  readonly #closed = deferred<void>();
  readonly #ended = deferred<KvError>();

  /** While an upload writes its frame, other requests' bytes wait here, in order. */
  #held: Uint8Array[] | null = null;
  /** Called when the socket has taken more (an upload waiting for room). */
  #drained: (() => void)[] = [];
  #inbound: InboundValue | null = null;
  readonly #consumer: FrameConsumer;
  readonly #requestTimeoutMs: number | undefined;
  #identity: string | undefined;
  /** Kept from the start: a closed socket no longer knows its port. */
  readonly #localPort: number;

  private constructor(socket: Transport, maxFrameBytes: number, requestTimeoutMs: number | undefined) {
    this.#socket = socket;
    this.#localPort = socket.localPort;
    this.#requestTimeoutMs = requestTimeoutMs;
    this.#writer = new SocketWriter(socket);
    this.#decoder = new FrameDecoder(maxFrameBytes);
    this.#consumer = { frame: this.#onFrame, begin: this.#begin, piece: this.#piece };
  }

  /**
   * Opens a connection to `options`, or to a `kvs://` or `kvss://` URL. With
   * TLS it resolves once the handshake is done, and rejects with
   * `KV_ERR_TLS` if the server's certificate does not verify.
   */
  static async connect(options: KvClientOptions): Promise<Connection> {
    let client: Connection | undefined;
    const maxFrameBytes = options.maxFrameBytes ?? 80 * 1024 * 1024;
    const host = options.host ?? "127.0.0.1";
    const tls =
      options.tls === undefined || options.tls === false ? undefined : options.tls === true ? {} : options.tls;
    const socket = await connectTransport(
      {
        host,
        port: options.port,
        timeoutMs: options.connectTimeoutMs ?? 10_000,
        ...(tls === undefined ? {} : { tls }),
      },
      {
        data: (chunk) => client?.onData(chunk),
        drain: () => client?.onDrain(),
        close: () => client?.onClose(),
        error: (err) => client?.fail(err),
      },
    );
    client = new Connection(socket, maxFrameBytes, options.requestTimeoutMs);
    if (options.auth !== undefined) {
      try {
        await client.authenticate(options.auth);
      } catch (err) {
        client.#socket.end();
        throw err;
      }
    }
    return client;
  }

  /** The identity the server gave this connection when it authenticated (`token:NAME`, `arn:...`, `cert:NAME`). */
  get identity(): string | undefined {
    return this.#identity;
  }

  /**
   * Authenticates the connection (as `connect` does with `auth`) and
   * resolves the identity the server gave it. Rejects with
   * `KV_ERR_UNAUTHENTICATED` and the server's reason if refused (the
   * connection keeps the identity it had), or `KV_ERR_UNAVAILABLE` when the
   * server could not check the credential now.
   */
  async authenticate(auth: ClientAuth, options?: RequestOptions): Promise<string> {
    const credential = "token" in auth ? auth.token : await auth.credential();
    const frame = encodeAuthRequest(
      credential.startsWith(IAM_CREDENTIAL_PREFIX) ? { iam: credential } : { token: credential },
    );
    const res = await this.#send("auth", [frame], undefined, options);
    if (res.kind !== "auth") throw unreachable();
    if (res.error === AuthError.Ok && res.identity !== undefined) {
      this.#identity = res.identity;
      return res.identity;
    }
    throw serverFailed("auth", res);
  }

  /** The connection's local port: what a load balancer sees as its source. */
  get localPort(): number {
    return this.#localPort;
  }

  /**
   * Settles once the connection has closed, for whatever reason, with the
   * error its outstanding and later calls reject with.
   */
  whenClosed(): Promise<KvError> {
    return this.#ended.promise;
  }

  /** Whether the connection has failed or closed: every call on it now rejects. */
  get closed(): boolean {
    return this.#error !== null;
  }

  /** Requests sent and not yet answered. */
  get pending(): number {
    return this.#waiters.length;
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
  async set(key: Bytes, value: Bytes, options: SetOptions = {}): Promise<number | undefined> {
    const condition = conditionOf(options);
    const frame = encodeSetRequest(toBytes(key), toBytes(value), condition, ttlOf(options));
    const res = await this.#send("set", frame, undefined, options);
    if (res.kind !== "set") throw unreachable();
    if (res.error === SetError.Ok) {
      if (condition !== undefined && res.version === undefined) {
        throw new KvError(ErrorCode.Protocol, "a conditional set was answered ok without the version written");
      }
      return res.version;
    }
    if (res.error === SetError.Conflict) {
      throw new KvError(
        ErrorCode.Conflict,
        res.failure?.reason ?? "the set's condition did not hold; nothing was written",
      );
    }
    throw serverFailed("set", res);
  }

  /**
   * Stores a value of exactly `size` bytes read from `source` piece by piece
   * (a file's stream, say): neither this process nor the server holds it
   * whole. Requests issued meanwhile are sent after it, in order. A source
   * that fails or ends short leaves a frame that cannot be finished: the
   * connection is closed and the call rejects. Resolves the version written,
   * as {@link set}; `ttlMs` as there.
   */
  async setFrom(
    key: Bytes,
    size: number,
    source: AsyncIterable<Uint8Array>,
    options: ExpiryOptions = {},
  ): Promise<number | undefined> {
    if (this.#held !== null) throw new KvError(ErrorCode.Protocol, "one upload at a time per connection");
    const answer = this.#send("set", [encodeSetRequestHead(toBytes(key), size, ttlOf(options))]);
    answer.catch(() => {});
    this.#held = [];
    let sent = 0;
    try {
      for await (const piece of source) {
        if (this.#error !== null) throw this.#error;
        if (piece.length > size - sent) throw new RangeError(`the source has more than ${size} bytes`);
        this.#writer.write(piece);
        sent += piece.length;
        while (this.#writer.pendingBytes > UPLOAD_HIGH_WATER_BYTES && this.#error === null) {
          await new Promise<void>((resolve) => this.#drained.push(resolve));
        }
      }
      if (sent !== size) throw new RangeError(`the source ended after ${sent} of ${size} bytes`);
    } catch (err) {
      const failure =
        err instanceof KvError
          ? err
          : new KvError(ErrorCode.Protocol, `upload failed, connection closed: ${errorMessage(err)}`, { cause: err });
      this.fail(failure);
      this.#socket.end();
      throw failure;
    } finally {
      const held = this.#held;
      this.#held = null;
      for (const part of held) this.#writer.write(part);
    }
    const res = await answer;
    if (res.kind === "set" && res.error === SetError.Ok) return res.version;
    throw serverFailed("set", res);
  }

  /**
   * Hands the value of `key` to `sink` as it arrives, piece by piece, in
   * order; the connection reads no further while a promise `sink` returned
   * is pending. Resolves true, or false when the key has no value. A sink
   * that throws makes the call reject once the answer has been read.
   */
  async getTo(key: Bytes, sink: (piece: Uint8Array) => void | Promise<void>): Promise<boolean> {
    const res = await this.#send("get", [encodeGetRequest(toBytes(key))], sink);
    if (res.kind !== "get") throw unreachable();
    if (res.error === GetError.NotFound) return false;
    if (res.error !== GetError.Ok) throw serverFailed("get", res);
    // An answer small enough to come whole was not streamed: hand its value over now.
    if (res.value !== undefined) await sink(res.value);
    return true;
  }

  /** The value of `key`, or undefined if it has none. */
  async get(key: Bytes, options?: RequestOptions): Promise<Uint8Array | undefined> {
    const res = await this.#send("get", [encodeGetRequest(toBytes(key))], undefined, options);
    if (res.kind !== "get") throw unreachable();
    if (res.error === GetError.Ok) return res.value;
    if (res.error === GetError.NotFound) return undefined;
    throw serverFailed("get", res);
  }

  /**
   * The value of `key` with its version, or undefined if it has none: the
   * version to pass as `ifVersion` for a read-modify-write without lost
   * updates, and the value's expiry if it has one.
   */
  async getVersioned(key: Bytes, options?: RequestOptions): Promise<VersionedValue | undefined> {
    const res = await this.#send("get", [encodeGetRequest(toBytes(key), true)], undefined, options);
    if (res.kind !== "get") throw unreachable();
    if (res.error === GetError.NotFound) return undefined;
    if (res.error !== GetError.Ok) throw serverFailed("get", res);
    if (res.version === undefined)
      throw new KvError(ErrorCode.Protocol, "get_response ok without the version asked for");
    const found: VersionedValue = { value: res.value as Uint8Array, version: res.version };
    if (res.expiresAt !== undefined) found.expiresAt = res.expiresAt;
    return found;
  }

  /** Removes `key`; resolves false if it had no value. */
  async delete(key: Bytes, options?: RequestOptions): Promise<boolean> {
    const res = await this.#send("delete", [encodeKeyRequest("delete", toBytes(key))], undefined, options);
    return this.#found(res, "delete");
  }

  /** Whether `key` has a value. */
  async exists(key: Bytes, options?: RequestOptions): Promise<boolean> {
    const res = await this.#send("exists", [encodeKeyRequest("exists", toBytes(key))], undefined, options);
    return this.#found(res, "exists");
  }

  /**
   * One page of a listing, for callers that page themselves (say, across
   * HTTP requests): pass the page's `cursor` back to get the next. A page may
   * be short, even empty, and still have a cursor.
   */
  async listPage(
    options: ListOptions & { values?: boolean } = {},
  ): Promise<ListPage<{ key: Uint8Array; value?: Uint8Array }>> {
    const res = await this.#send("list", [
      encodeListRequest({
        prefix: options.prefix === undefined ? undefined : toBytes(options.prefix),
        limit: options.pageSize,
        cursor: options.cursor,
        values: options.values,
      }),
    ]);
    if (res.kind !== "list") throw unreachable();
    if (res.error === ListError.BadCursor) {
      throw new KvError(
        ErrorCode.BadCursor,
        `server refused the cursor${res.failure?.reason ? `: ${res.failure.reason}` : ""}`,
      );
    }
    if (res.error !== ListError.Ok) throw serverFailed("list", res);
    return { entries: options.values ? res.entries : res.keys.map((key) => ({ key })), cursor: res.cursor };
  }

  /** Removes every key; resolves how many were removed. Can take long on a large DynamoDB store. */
  async clear(): Promise<number> {
    const res = await this.#send("clear", [encodeClearRequest()]);
    if (res.kind !== "clear") throw unreachable();
    if (res.error === ClearError.Ok) return res.removed;
    throw serverFailed("clear", res);
  }

  #found(res: Response, op: "delete" | "exists"): boolean {
    if (res.kind !== op) throw unreachable();
    if (res.error === KeyError.Ok) return true;
    if (res.error === KeyError.NotFound) return false;
    throw serverFailed(op, res);
  }

  /** Closes the connection after the server answered everything sent; settles once closed. */
  async close(): Promise<void> {
    if (this.#error === null && this.pending > 0) {
      await new Promise<void>((resolve) => this.#idle.push(resolve));
    }
    this.#socket.end();
    await this.#closed.promise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #send(kind: ReplyKind, parts: Uint8Array[], sink?: Waiter["sink"], options?: RequestOptions): Promise<Response> {
    if (this.#error !== null) return Promise.reject(this.#error);
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(aborted(signal));
    const { promise, resolve, reject } = deferred<Response>();
    const waiter: Waiter = { kind, resolve, reject, sink };
    const timeoutMs = options?.timeoutMs ?? this.#requestTimeoutMs;
    if (timeoutMs !== undefined || signal !== undefined) {
      let timer: Timer | undefined;
      const abandon = (err: KvError) => {
        waiter.abandoned = true;
        cleanup();
        reject(err);
      };
      const onAbort = () => abandon(aborted(signal as AbortSignal));
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          abandon(
            new KvError(
              ErrorCode.Timeout,
              `no answer to ${kind} within ${timeoutMs} ms; it was sent, so the server may still apply it`,
            ),
          );
        }, timeoutMs);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      waiter.resolve = (response) => {
        cleanup();
        resolve(response);
      };
      waiter.reject = (err) => {
        cleanup();
        reject(err);
      };
    }
    this.#waiters.push(waiter);
    // Held as they are, as the writer holds large parts: encoders here return fresh bytes.
    if (this.#held !== null) this.#held.push(...parts);
    else for (const part of parts) this.#writer.write(part);
    return promise;
  }

  /** A large answer begins: streamed to its getTo's sink, else assembled. */
  readonly #begin = (length: number): FrameMode => {
    const sink = this.#waiters.peek()?.sink;
    if (sink === undefined || length < STREAM_ANSWERS_FROM_BYTES) return FrameMode.buffer;
    this.#inbound = new InboundValue(length, sink);
    return FrameMode.stream;
  };

  /** A piece of a streamed answer; returns true to stop reading until the sink has taken it. */
  readonly #piece = (bytes: Uint8Array, last: boolean): boolean => {
    const inbound = this.#inbound as InboundValue;
    const pending = inbound.take(bytes);
    if (last) {
      this.#inbound = null;
      const settle = () => {
        if (!inbound.streamed) return this.#onFrame(inbound.whole);
        const waiter = this.#waiters.shift() as Waiter;
        if (this.#waiters.length === 0) this.#notifyIdle();
        if (inbound.failure !== undefined) {
          waiter.reject(
            new KvError(ErrorCode.Protocol, `the value's sink failed: ${errorMessage(inbound.failure)}`, {
              cause: inbound.failure,
            }),
          );
        } else waiter.resolve({ kind: "get", error: GetError.Ok });
      };
      if (pending instanceof Promise) {
        const settleSafely = () => {
          try {
            settle();
          } catch (err) {
            this.#streamFailed(err);
          }
        };
        pending.then(settleSafely, settleSafely);
        return this.#pauseFor(pending);
      }
      settle();
      return false;
    }
    return pending instanceof Promise ? this.#pauseFor(pending) : false;
  };

  /** Stops reading until `work` settles, then goes on with what the decoder holds. */
  #pauseFor(work: Promise<unknown>): true {
    this.#socket.pause();
    work.then(() => {
      try {
        if (this.#decoder.resume(this.#consumer)) return;
      } catch (err) {
        this.#streamFailed(err);
        return;
      }
      this.#socket.resume();
    });
    return true;
  }

  private onData(chunk: Uint8Array): void {
    try {
      this.#decoder.push(chunk, this.#consumer);
    } catch (err) {
      this.#streamFailed(err);
    }
  }

  #streamFailed(err: unknown): void {
    this.fail(
      err instanceof KvError && err.code === ErrorCode.Protocol
        ? err
        : new KvError(ErrorCode.Protocol, `bad response stream: ${errorMessage(err)}`, {
            cause: err,
          }),
    );
    this.#socket.end();
  }

  readonly #onFrame = (frame: Uint8Array): void => {
    if (frame.length === 0) {
      // The server's goodbye (see GOODBYE in src/net/frame-handler.ts): it answered everything it read.
      this.fail(
        new KvError(
          ErrorCode.Drained,
          "the server closed the connection gracefully before reading this request: it was not applied",
        ),
      );
      return;
    }
    const response = decodeResponse(frame);
    const waiter = this.#waiters.peek();
    if (waiter === undefined) throw new KvError(ErrorCode.Protocol, "response with no request outstanding");
    if (waiter.kind !== response.kind) {
      throw new KvError(ErrorCode.Protocol, `expected a ${waiter.kind} response, got ${response.kind}`);
    }
    this.#waiters.shift();
    if (this.#waiters.length === 0) this.#notifyIdle();
    if (!waiter.abandoned) waiter.resolve(response);
  };

  private onDrain(): void {
    this.#writer.drain();
    const drained = this.#drained;
    this.#drained = [];
    for (const resume of drained) resume();
  }

  private onClose(): void {
    this.fail(
      new KvError(
        ErrorCode.ConnectionClosed,
        "the connection closed before the server answered: a request sent may or may not have been applied",
      ),
    );
    this.#writer.close();
    this.#closed.resolve();
    this.#ended.resolve(this.#error as KvError);
  }

  /** Rejects every outstanding and future call with `err`. */
  private fail(err: KvError): void {
    this.#error ??= err;
    const drained = this.#drained;
    this.#drained = [];
    for (const resume of drained) resume();
    for (const waiter of this.#waiters.drain()) if (!waiter.abandoned) waiter.reject(err);
    this.#notifyIdle();
  }

  #notifyIdle(): void {
    const idle = this.#idle;
    this.#idle = [];
    for (const fn of idle) fn();
  }
}
