import { ErrorCode, errorMessage, KvError } from "../src/wire/errors.js";
import type { WritableSocket } from "../src/wire/socket-writer.js";

/** TLS settings of a connection; see {@link KvClientOptions.tls}. */
export interface TransportTls {
  ca?: string | Uint8Array;
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  serverName?: string;
}

/** Where and how to connect. */
export interface TransportTarget {
  host: string;
  port: number;
  /** Present: speak TLS, verifying the server's certificate. */
  tls?: TransportTls;
  /** Deadline of connecting and of the TLS handshake, in ms. */
  timeoutMs: number;
}

/** What a transport tells its client. */
export interface TransportEvents {
  data(chunk: Uint8Array): void;
  /** The socket took everything it was given and can take more. */
  drain(): void;
  close(): void;
  /** A failure of an open connection, already a KvError with its code. */
  error(err: KvError): void;
}

/**
 * One connection, as the client uses it on either runtime. `write` follows
 * Bun's contract, which the shared SocketWriter is built on: it takes what it
 * can now and returns that count (negative once closed), keeping nothing it
 * did not take, and `drain` follows a write that took less than it was given.
 */
export interface Transport extends WritableSocket {
  end(): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  readonly localPort: number;
}

/** Why a connection could not be made, in a user's words, by the system's error code. */
const CONNECT_HINTS: Record<string, string> = {
  ECONNREFUSED: "nothing listens there: is the server running, and on this port?",
  ENOTFOUND: "the host name does not resolve",
  EHOSTUNREACH: "the host is unreachable",
  ENETUNREACH: "the network is unreachable",
  ETIMEDOUT: "the host did not answer",
};

/** The `KV_ERR_CONNECT` error of a connection that could not be made, naming the address and the system's code. */
export function connectFailed(target: TransportTarget, err: unknown): KvError {
  const code = (err as { code?: unknown }).code;
  const sys = typeof code === "string" ? code : errorMessage(err);
  const hint = CONNECT_HINTS[sys];
  return new KvError(
    ErrorCode.ConnectFailed,
    `cannot connect to ${target.host}:${target.port}: ${sys}${hint ? ` (${hint})` : ""}`,
    { cause: err },
  );
}

/** The `KV_ERR_TLS` error of a handshake that failed for `why`. */
export function handshakeFailed(target: TransportTarget, why: string, cause?: unknown): KvError {
  // A plaintext server reads the ClientHello as a bad frame and hangs up.
  const hint = why === "ECONNRESET" ? " (is the server serving TLS on this port?)" : "";
  return new KvError(ErrorCode.Tls, `TLS handshake with ${target.host}:${target.port} failed: ${why}${hint}`, {
    cause,
  });
}

/**
 * Connects with the runtime's own sockets: `Bun.connect` on Bun (no copy per
 * write, and no buffering beyond the kernel's), `node:net` and `node:tls` on Node.
 */
export async function connectTransport(target: TransportTarget, events: TransportEvents): Promise<Transport> {
  const giveUp = new AbortController();
  const timer = setTimeout(() => giveUp.abort(), target.timeoutMs);
  try {
    return typeof globalThis.Bun !== "undefined"
      ? await (await import("./bun-transport.js")).connectBun(target, events, giveUp.signal)
      : await (await import("./node-transport.js")).connectNode(target, events, giveUp.signal);
  } finally {
    clearTimeout(timer);
  }
}

/** The `KV_ERR_CONNECT` error of a connection (or handshake) that did not complete within its deadline. */
export function connectTimedOut(target: TransportTarget): KvError {
  const what = target.tls ? "no connection and TLS handshake" : "no connection";
  return new KvError(
    ErrorCode.ConnectFailed,
    `cannot connect to ${target.host}:${target.port}: ${what} within ${target.timeoutMs} ms`,
  );
}
