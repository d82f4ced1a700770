/**
 * Stable error codes. Logs, tests and the wire mapping key on these strings,
 * never on messages, so a code is never renamed once shipped.
 */
export const ErrorCode = {
  /** A frame's declared length exceeds `--max-frame-bytes`. Closes the connection. */
  FrameTooLarge: "KV_ERR_FRAME_TOO_LARGE",
  /** A frame's length prefix is not a valid varint. Closes the connection. */
  BadFrame: "KV_ERR_BAD_FRAME",
  /** A frame's bytes do not decode as a `req_envelope`. Closes the connection. */
  BadEnvelope: "KV_ERR_BAD_ENVELOPE",
  /** A decodable envelope lacks what its type needs, or has a type that is not a request. */
  BadRequest: "KV_ERR_BAD_REQUEST",
  /** A key is longer than the store allows. */
  KeyTooLarge: "KV_ERR_KEY_TOO_LARGE",
  /** A value is larger than the store allows. */
  ValueTooLarge: "KV_ERR_VALUE_TOO_LARGE",
  /**
   * A conditional write's condition did not hold: the key's version was not
   * the one named, or the key existed when it was to be absent. Nothing was written.
   */
  Conflict: "KV_ERR_CONFLICT",
  /** A listing cursor this service did not make, or made for another store. */
  BadCursor: "KV_ERR_BAD_CURSOR",
  /** DynamoDB failed or refused a call. */
  Storage: "KV_ERR_STORAGE",
  /** KMS failed or refused a call. */
  Kms: "KV_ERR_KMS",
  /** Stored bytes failed authentication or do not parse: tampering or corruption. */
  Integrity: "KV_ERR_INTEGRITY",
  /**
   * DynamoDB or KMS gave no answer within `--request-timeout-ms`. The
   * request's outcome is unknown: a set may still land, never out of order.
   */
  Timeout: "KV_ERR_TIMEOUT",
  /** The server is shutting down or overloaded and did not run the request. */
  Unavailable: "KV_ERR_UNAVAILABLE",
  /** The server answered `internal` (client side). */
  ServerInternal: "KV_ERR_SERVER_INTERNAL",
  /** The caller's AbortSignal fired before a response arrived (client side). */
  Aborted: "KV_ERR_ABORTED",
  /**
   * The server closed the connection gracefully before reading the request:
   * it was not applied, and may be sent again (client side).
   */
  Drained: "KV_ERR_DRAINED",
  /**
   * The server could not be reached: the connection was refused, the host
   * is unknown or unreachable (client side). Nothing was sent.
   */
  ConnectFailed: "KV_ERR_CONNECT",
  /** The connection closed before a response arrived (client side). */
  ConnectionClosed: "KV_ERR_CONNECTION_CLOSED",
  /** The TLS handshake failed: the server's certificate is untrusted or expired, or it refused ours (client side). */
  Tls: "KV_ERR_TLS",
  /** The peer sent bytes that break the protocol (client side). */
  Protocol: "KV_ERR_PROTOCOL",
  /**
   * The connection (or HTTP request) has not authenticated, or its
   * credential was refused, while the server requires authentication; or
   * the server is in protected mode and the client is not on loopback.
   */
  Unauthenticated: "KV_ERR_UNAUTHENTICATED",
  /** The caller's identity lacks the permission the request needs on its key or prefix. Nothing was read or changed. */
  Forbidden: "KV_ERR_FORBIDDEN",
  /** Bad flags or environment. */
  Config: "KV_ERR_CONFIG",
} as const;

/** One of the {@link ErrorCode} strings. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * Base class of every error this project raises on purpose. `code` is stable;
 * `message` is for humans and never contains a value's bytes.
 */
export class KvError extends Error {
  readonly code: ErrorCode;
  /**
   * Set by whoever made the error from a backend's failure: the same request
   * may succeed later (throttling, a timeout, an unreachable endpoint), as
   * opposed to a refusal that will recur (a denied call, a disabled key).
   */
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(message, options);
    this.name = "KvError";
    this.code = code;
    this.retryable = options?.retryable ?? false;
  }
}

/** Codes that say the request was the client's mistake: refused before anything was changed. */
const CLIENT_FAULTS: ReadonlySet<string> = new Set([
  ErrorCode.BadRequest,
  ErrorCode.KeyTooLarge,
  ErrorCode.ValueTooLarge,
  ErrorCode.BadCursor,
]);

/**
 * How a failed request is counted and logged, the same on every front end:
 * a failed condition is `conflict`, the client's own mistake `refused`, a
 * denial by authentication or the access policy `forbidden`, and anything
 * else `internal`.
 */
export function failureResult(err: KvError): "conflict" | "refused" | "forbidden" | "internal" {
  if (err.code === ErrorCode.Conflict) return "conflict";
  if (err.code === ErrorCode.Forbidden || err.code === ErrorCode.Unauthenticated) return "forbidden";
  return CLIENT_FAULTS.has(err.code) ? "refused" : "internal";
}

/** Whether `err` is a {@link KvError}, optionally with the given code. */
export function isKvError(err: unknown, code?: ErrorCode): err is KvError {
  return err instanceof KvError && (code === undefined || err.code === code);
}

/** The message of anything thrown, for log lines and error text. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Wraps anything thrown by a backend into a {@link KvError} with `code`, keeping it as `cause`. */
export function asKvError(err: unknown, code: ErrorCode, what: string, retryable = false): KvError {
  if (err instanceof KvError) return err;
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new KvError(code, `${what}: ${detail}`, { cause: err, retryable });
}
