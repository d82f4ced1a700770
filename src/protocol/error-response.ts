import {
  AuthError,
  ClearError,
  FORBIDDEN,
  GetError,
  KeyError,
  ListError,
  type ReplyKind,
  SetError,
} from "../wire/envelope.js";
import { ErrorCode, type KvError } from "../wire/errors.js";
import { encodeFailure } from "./codec.js";

/**
 * How failures reach the wire, in one place. The seed's schema has one
 * failure status per response type, `internal`, so every request-level
 * failure is answered with it ({@link errorFrame}), its code and reason in
 * the response's added `code` and `reason` fields and in the log; the exceptions have statuses of their own: a list request's
 * bad cursor (`bad_cursor`) and a conditional set's failed condition (`conflict`). Stream-level failures (KV_ERR_FRAME_TOO_LARGE and
 * KV_ERR_BAD_FRAME from the frame decoder, KV_ERR_BAD_ENVELOPE from the
 * dispatcher) are thrown instead, and the connection closes, because the
 * bytes after them cannot be trusted to be frame boundaries.
 */

/**
 * The response frame answering a request of kind `reply` that failed with
 * `err`: its status, with the error's code and message as the response's
 * `code` and `reason` (a seed-schema client skips both).
 */
export function errorFrame(reply: ReplyKind, err: KvError): Uint8Array {
  const status =
    err.code === ErrorCode.Forbidden || err.code === ErrorCode.Unauthenticated
      ? FORBIDDEN
      : reply === "list" && err.code === ErrorCode.BadCursor
        ? ListError.BadCursor
        : reply === "set" && err.code === ErrorCode.Conflict
          ? SetError.Conflict
          : INTERNAL_STATUS[reply];
  return encodeFailure(reply, status, err.code, err.message);
}

/** Each response's `internal` status. */
const INTERNAL_STATUS: Record<ReplyKind, number> = {
  set: SetError.Internal,
  get: GetError.Internal,
  delete: KeyError.Internal,
  exists: KeyError.Internal,
  list: ListError.Internal,
  clear: ClearError.Internal,
  auth: AuthError.Internal,
};
