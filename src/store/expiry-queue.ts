/**
 * Names (store ids) by the second in which they expire, for a store that
 * frees expired values without waiting for a read. An id is filed once per
 * write with an expiry; an overwrite files it again and leaves the old
 * entry stale, so a caller must check each id it is handed against the
 * value's current expiry. Memory is one array slot per write with an
 * expiry not yet handed out.
 */
export class ExpiryQueue {
  /** Ids by expiry second. */
  readonly #buckets = new Map<number, string[]>();
  /** Seconds that have a bucket, as a binary min-heap. */
  readonly #seconds: number[] = [];
  #size = 0;

  /** Ids filed and not yet handed out, stale ones included. */
  get size(): number {
    return this.#size;
  }

  /** Files `id` to expire at `expiresAt` (ms since the epoch). */
  add(id: string, expiresAt: number): void {
    const second = Math.floor(expiresAt / 1000);
    let bucket = this.#buckets.get(second);
    if (bucket === undefined) {
      bucket = [];
      this.#buckets.set(second, bucket);
      this.#push(second);
    }
    bucket.push(id);
    this.#size++;
  }

  /**
   * Up to `max` ids filed in seconds that ended by `now`, so each one is
   * expired unless the entry is stale (its value was written again since).
   * Ids handed out are forgotten.
   */
  due(now: number, max: number): string[] {
    const out: string[] = [];
    const current = Math.floor(now / 1000);
    while (out.length < max) {
      const second = this.#seconds[0];
      if (second === undefined || second >= current) break;
      const bucket = this.#buckets.get(second) as string[];
      const take = Math.min(max - out.length, bucket.length);
      for (let i = 0; i < take; i++) out.push(bucket.pop() as string);
      if (bucket.length === 0) {
        this.#buckets.delete(second);
        this.#pop();
      }
    }
    this.#size -= out.length;
    return out;
  }

  /** Forgets every id. */
  clear(): void {
    this.#buckets.clear();
    this.#seconds.length = 0;
    this.#size = 0;
  }

  #push(second: number): void {
    const heap = this.#seconds;
    let i = heap.push(second) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as number) <= second) break;
      heap[i] = heap[parent] as number;
      i = parent;
    }
    heap[i] = second;
  }

  #pop(): void {
    const heap = this.#seconds;
    const last = heap.pop() as number;
    if (heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && (heap[right] as number) < (heap[left] as number) ? right : left;
      if ((heap[child] as number) >= last) break;
      heap[i] = heap[child] as number;
      i = child;
    }
    heap[i] = last;
  }
}
