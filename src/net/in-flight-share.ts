/**
 * Requests in flight across every connection of a listener, and each
 * connection's share of them once they are many.
 *
 * Alone, a connection may hold up to its own `maxInFlight`. When the total
 * reaches `pool`, a connection that already holds `minShare` takes no more
 * until the total falls below half the pool, or its own count below half
 * its share. So many pipelining connections cannot between them put tens of
 * thousands of requests in front of a connection with one: each answers in
 * rounds of about `pool` requests, not `connections × maxInFlight`, and a
 * connection with fewer than `minShare` in flight is always read.
 *
 * Invariants:
 * - `total` is the sum, over open connections, of the requests each has
 *   counted in and not yet out; a closing connection takes out all it holds.
 * - A connection that is refused more holds at least `minShare` in flight,
 *   so its own answers come and re-ask: refusal never stalls a connection.
 */
export class InFlightShare {
  readonly pool: number;
  readonly minShare: number;
  #total = 0;

  constructor(pool: number, minShare: number) {
    if (!Number.isInteger(pool) || pool < 1) throw new RangeError(`in-flight pool must be >= 1, got ${pool}`);
    if (!Number.isInteger(minShare) || minShare < 1) throw new RangeError(`minShare must be >= 1, got ${minShare}`);
    this.pool = pool;
    this.minShare = minShare;
  }

  /** Requests in flight across the connections. */
  get total(): number {
    return this.#total;
  }

  /** A connection counts `n` requests in (positive) or out (negative). */
  add(n: number): void {
    this.#total += n;
  }

  /** Whether a connection with `inFlight` requests may take another now. */
  mayTake(inFlight: number): boolean {
    return inFlight < this.minShare || this.#total < this.pool;
  }

  /** Whether a connection paused with `inFlight` requests may read again. */
  mayResume(inFlight: number): boolean {
    return inFlight <= this.minShare / 2 || this.#total < this.pool / 2;
  }
}
