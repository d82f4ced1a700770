/** How a request ended, as counted by {@link RequestStats}. */
export type RequestResult = "ok" | "not_found" | "internal" | "refused" | "conflict" | "forbidden";

/** The ops and results counted, in slot order. */
export const OPS = ["get", "set", "delete", "exists", "list", "clear", "auth"] as const;
export const RESULTS = [
  "ok",
  "not_found",
  "internal",
  "refused",
  "conflict",
  "forbidden",
] as const satisfies readonly RequestResult[];
/** An op counted by {@link RequestStats}. */
export type Op = (typeof OPS)[number];

/** The front ends requests come through: each has its own {@link RequestStats}, and metrics label by it. */
export const FRONT_ENDS = ["tcp", "http"] as const;
export type FrontEnd = (typeof FRONT_ENDS)[number];

/** Upper bounds of the latency buckets, in seconds (Prometheus histogram `le`). */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Counts requests by op and result, and the latency of those that waited on
 * the store, in plain arrays: the hot path does a few array increments and
 * no label lookup; the Prometheus registry reads these at scrape time.
 *
 * Answers given synchronously (the memory store) are counted but not timed:
 * they finish within the same tick, and timing each would cost more than
 * answering it.
 */
export class RequestStats {
  /** Counts by op and result: slot `OPS index × RESULTS.length + RESULTS index`. */
  readonly counts = new Float64Array(OPS.length * RESULTS.length);
  /** Per op: bucket counts (one more than LATENCY_BUCKETS, for +Inf), sum of seconds, count. */
  readonly latency = new Map<string, { buckets: number[]; sum: number; count: number }>();
  /** Counts one finished request: an index lookup or two and an increment, no allocation. */
  count(op: Op, result: RequestResult): void {
    const row = op === "get" ? 0 : op === "set" ? 1 : OPS.indexOf(op);
    const slot = row * RESULTS.length + RESULTS.indexOf(result);
    this.counts[slot] = (this.counts[slot] as number) + 1;
  }

  /** The count of `op` ending in `result`. */
  countOf(op: Op, result: RequestResult): number {
    return this.counts[OPS.indexOf(op) * RESULTS.length + RESULTS.indexOf(result)] as number;
  }

  /** Records how long one store-backed request of `op` took. */
  observe(op: string, seconds: number): void {
    let h = this.latency.get(op);
    if (h === undefined) {
      h = { buckets: new Array(LATENCY_BUCKETS.length + 1).fill(0), sum: 0, count: 0 };
      this.latency.set(op, h);
    }
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > (LATENCY_BUCKETS[i] as number)) i++;
    h.buckets[i] = (h.buckets[i] as number) + 1;
    h.sum += seconds;
    h.count++;
  }
}
