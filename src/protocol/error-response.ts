import { ErrorCode, type KvError } from "../errors.js";
import { ApiFrames, Frames, internalFrame, type ReplyKind } from "./codec.js";

/**
 * How failures reach the wire, in one place. The seed's schema has one
 * failure status per response type, `internal`, so every request-level
 * failure is answered with it ({@link errorFrame}) and its code and reason go
 * to the log; the exceptions have statuses of their own: a list request's
 * bad cursor (`bad_cursor`) and a conditional set's failed condition (`conflict`). Stream-level failures (KV_ERR_FRAME_TOO_LARGE and
 * KV_ERR_BAD_FRAME from the frame decoder, KV_ERR_BAD_ENVELOPE from the
 * dispatcher) are thrown instead, and the connection closes, because the
 * bytes after them cannot be trusted to be frame boundaries.
 */

/** The response frame answering a request of kind `reply` that failed with `err`. */
export function errorFrame(reply: ReplyKind, err: KvError): Uint8Array {
  if (reply === "list" && err.code === ErrorCode.BadCursor) return ApiFrames.listBadCursor;
  if (reply === "set" && err.code === ErrorCode.Conflict) return Frames.setConflict;
  return internalFrame(reply);
}
