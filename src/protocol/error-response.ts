import { internalFrame, type ReplyKind } from "./codec.js";

/**
 * How failures reach the wire, in one place. The seed's schema has one
 * failure status per response type, `internal`, so every request-level
 * failure is answered with it ({@link errorFrame}) and its code and reason go
 * to the log. Stream-level failures (KV_ERR_FRAME_TOO_LARGE and
 * KV_ERR_BAD_FRAME from the frame decoder, KV_ERR_BAD_ENVELOPE from the
 * dispatcher) are thrown instead, and the connection closes, because the
 * bytes after them cannot be trusted to be frame boundaries.
 */

/**
 * The response frame answering a failed request of kind `reply`. It does not
 * depend on the error: the error's code goes to the log.
 */
export function errorFrame(reply: ReplyKind): Uint8Array {
  return internalFrame(reply);
}
