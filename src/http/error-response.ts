import { ErrorCode, type KvError } from "../wire/errors.js";

/** An HTTP error answer: status and the stable `error` string of its JSON body. */
export interface HttpError {
  readonly status: number;
  readonly error: string;
}

/**
 * How failures reach HTTP clients, in one place: the client's mistakes are
 * 4xx, a backend that may recover (throttling, timeouts, an unreachable
 * endpoint) is 503, and anything else is 500. The body is always
 * `{"error": CODE, "message": TEXT}`; CODE is stable, TEXT is for humans and
 * never holds a value's bytes.
 */
export function httpError(err: KvError): HttpError {
  switch (err.code) {
    case ErrorCode.BadRequest:
      return { status: 400, error: "bad_request" };
    case ErrorCode.KeyTooLarge:
      return { status: 400, error: "key_too_large" };
    case ErrorCode.ValueTooLarge:
      return { status: 413, error: "value_too_large" };
    case ErrorCode.BadCursor:
      return { status: 400, error: "bad_cursor" };
    case ErrorCode.Conflict:
      return { status: 412, error: "conflict" };
    case ErrorCode.Unauthenticated:
      return { status: 401, error: "unauthenticated" };
    case ErrorCode.Forbidden:
      return { status: 403, error: "forbidden" };
    case ErrorCode.Timeout:
      return { status: 503, error: "timeout" };
    case ErrorCode.Unavailable:
      return { status: 503, error: "unavailable" };
    case ErrorCode.Storage:
      return err.retryable ? { status: 503, error: "storage_unavailable" } : { status: 500, error: "storage" };
    case ErrorCode.Kms:
      return err.retryable ? { status: 503, error: "kms_unavailable" } : { status: 500, error: "kms" };
    case ErrorCode.Integrity:
      return { status: 500, error: "integrity" };
    default:
      return { status: 500, error: "internal" };
  }
}

/** The JSON error answer for `err`. */
export function errorResponse(err: KvError, head = false): Response {
  const { status, error } = httpError(err);
  const res = jsonError(status, error, err.message, head);
  // RFC 9110: a 401 names the scheme that would be accepted.
  if (status === 401) res.headers.set("www-authenticate", 'Bearer realm="kvs"');
  return res;
}

/** A JSON error answer built from its parts. */
export function jsonError(status: number, error: string, message: string, head = false): Response {
  const headers = { "content-type": "application/json" };
  return new Response(head ? null : `${JSON.stringify({ error, message })}\n`, { status, headers });
}
