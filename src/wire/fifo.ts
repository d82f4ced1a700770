/** Entries consumed from the front before the array is compacted, at the least. */
const COMPACT_AFTER = 1024;

/**
 * A first-in first-out queue over an array with a moving head: `shift` is
 * O(1) (Array#shift is O(n)), and the consumed prefix is cut off once it is
 * both over {@link COMPACT_AFTER} entries and over half the array, so memory
 * stays proportional to what is queued.
 */
export class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  /** Entries queued. */
  get length(): number {
    return this.#items.length - this.#head;
  }

  /** Queues `item` at the back. */
  push(item: T): void {
    this.#items.push(item);
  }

  /** The front entry, without removing it. */
  peek(): T | undefined {
    return this.#items[this.#head];
  }

  /** Replaces the front entry (which must exist) with `item`. */
  setFront(item: T): void {
    if (this.#head === this.#items.length) throw new RangeError("setFront on an empty queue");
    this.#items[this.#head] = item;
  }

  /** Removes and returns the front entry, or undefined when empty. */
  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head++;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head > COMPACT_AFTER && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  /** Removes and returns every entry, front first. */
  drain(): T[] {
    const out = this.#items.slice(this.#head) as T[];
    this.#items = [];
    this.#head = 0;
    return out;
  }
}
