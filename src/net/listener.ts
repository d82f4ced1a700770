import type { Socket, SocketHandler, TCPSocketListener, TCPSocketListenOptions } from "bun";
import type { Logger } from "../log.js";
import { Counter, type Counters } from "../metrics.js";
import { RepeatLimiter } from "../repeat-limiter.js";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";
import { KEEPALIVE_IDLE_MS } from "../wire/keepalive.js";
import { Connection, type ConnectionOptions } from "./connection.js";
import type { FrameHandler } from "./frame-handler.js";
import { certificateNames, type Peer } from "./peer.js";
import type { TlsMaterial } from "./tls-material.js";

/**
 * Throws, naming the address, if `host:port` cannot be bound now. Run before
 * anything slow starts (DynamoDB Local takes seconds), so a busy port fails fast.
 */
export function ensurePortFree(host: string, port: number, what?: string): void {
  let probe: TCPSocketListener<undefined>;
  try {
    probe = Bun.listen<undefined>({ hostname: host, port, exclusive: true, socket: { data() {} } });
  } catch (err) {
    throw listenError(host, port, err, what);
  }
  probe.stop(true);
}

/**
 * A failure to bind `host:port` as a KV_ERR_CONFIG that names the address
 * and says why in words (`the port is in use`), for startup messages.
 * `what` names a port other than the data port (`admin`).
 */
export function listenError(host: string, port: number, err: unknown, what?: string): KvError {
  const code = (err as { code?: string }).code;
  const why =
    code === "EADDRINUSE"
      ? "the port is in use"
      : code === "EACCES"
        ? "permission denied"
        : code === "EADDRNOTAVAIL"
          ? "no such local address"
          : errorMessage(err);
  return new KvError(ErrorCode.Config, `cannot listen on ${host}:${port}${what ? ` (${what})` : ""}: ${why}`, {
    cause: err,
  });
}

/** Listener settings. */
export interface ListenerOptions extends ConnectionOptions {
  host: string;
  port: number;
  /** Connections beyond this are closed on accept. */
  maxConnections: number;
  /** Seconds a connection may stay silent before it is closed; 0 disables. */
  idleTimeoutSeconds: number;
  /** Share the port with other processes (SO_REUSEPORT), for `--workers`. */
  reusePort: boolean;
  /** Serve TLS with this material; undefined: plaintext. */
  tls?: TlsMaterial;
}

/**
 * A TCP listener: one {@link Connection} per socket, each handing its frames
 * to one handler. With TLS, {@link Listener.reloadTls} swaps the certificate
 * without dropping a connection.
 */
export class Listener {
  #server: TCPSocketListener<Connection | undefined>;
  readonly #connections: Set<Connection>;
  readonly #log: Logger;
  readonly #listenOptions: TCPSocketListenOptions<Connection | undefined>;
  readonly #options: ListenerOptions;
  #stopping: Promise<void> | null = null;

  private constructor(
    server: TCPSocketListener<Connection | undefined>,
    connections: Set<Connection>,
    log: Logger,
    listenOptions: TCPSocketListenOptions<Connection | undefined>,
    options: ListenerOptions,
  ) {
    this.#server = server;
    this.#connections = connections;
    this.#log = log;
    this.#listenOptions = listenOptions;
    this.#options = options;
  }

