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
