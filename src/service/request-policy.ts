import type { Grant, ListingScope, Permission } from "../auth/access-policy.js";
import type { Logger } from "../log.js";
import type { Op, RequestResult, RequestStats } from "../ops/request-stats.js";
import { RepeatLimiter } from "../repeat-limiter.js";
import { MAX_KEY_BYTES, oversizedKey, refusedKey, refusedTtl } from "../store/kv-store.js";
import { asKvError, ErrorCode, failureResult, KvError } from "../wire/errors.js";

/** The limits a request is held to before it touches the store. */
export interface RequestLimits {
  maxKeyBytes: number;
  maxValueBytes: number;
}

/** A TTL as TCP's `ttl_ms` names it, for a refusal's reason. */
const asTcpField = (ttlMs: number): string => `ttl_ms ${ttlMs}`;

/** The refusal of a request `grant` lacks `permission` for, on `what`. */
function denied(grant: Grant, permission: Permission, what: string): KvError {
  return new KvError(
    ErrorCode.Forbidden,
    `${grant.identity} lacks ${permission} permission on ${what}; it holds ${grant.describe(permission)}`,
  );
}

/** A request that failed, as a front end answers it: the error, and the result it was counted as. */
export interface Failure {
  readonly error: KvError;
  readonly result: RequestResult;
}

/**
 * One policy for every front end: what a request may be, and how its end
 * is recorded. TCP's dispatcher and the HTTP gateway each translate their
 * wire to store calls and back; both ask this what to refuse, and tell it
 * how each request ended, so limits, reasons, counts, latency and log
 * lines are the same whichever way a request came.
 *
 * Invariants:
 * - A refusal is a {@link KvError} with the code and reason both front
 *   ends answer (TCP as `internal` with them, HTTP as a 4xx with them).
 * - Every request is counted once, by op and result, in this front end's
 *   stats; one that waited on the store (`started` given) is timed too.
 * - A failure the client caused is logged at debug; any other at warn, at
 *   most one line per code per second with a count of the rest. Never a
 *   value or a secret: the code and the reason only.
 */
export class RequestPolicy {
  readonly limits: RequestLimits;
  readonly stats: RequestStats;
  readonly #log: Logger;
  readonly #repeats: RepeatLimiter;
  /** How log lines name the front end ("request failed", "HTTP request failed"). */
  readonly #what: string;

  constructor(limits: Partial<RequestLimits>, stats: RequestStats, log: Logger, what = "request") {
    this.limits = {
      maxKeyBytes: limits.maxKeyBytes ?? MAX_KEY_BYTES,
      maxValueBytes: limits.maxValueBytes ?? Number.MAX_SAFE_INTEGER,
    };
    this.stats = stats;
    this.#log = log;
    this.#repeats = new RepeatLimiter(log);
    this.#what = what;
  }

  /** Why `key` cannot be used (empty, or too long), or undefined. */
  refuseKey(key: Uint8Array): KvError | undefined {
    return refusedKey(key, this.limits.maxKeyBytes);
  }

  /** Why a request for `permission` on `key` by a caller holding `grant` is refused (the key's limits, then access), or undefined. */
  refuseKeyFor(grant: Grant, permission: Permission, key: Uint8Array): KvError | undefined {
    return this.refuseKey(key) ?? this.refuseAccess(grant, permission, key);
  }

  /**
   * Why a set of a value of `valueLength` bytes under `key`, with `ttlMs`,
   * by a caller holding `grant`, is refused, or undefined.
   */
  refuseSet(grant: Grant, key: Uint8Array, valueLength: number, ttlMs: number | undefined): KvError | undefined {
    return (
      this.refuseKey(key) ??
      this.refuseValueLength(valueLength) ??
      this.refuseTtl(ttlMs) ??
      this.refuseAccess(grant, "write", key)
    );
  }

  /** Why a value of `length` bytes is refused, or undefined. */
  refuseValueLength(length: number): KvError | undefined {
    if (length <= this.limits.maxValueBytes) return undefined;
    return new KvError(
      ErrorCode.ValueTooLarge,
      `value of ${length} bytes exceeds the maximum of ${this.limits.maxValueBytes}`,
    );
  }

  /**
   * Why a time to live is refused (see kv-store.ts `refusedTtl`); `given`
   * says how the user wrote it (default: as TCP's `ttl_ms`).
   */
  refuseTtl(ttlMs: number | undefined, given: (ttlMs: number) => string = asTcpField): KvError | undefined {
    return ttlMs === undefined ? undefined : refusedTtl(ttlMs, given);
  }

  /** Why a listing prefix is refused, or undefined. */
  refusePrefix(prefix: Uint8Array | undefined): KvError | undefined {
    return prefix === undefined ? undefined : oversizedKey(prefix, this.limits.maxKeyBytes, "prefix");
  }

  /**
   * Why `grant` may not use `permission` on `key`, or undefined. The reason
   * names the permission missing and what the caller holds; never whether
   * the key exists.
   */
  refuseAccess(grant: Grant, permission: Permission, key: Uint8Array): KvError | undefined {
    if (grant.allows(permission, key)) return undefined;
    return grant.refusal ?? denied(grant, permission, "this key");
  }

  /** How a listing under `prefix` runs under `grant` (see Grant.listing), or why it is refused. */
  listingScope(grant: Grant, prefix: Uint8Array | undefined): ListingScope | KvError {
    return grant.listing(prefix) ?? grant.refusal ?? denied(grant, "read", "any key under this prefix");
  }

  /** Why `grant` may not use `permission` on every key (a clear needs admin on all of them), or undefined. */
  refuseWhole(grant: Grant, permission: Permission): KvError | undefined {
    if (grant.allowsAll(permission)) return undefined;
    return grant.refusal ?? denied(grant, permission, "every key (*), which clear needs");
  }

  /** Records a request of `op` that ended in `result`; timed from `started` when it waited on the store. */
  ended(op: Op, result: "ok" | "not_found" | "conflict", started?: number): void {
    this.stats.count(op, result);
    if (started !== undefined) this.timed(op, started);
  }

  /** Records how long a request of `op` that waited on the store took, from `started` to now. */
  timed(op: Op, started: number): void {
    this.stats.observe(op, (performance.now() - started) / 1000);
  }

  /**
   * Records a request of `op` that failed with `err` (anything thrown: what
   * is not a KvError is a storage failure) and says how to answer it.
   */
  failed(op: Op, err: unknown, started?: number): Failure {
    const error = asKvError(err, ErrorCode.Storage, `${op} failed`);
    const result = failureResult(error);
    this.stats.count(op, result);
    if (started !== undefined) this.timed(op, started);
    const fields = { code: error.code, op, reason: error.message };
    // Denials are rare and matter to an operator (a misconfigured client, or a probe): warned, rate-limited.
    if (result === "forbidden") this.#repeats.warn(error.code, `${this.#what} denied`, fields);
    else if (result !== "internal") this.#log.debug(`${this.#what} refused`, fields);
    else this.#repeats.warn(error.code, `${this.#what} failed`, fields);
    return { error, result };
  }
}
