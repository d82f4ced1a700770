import type { Logger } from "../log.js";
import { LATENCY_BUCKETS, OPS, RESULTS, type RequestStats } from "./request-stats.js";

/** What one op did over one interval, as {@link LatencyReporter} logs it. */
export interface IntervalStats {
  op: string;
  requests: number;
  internal: number;
  /** Latency quantiles of the requests timed in the interval, as the upper bound of their bucket, in ms. */
  p50Ms: number | undefined;
  p99Ms: number | undefined;
}

/** The upper bound, in ms, of the bucket holding quantile `q` of `counts`; undefined when empty. */
export function bucketQuantileMs(counts: readonly number[], q: number): number | undefined {
  let total = 0;
  for (const c of counts) total += c;
  if (total === 0) return undefined;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i] as number;
    if (seen >= q * total) {
      const le = LATENCY_BUCKETS[i];
      // Past the last bound: reported as twice it, so an alarm on it still fires.
      return (le ?? 2 * (LATENCY_BUCKETS.at(-1) as number)) * 1000;
    }
  }
  return undefined;
}

/**
 * Logs, every interval, one `request latency` line per op that had requests:
 * counts, `internal` answers, and p50/p99 latency from the histogram's
 * change over the interval. CloudWatch metric filters turn these JSON fields
 * into metrics (template.yaml alarms on p99), so latency reaches CloudWatch
 * without a scraper or an agent.
 */
export class LatencyReporter implements Disposable {
  readonly #stats: RequestStats;
  readonly #log: Logger;
  readonly #timer: Timer;
  #lastCounts: Float64Array;
  #lastBuckets = new Map<string, number[]>();

  constructor(stats: RequestStats, log: Logger, intervalMs: number) {
    this.#stats = stats;
    this.#log = log;
    this.#lastCounts = stats.counts.slice();
    for (const [op, h] of stats.latency) this.#lastBuckets.set(op, [...h.buckets]);
    this.#timer = setInterval(() => this.report(), intervalMs);
    this.#timer.unref();
  }

  /** Logs and returns the interval since the last report. */
  report(): IntervalStats[] {
    const out: IntervalStats[] = [];
    const counts = this.#stats.counts;
    for (const [row, op] of OPS.entries()) {
      let requests = 0;
      let internal = 0;
      for (const [col, result] of RESULTS.entries()) {
        const slot = row * RESULTS.length + col;
        const n = (counts[slot] as number) - (this.#lastCounts[slot] as number);
        requests += n;
        if (result === "internal") internal += n;
      }
      const h = this.#stats.latency.get(op);
      const before = this.#lastBuckets.get(op);
      const delta = h === undefined ? [] : h.buckets.map((b, i) => b - (before?.[i] ?? 0));
      if (h !== undefined) this.#lastBuckets.set(op, [...h.buckets]);
      if (requests === 0) continue;
      const line = {
        op,
        requests,
        internal,
        p50Ms: bucketQuantileMs(delta, 0.5),
        p99Ms: bucketQuantileMs(delta, 0.99),
      };
      out.push(line);
      this.#log.info("request latency", {
        op,
        requests,
        internal,
        p50_ms: line.p50Ms,
        p99_ms: line.p99Ms,
      });
    }
    this.#lastCounts = counts.slice();
    return out;
  }

  /** Stops reporting. */
  stop(): void {
    clearInterval(this.#timer);
  }

  [Symbol.dispose](): void {
    this.stop();
  }
}
