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

/**
 * Runs `attempt` on `items` until it leaves none unprocessed, sleeping with
 * full-jitter backoff between tries. `attempt` settles the items it finished
 * and returns the rest. Items still unfinished when `policy.maxElapsedMs` is
 * up, or when a call fails with an error not worth repeating, go to `fail`.
 */
export async function untilProcessed<T>(
  items: T[],
  policy: RetryPolicy,
  attempt: (items: T[]) => Promise<T[]>,
  fail: (items: T[], err: unknown) => void,
  what: string,
): Promise<void> {
  const started = Date.now();
  let remaining = items;
  for (let n = 0; ; n++) {
    try {
      remaining = await attempt(remaining);
    } catch (err) {
      if (!isRetryable(err) || Date.now() - started > policy.maxElapsedMs) {
        fail(remaining, err);
        return;
      }
    }
    if (remaining.length === 0) return;
    if (Date.now() - started > policy.maxElapsedMs) {
      fail(remaining, new Error(`DynamoDB left ${remaining.length} ${what} unprocessed for ${policy.maxElapsedMs} ms`));
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
