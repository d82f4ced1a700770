/**
 * Names (store ids) by the second in which they expire, for a store that
 * frees expired values without waiting for a read. The queue keeps no
 * state per id: an id filed twice is handed out twice, so the caller
 * decides which filing is current (the memory store files a value at most
 * once until that filing comes due, and files it again then if it has not
 * expired, so overwrites that push an expiry later cost nothing here).
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

  /** Files `id` to expire at `expiresAt` (ms since the epoch); returns the second it is filed under. */
  add(id: string, expiresAt: number): number {
    const second = secondOf(expiresAt);
    let bucket = this.#buckets.get(second);
    if (bucket === undefined) {
      bucket = [];
      this.#buckets.set(second, bucket);
      this.#push(second);
    }
    bucket.push(id);
    this.#size++;
    return second;
  }

  /**
   * Up to `max` ids filed in seconds that ended by `now` (before
   * `secondOf(now)`). Ids handed out are forgotten.
   */
  due(now: number, max: number): string[] {
    const out: string[] = [];
    const current = secondOf(now);
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

/** The second (since the epoch) a time in ms falls in: what the queue files by. */
export function secondOf(ms: number): number {
  return Math.floor(ms / 1000);
}
