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
 * Logs, every interval, one `request latency` line per op that had requests
 * (through every front end it was given, together): counts, `internal`
 * answers, and p50/p99 latency from the histograms' change over the interval. CloudWatch metric filters turn these JSON fields
 * into metrics (template.yaml alarms on p99), so latency reaches CloudWatch
 * without a scraper or an agent.
 */
export class LatencyReporter implements Disposable {
  readonly #stats: readonly RequestStats[];
  readonly #log: Logger;
  readonly #timer: Timer;
  /** Per stats, as of the last report: its counts and its buckets by op. */
  #last: { counts: Float64Array; buckets: Map<string, number[]> }[];

  constructor(stats: RequestStats | readonly RequestStats[], log: Logger, intervalMs: number) {
    this.#stats = Array.isArray(stats) ? stats : [stats as RequestStats];
    this.#log = log;
    this.#last = this.#stats.map(snapshot);
    this.#timer = setInterval(() => this.report(), intervalMs);
    this.#timer.unref();
  }

  /** Logs and returns the interval since the last report. */
  report(): IntervalStats[] {
    const out: IntervalStats[] = [];
    for (const [row, op] of OPS.entries()) {
      let requests = 0;
      let internal = 0;
      const delta: number[] = new Array(LATENCY_BUCKETS.length + 1).fill(0);
      for (const [i, stats] of this.#stats.entries()) {
        const last = this.#last[i] as { counts: Float64Array; buckets: Map<string, number[]> };
        for (const [col, result] of RESULTS.entries()) {
          const slot = row * RESULTS.length + col;
          const n = (stats.counts[slot] as number) - (last.counts[slot] as number);
          requests += n;
          if (result === "internal") internal += n;
        }
        const h = stats.latency.get(op);
        const before = last.buckets.get(op);
        if (h !== undefined) {
          for (const [j, b] of h.buckets.entries()) delta[j] = (delta[j] as number) + b - (before?.[j] ?? 0);
        }
      }
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
    this.#last = this.#stats.map(snapshot);
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

/** What `stats` has counted so far, copied. */
function snapshot(stats: RequestStats): { counts: Float64Array; buckets: Map<string, number[]> } {
  return { counts: stats.counts.slice(), buckets: new Map([...stats.latency].map(([op, h]) => [op, [...h.buckets]])) };
}
