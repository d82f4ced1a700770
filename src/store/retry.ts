import { type BackoffPolicy, backoffDelay } from "../wire/backoff.js";
import { asKvError, ErrorCode, KvError } from "../wire/errors.js";
import { DynamoCallError } from "./data-plane.js";

/** Backoff settings for retrying throttled or unprocessed DynamoDB work. */
export interface RetryPolicy extends BackoffPolicy {
  /** Give up once this much time has passed since the first attempt. */
  maxElapsedMs: number;
  /** Told of each retry, with what is retried (`write`, `read`, `delete`...), for metrics. */
  onRetry?: (what: string) => void;
}

export const DEFAULT_RETRY: RetryPolicy = { baseDelayMs: 25, maxDelayMs: 1_000, maxElapsedMs: 10_000 };

/**
 * Whether a failed data-plane call is worth repeating. The data client
 * classifies every failure it raises (throttling, 5xx, network faults,
 * timeouts, damaged bodies; see dynamo-data-client.ts), so this asks it;
 * anything else thrown here is a bug, not a backend fault, and is not retried.
 */
export function isRetryable(err: unknown): boolean {
  return err instanceof DynamoCallError && err.retryable;
}

/**
 * Runs `attempt` until it reports nothing left, sleeping with full-jitter
 * backoff between tries, within `policy.maxElapsedMs` of the first attempt.
 * This is the only retry loop on the data path: the data client makes one
 * attempt per call, so the budget has one owner.
 *
 * `attempt` gets the budget left, in ms, to bound its own call with; it
 * returns true when done, false to be called again (unprocessed work), and
 * throws on a failed call. A failure not worth repeating, or a budget too
 * short for another try, rejects with `KV_ERR_STORAGE` naming the last cause,
 * or `KV_ERR_TIMEOUT` when that cause was a call left unanswered.
 */
export async function retrying(
  policy: RetryPolicy,
  what: string,
  attempt: (budgetMs: number) => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + policy.maxElapsedMs;
  let last: unknown;
  for (let n = 0; ; n++) {
    try {
      if (await attempt(Math.max(1, deadline - Date.now()))) return;
      last = undefined;
    } catch (err) {
      if (!isRetryable(err)) throw asKvError(err, ErrorCode.Storage, `DynamoDB ${what} failed`);
      last = err;
    }
    const delay = backoffDelay(policy, n);
    if (Date.now() + delay >= deadline) {
      if (last instanceof DynamoCallError && last.name === "TimeoutError") {
        // No answer, not a refusal: the call may still have been applied, which KV_ERR_TIMEOUT says.
        throw new KvError(ErrorCode.Timeout, `DynamoDB ${what}: no answer within ${policy.maxElapsedMs} ms`, {
          cause: last,
          retryable: true,
        });
      }
      // Every failure here was worth repeating: a later request may succeed.
      if (last !== undefined) {
        throw asKvError(last, ErrorCode.Storage, `DynamoDB ${what} failed for ${policy.maxElapsedMs} ms`, true);
      }
      throw new KvError(ErrorCode.Storage, `DynamoDB left ${what}s unprocessed for ${policy.maxElapsedMs} ms`, {
        retryable: true,
      });
    }
    policy.onRetry?.(what);
    await Bun.sleep(delay);
  }
}

/** {@link retrying} for one call whose answer is wanted: retries it on retryable failures, resolves its answer. */
export async function retryingCall<T>(
  policy: RetryPolicy,
  what: string,
  call: (budgetMs: number) => Promise<T>,
): Promise<T> {
  let answer: T | undefined;
  await retrying(policy, what, async (budgetMs) => {
    answer = await call(budgetMs);
    return true;
  });
  return answer as T;
}

/** A queued request: every caller waiting on it is rejected together if it fails. */
export interface BatchEntry {
  readonly waiters: readonly { reject(err: unknown): void }[];
}

/**
 * Runs `attempt` on `entries` until it leaves none unprocessed, through
 * {@link retrying}. `attempt` settles the entries it finished and returns the
 * rest; entries still unfinished when retrying gives up are rejected.
 */
export async function untilProcessed<T extends BatchEntry>(
  entries: T[],
  policy: RetryPolicy,
  attempt: (entries: T[], budgetMs: number) => Promise<T[]>,
  what: "read" | "write",
): Promise<void> {
  let remaining = entries;
  try {
    await retrying(policy, what, async (budgetMs) => {
      remaining = await attempt(remaining, budgetMs);
      return remaining.length === 0;
    });
  } catch (err) {
    for (const e of remaining) for (const w of e.waiters) w.reject(err);
  }
}
