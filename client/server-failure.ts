import type { Response } from "../src/wire/client-codec.js";
import { FORBIDDEN } from "../src/wire/envelope.js";
import { ErrorCode, KvError } from "../src/wire/errors.js";

/** Codes a server may put in a failure answer; any other (or none, from older servers) reads as KV_ERR_SERVER_INTERNAL. */
const SERVER_CODES: ReadonlySet<string> = new Set<string>([
  ErrorCode.KeyTooLarge,
  ErrorCode.ValueTooLarge,
  ErrorCode.BadRequest,
  ErrorCode.BadCursor,
  ErrorCode.Storage,
  ErrorCode.Kms,
  ErrorCode.Integrity,
  ErrorCode.Timeout,
  ErrorCode.Unavailable,
  ErrorCode.Unauthenticated,
  ErrorCode.Forbidden,
]);

/**
 * The error of a request the server answered `internal`: the server's own
 * code (`KV_ERR_VALUE_TOO_LARGE`, `KV_ERR_TIMEOUT`, ...) and reason when it
 * gave them, as servers since `code` and `reason` were added do; otherwise
 * `KV_ERR_SERVER_INTERNAL`. One it answered `forbidden` is
 * `KV_ERR_FORBIDDEN` or `KV_ERR_UNAUTHENTICATED`, with the server's reason.
 */
export function serverFailed(op: string, res: Response): KvError {
  const why = res.failure;
  if (res.error === FORBIDDEN) {
    // A denial: the server's code says whether it was authentication or the policy.
    const code = why?.code === ErrorCode.Unauthenticated ? ErrorCode.Unauthenticated : ErrorCode.Forbidden;
    return new KvError(code, `server refused ${op}: ${why?.reason ?? "forbidden"}`);
  }
  const detail =
    why === undefined ? "" : `: ${why.code ?? "KV_ERR_SERVER_INTERNAL"}: ${why.reason ?? "no reason given"}`;
  const code =
    why?.code !== undefined && SERVER_CODES.has(why.code) ? (why.code as ErrorCode) : ErrorCode.ServerInternal;
  return new KvError(code, `server answered ${op} with internal${detail}`);
}
