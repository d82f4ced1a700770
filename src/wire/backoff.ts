/** The delays of an exponential backoff. */
export interface BackoffPolicy {
  /** First delay, in ms. */
  baseDelayMs: number;
  /** Largest single delay, in ms. */
  maxDelayMs: number;
}

/** "Full jitter" exponential backoff: a uniform delay in [0, min(max, base·2^attempt)]. */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  return random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
}