  /**
   * Starts listening. `handler` answers every connection's frames, or makes
   * each connection a handler of its own when it opens (a session that
   * authenticates).
   */
  static start(
    handler: FrameHandler | ((peer: Peer) => FrameHandler),
    log: Logger,
    counters: Counters,
    options: ListenerOptions,
  ): Listener {
    const connections = new Set<Connection>();
    /** The last connection id given: ids name connections in this listener's log lines. */
    let connectionIds = 0;
    const repeats = new RepeatLimiter(log);
    const mutual = options.tls?.mutual === true;
    const listenOptions = {
      hostname: options.host,
      port: options.port,
      // A second server on a taken port must fail, not split traffic, unless --workers asked for SO_REUSEPORT.
      // TLS binds with SO_REUSEPORT too: a certificate reload binds its successor beside it, so the port is
      // never closed. main.ts checks the port is free first, so only a second kvs could share it.
      exclusive: !options.reusePort && options.tls === undefined,
      // Bun honours reusePort on listeners, but its TCPSocketListenOptions type omits it.
      reusePort: options.reusePort || options.tls !== undefined,
      // A client may send its requests and then shut down its write side; it still gets every answer.
      allowHalfOpen: true,
      // Plain Uint8Array chunks: views cut from them are cheaper than Buffer views.
      binaryType: "uint8array",
      socket: {
        open(socket: Socket<Connection | undefined>) {
          if (connections.size >= options.maxConnections) {
            log.warn("refusing connection: at --max-connections", { limit: options.maxConnections });
            socket.end();
            return;
          }
          socket.setNoDelay(true);
          // Probes after a minute of silence: dead peers (a client host gone, a NAT or load balancer
          // that dropped the flow) are found and their sockets freed, and idle flows stay open
          // through the NLB's 350 s idle timeout.
          socket.setKeepAlive(true, KEEPALIVE_IDLE_MS);
          if (options.idleTimeoutSeconds > 0) socket.timeout(options.idleTimeoutSeconds);
          const id = ++connectionIds;
          const own =
            typeof handler === "function"
              ? handler({
                  id,
                  remoteAddress: socket.remoteAddress,
                  certificateNames: () => (mutual ? certificateNames(socket.getPeerCertificate()) : []),
                })
              : handler;
          const conn = new Connection(socket, own, log, counters, options, id);
          socket.data = conn;
          connections.add(conn);
          counters.add(Counter.connectionsOpened);
          // Its close may come from the socket's `close` event or from the connection itself (a write that
          // found the socket gone), whichever is first.
          void conn.closed.then(() => {
            connections.delete(conn);
            counters.add(Counter.connectionsClosed);
            log.debug("connection closed", { conn: id });
          });
        },
        handshake(socket, success, authorizationError) {
          if (success && (authorizationError === null || !mutual)) return;
          counters.add(Counter.tlsHandshakeFailures);
          // OpenSSL's verdict, e.g. CERT_HAS_EXPIRED or UNABLE_TO_VERIFY_LEAF_SIGNATURE.
          const reason = (authorizationError as (Error & { code?: string }) | null)?.code ?? "handshake failed";
          repeats.warn(`tls:${reason}`, "TLS handshake refused", {
            remote: socket.remoteAddress,
            reason,
            conn: socket.data?.id,
          });
          // Bun already closes a client whose certificate failed verification under rejectUnauthorized;
          // closing here as well keeps mutual TLS a property of this code, not of a runtime default.
          if (socket.data !== undefined) socket.data.destroy();
          else socket.terminate();
        },
        data(socket, chunk) {
          if (options.idleTimeoutSeconds > 0) socket.timeout(options.idleTimeoutSeconds);
          socket.data?.onData(chunk);
        },
        drain(socket) {
          socket.data?.onDrain();
        },
        end(socket) {
          void socket.data?.shutdown();
        },
        timeout(socket) {
          const conn = socket.data;
          // Idle means owing nothing: a connection waiting on a slow request is not idle.
          if (conn?.busy) {
            log.debug("idle timeout deferred: requests in flight", { remote: socket.remoteAddress, conn: conn.id });
            socket.timeout(options.idleTimeoutSeconds);
            return;
          }
          log.debug("closing idle connection", { remote: socket.remoteAddress, conn: conn?.id });
          conn?.destroy();
        },
        error(socket, error) {
          log.warn("socket error", { remote: socket.remoteAddress, reason: error.message, conn: socket.data?.id });
        },
        close(socket) {
          const conn = socket.data;
          if (conn === undefined) return;
          socket.data = undefined;
          conn.onClose();
        },
      } satisfies SocketHandler<Connection | undefined>,
    } as TCPSocketListenOptions<Connection | undefined>;
    let server: TCPSocketListener<Connection | undefined>;
    try {
      server = Bun.listen<Connection | undefined>(
        options.tls === undefined ? listenOptions : { ...listenOptions, tls: options.tls.options },
      );
    } catch (err) {
      throw listenError(options.host, options.port, err);
    }
    return new Listener(server, connections, log, listenOptions, options);
  }

  /**
   * Serves new connections with `tls` from now on. The successor binds the
   * same port beside the current listener (SO_REUSEPORT) before that one
   * stops accepting, so no connect is refused, and open connections keep
   * their session. Throws, leaving the current material in place, if the
   * listener is plaintext or the bind fails.
   */
  reloadTls(tls: TlsMaterial): void {
    if (this.#options.tls === undefined) {
      throw new KvError(ErrorCode.Config, "the TCP listener was started without TLS; restart to turn it on");
    }
    if (this.#stopping !== null) return;
    let next: TCPSocketListener<Connection | undefined>;
    try {
      next = Bun.listen<Connection | undefined>({ ...this.#listenOptions, port: this.port, tls: tls.options });
    } catch (err) {
      throw listenError(this.host, this.port, err);
    }
    const previous = this.#server;
    this.#server = next;
    // Stops accepting only; its connections live on in #connections.
    previous.stop(false);
  }

  /** The bound port (useful with port 0). */
  get port(): number {
    return this.#server.port;
  }

  /** The bound host. */
  get host(): string {
    return this.#server.hostname;
  }

  /** Open connections. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Requests read and not yet answered, over every connection (walks them: for scrapes, not the hot path). */
  get inFlight(): number {
    let n = 0;
    for (const c of this.#connections) n += c.inFlight;
    return n;
  }

  /**
   * Graceful stop: stop accepting, let every connection answer what it has
   * accepted, then close them. Connections still open after `graceMs` are
   * cut off. Idempotent.
   */
  stop(graceMs = 10_000): Promise<void> {
    this.#stopping ??= this.#stop(graceMs);
    return this.#stopping;
  }

  async #stop(graceMs: number): Promise<void> {
    this.#server.stop(false);
    const all = [...this.#connections].map((c) => c.shutdown(true));
    let timer: Timer | undefined;
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), graceMs);
    });
    const outcome = await Promise.race([Promise.all(all), deadline]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      this.#log.warn("grace period over; cutting off connections", { open: this.#connections.size });
      for (const c of this.#connections) c.destroy();
    }
    this.#server.stop(true);
  }
}
