import { asKvError, ErrorCode, KvError } from "../errors.js";

/** Backoff settings for retrying throttled or unprocessed DynamoDB work. */
export interface RetryPolicy {
  /** First delay, in ms. */
  baseDelayMs: number;
  /** Largest single delay, in ms. */
  maxDelayMs: number;
  /** Give up once this much time has passed since the first attempt. */
  maxElapsedMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { baseDelayMs: 25, maxDelayMs: 1_000, maxElapsedMs: 10_000 };

/** "Full jitter" exponential backoff: a uniform delay in [0, min(max, base·2^attempt)]. */
export function backoffDelay(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  return random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
}

const THROTTLING = new Set([
  "ProvisionedThroughputExceededException",
  "ThrottlingException",
  "RequestLimitExceeded",
  "LimitExceededException",
  "InternalServerError",
  "ServiceUnavailable",
  "TimeoutError",
]);

/** Whether a failed DynamoDB call is worth repeating: throttling, 5xx and network faults. */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (THROTTLING.has(err.name)) return true;
  const meta = err as { $retryable?: unknown; $metadata?: { httpStatusCode?: number }; code?: string };
  if (meta.$retryable) return true;
  const status = meta.$metadata?.httpStatusCode;
  if (status !== undefined && status >= 500) return true;
  return meta.code === "ECONNRESET" || meta.code === "ECONNREFUSED" || meta.code === "EPIPE";
}

/** A queued request: every caller waiting on it is rejected together if it fails. */
export interface BatchEntry {
  readonly waiters: readonly { reject(err: unknown): void }[];
}

/**
 * Runs `attempt` on `entries` until it leaves none unprocessed, sleeping with
 * full-jitter backoff between tries. `attempt` settles the entries it finished
 * and returns the rest. Entries still unfinished when `policy.maxElapsedMs` is
 * up, or when a call fails with an error not worth repeating, are rejected
 * with `KV_ERR_STORAGE`.
 */
export async function untilProcessed<T extends BatchEntry>(
  entries: T[],
  policy: RetryPolicy,
  attempt: (entries: T[]) => Promise<T[]>,
  what: "read" | "write",
): Promise<void> {
  const started = Date.now();
  let remaining = entries;
  for (let n = 0; ; n++) {
    let failure: KvError | undefined;
    try {
      remaining = await attempt(remaining);
    } catch (err) {
      if (!isRetryable(err) || Date.now() - started > policy.maxElapsedMs) {
        failure = asKvError(err, ErrorCode.Storage, `DynamoDB ${what} failed`);
      }
    }
    if (failure === undefined && remaining.length === 0) return;
    if (failure === undefined && Date.now() - started > policy.maxElapsedMs) {
      failure = new KvError(
        ErrorCode.Storage,
        `DynamoDB left ${remaining.length} ${what}s unprocessed for ${policy.maxElapsedMs} ms`,
      );
    }
    if (failure !== undefined) {
      for (const e of remaining) for (const w of e.waiters) w.reject(failure);
      return;
    }
    await Bun.sleep(backoffDelay(policy, n));
  }
}

/**
 * When a batcher sends: at once when a batch is full; at the end of the
 * current microtask when nothing is in flight (so an idle server adds no
 * latency); otherwise after `windowMs`, so load fills batches.
 */
export class FlushScheduler {
  #scheduled = false;
  #timer: Timer | undefined;

  constructor(
    private readonly windowMs: number,
    private readonly flush: (partial: boolean) => void,
  ) {}

  /** Call after queueing work: `ready` items can be sent, `full` make a batch, `inFlight` batches are out. */
  schedule(ready: number, full: number, inFlight: number): void {
    if (ready >= full) {
      this.flush(false);
    } else if (inFlight === 0 || this.windowMs === 0) {
      if (!this.#scheduled) {
        this.#scheduled = true;
        queueMicrotask(() => {
          this.#scheduled = false;
          this.flush(true);
        });
      }
    } else {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.flush(true);
      }, this.windowMs);
    }
  }
}
