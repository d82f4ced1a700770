import { ErrorCode, type KvError } from "../errors.js";
import { internalFrame, type ReplyKind } from "./codec.js";

/**
 * What a connection does with each error code: the one place that maps codes
 * to the wire. The seed's schema has one failure status per response type,
 * `internal`, so every request-level failure answers that, and the reason goes
 * to the log. Stream-level failures close the connection instead, because the
 * bytes after them cannot be trusted to be frame boundaries.
 */
const Outcome: Record<ErrorCode, "internal" | "close"> = {
  [ErrorCode.FrameTooLarge]: "close",
  [ErrorCode.BadFrame]: "close",
  [ErrorCode.BadEnvelope]: "close",
  [ErrorCode.BadRequest]: "internal",
  [ErrorCode.KeyTooLarge]: "internal",
  [ErrorCode.ValueTooLarge]: "internal",
  [ErrorCode.Storage]: "internal",
  [ErrorCode.Kms]: "internal",
  [ErrorCode.Integrity]: "internal",
  [ErrorCode.Timeout]: "internal",
  [ErrorCode.Unavailable]: "internal",
  [ErrorCode.ServerInternal]: "internal",
  [ErrorCode.ConnectionClosed]: "close",
  [ErrorCode.Protocol]: "close",
  [ErrorCode.Config]: "internal",
};

/** Whether an error with this code ends the connection rather than being answered. */
export function closesConnection(err: KvError): boolean {
  return Outcome[err.code] === "close";
}

/**
 * The response frame answering a failed request of kind `reply`. The seed's
 * schema has one failure status per response type, so it does not depend on
 * the error; the error's code goes to the log.
 */
export function errorFrame(reply: ReplyKind): Uint8Array {
  return internalFrame(reply);
}
