/** One waiting operation of a {@link DeadlineQueue}. */
export interface Deadline {
  readonly at: number;
  readonly expire: () => void;
  prev: Deadline | undefined;
  next: Deadline | undefined;
  /** Whether it is still linked: false once settled or expired. */
  linked: boolean;
}

/**
 * Deadlines of one length, on one timer: what a timer per operation would
 * do, without a `setTimeout` and a `clearTimeout` on every request.
 *
 * Invariants:
 * - Deadlines are linked in the order they were added, which (one length,
 *   a clock that does not step back) is the order they fall due.
 * - A deadline that is settled is unlinked at once (O(1)), so the list holds
 *   only operations in progress.
 * - While any deadline is linked, one timer is armed, for no later than the
 *   earliest, and holds the process open; when it fires, every deadline due
 *   is expired (its `expire` called, once) and the timer is armed again for
 *   the new earliest. With none linked, a timer may stay armed, unref'd: it
 *   fires once, finds nothing due, and re-arms for the earliest if any.
 * - `expire` is never called for a deadline that was settled first.
 */
export class DeadlineQueue {
  readonly #ms: number;
  readonly #now: () => number;
  #head: Deadline | undefined;
  #tail: Deadline | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #size = 0;

  constructor(ms: number, now: () => number = performance.now.bind(performance)) {
    this.#ms = ms;
    this.#now = now;
  }

  /** Adds a deadline `ms` from now; `expire` runs when it falls due unless {@link settle} came first. */
  add(expire: () => void): Deadline {
    const d: Deadline = { at: this.#now() + this.#ms, expire, prev: this.#tail, next: undefined, linked: true };
    if (this.#tail === undefined) this.#head = d;
    else this.#tail.next = d;
    this.#tail = d;
    if (this.#timer === undefined) this.#arm(d.at);
    else if (this.#size === 0) this.#timer.ref();
    this.#size++;
    return d;
  }

  /** The operation ended in time: its deadline goes, and `expire` will not run. */
  settle(d: Deadline): void {
    if (!d.linked) return;
    d.linked = false;
    this.#size--;
    if (d.prev === undefined) this.#head = d.next;
    else d.prev.next = d.next;
    if (d.next === undefined) this.#tail = d.prev;
    else d.next.prev = d.prev;
    d.prev = d.next = undefined;
    // Left armed, for no later than any deadline added next; it only stops holding the process open.
    if (this.#head === undefined) this.#timer?.unref();
  }

  /** Deadlines linked: operations in progress. */
  get size(): number {
    return this.#size;
  }

  #arm(at: number): void {
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, at - this.#now()));
  }

  #fire(): void {
    this.#timer = undefined;
    const now = this.#now();
    for (let d = this.#head; d !== undefined && d.at <= now; d = this.#head) {
      this.settle(d);
      d.expire();
    }
    if (this.#head !== undefined) this.#arm(this.#head.at);
  }
}
