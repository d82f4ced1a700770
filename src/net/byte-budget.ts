/**
 * The bytes a server's connections may hold at once: frames being
 * assembled, large frames read and not yet answered, chunks of streamed
 * sets in flight, and answers not yet sent. Each connection reports what it
 * holds; one that needs more bytes to finish the frame it is reading asks
 * first, and pauses its socket until told it may go on.
 *
 * Invariants:
 * - Below the limit every request is admitted. At or above it, one
 *   connection at a time (the holder) may still read its frame to the end,
 *   so a frame larger than what is free, even than the whole budget,
 *   completes; the others wait, oldest first. So the budget is exceeded by
 *   at most what the holder needs for one frame: a streamed set's window,
 *   or one buffered frame.
 * - Nothing waits on a connection that is not reading: once the holder
 *   finishes its frame (or closes), the oldest waiter becomes the holder,
 *   and when the count falls below the limit every waiter is woken.
 * - Connections reading small frames that lie whole in one read never ask:
 *   small requests still flow when the budget is spent.
 * - A holder may not keep others waiting for ever: once it has held the
 *   budget for `holdLimitMs` while others wait (a client trickling a large
 *   frame or body), it is evicted (its `evict` is called, and it must close
 *   and release), and the oldest waiter takes over.
 */
export class ByteBudget {
  /** Bytes above which connections that need more wait. */
  readonly limit: number;
  /** How long one holder may keep others waiting, in ms. */
  readonly holdLimitMs: number;
  #used = 0;
  #holder: object | null = null;
  #evictHolder: (() => void) | undefined;
  #holdTimer: ReturnType<typeof setTimeout> | undefined;
  /** Waiters in arrival order (a Map iterates in insertion order). */
  readonly #waiting = new Map<object, () => void>();

  constructor(limit: number, holdLimitMs = 30_000) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`byte budget must be >= 1, got ${limit}`);
    this.limit = limit;
    this.holdLimitMs = holdLimitMs;
  }

  /** Bytes held now, as reported. */
  get used(): number {
    return this.#used;
  }

  /** Connections waiting for room. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** The connection allowed to finish its frame past the limit, if any. */
  get holder(): object | null {
    return this.#holder;
  }

  /** Counts `delta` more bytes held (fewer when negative); falling below the limit wakes every waiter. */
  add(delta: number): void {
    this.#used += delta;
    if (delta < 0 && this.#used < this.limit && this.#waiting.size > 0) {
      const wakes = [...this.#waiting.values()];
      this.#waiting.clear();
      clearTimeout(this.#holdTimer);
      this.#holdTimer = undefined;
      for (const wake of wakes) queueMicrotask(wake);
    }
  }

  /**
   * Whether `who`, which needs more bytes to finish its frame, may read
   * them now. When it may not, `wake` is called once it may ask again.
   * `evict` is how a holder that keeps others waiting too long is made to
   * close (see the class's invariants).
   */
  admit(who: object, wake: () => void, evict?: () => void): boolean {
    if (this.#holder === who) {
      this.#evictHolder = evict ?? this.#evictHolder;
      return true;
    }
    if (this.#used < this.limit) return true;
    if (this.#holder === null) {
      this.#hold(who, evict);
      return true;
    }
    this.#waiting.set(who, wake);
    this.#holdTimer ??= setTimeout(() => this.#expire(), this.holdLimitMs);
    return false;
  }

  #hold(who: object, evict: (() => void) | undefined): void {
    this.#holder = who;
    this.#evictHolder = evict;
    clearTimeout(this.#holdTimer);
    this.#holdTimer = this.#waiting.size > 0 ? setTimeout(() => this.#expire(), this.holdLimitMs) : undefined;
  }

  /** The holder kept others waiting past the limit: it goes, and the oldest waiter takes over. */
  #expire(): void {
    this.#holdTimer = undefined;
    const holder = this.#holder;
    if (holder === null || this.#waiting.size === 0) return;
    const evict = this.#evictHolder;
    this.release(holder);
    evict?.();
  }

  /** `who` has finished its frame, or closed: it stops waiting, and if it was the holder the oldest waiter takes over. */
  release(who: object): void {
    this.#waiting.delete(who);
    if (this.#holder !== who) return;
    this.#holder = null;
    this.#evictHolder = undefined;
    clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
    const first = this.#waiting.entries().next();
    if (first.done) return;
    const [next, wake] = first.value;
    this.#waiting.delete(next);
    // The new holder's eviction is learned when it asks again (woken, it calls admit).
    this.#hold(next, undefined);
    queueMicrotask(wake);
  }
}
