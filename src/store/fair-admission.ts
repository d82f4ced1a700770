import { Fifo } from "../wire/fifo.js";

/** Who an operation is for: a connection (its cancel signal), or any object that stands for one. */
export type Owner = object;

/** The owner of work that no connection asked for (listing values, sweeps). */
export const INTERNAL_OWNER: Owner = Object.freeze({ aborted: false });

/**
 * Bounds the operations a store has in progress, and shares the bound
 * between the owners that wait for it.
 *
 * Invariants:
 * - At most `limit` operations run at once; more wait.
 * - A freed slot goes first to an owner that had nothing running when it
 *   began to wait (so a connection with one request starts next, not after
 *   a greedy one's queue), then to the owners with waiting work in turn,
 *   one operation each (round-robin); within one owner, in arrival order.
 * - With a free slot, an operation starts synchronously and its own promise
 *   is returned: no extra promise per operation on the unloaded path.
 */
export class FairAdmission {
  readonly #limit: number;
  #active = 0;
  #queued = 0;
  /** Owners with waiting operations, in turn order: a Map iterates in insertion order. */
  readonly #waiting = new Map<Owner, Fifo<() => void>>();
  /** Waiting owners that had nothing running when they began to wait, in arrival order. */
  readonly #starved = new Set<Owner>();
  /** Operations running per owner (owners with none are absent). */
  readonly #running = new Map<Owner, number>();

  constructor(limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`admission limit must be >= 1, got ${limit}`);
    this.#limit = limit;
  }

  /** Operations running. */
  get active(): number {
    return this.#active;
  }

  /** Operations waiting for a slot. */
  get queued(): number {
    return this.#queued;
  }

  /** Runs `fn` for `owner` once a slot is its turn, and frees the slot when it settles. */
  run<T>(owner: Owner, fn: () => Promise<T>): Promise<T> {
    if (this.#active < this.#limit) {
      this.#active++;
      return this.#started(owner, fn);
    }
    let queue = this.#waiting.get(owner);
    if (queue === undefined) {
      queue = new Fifo();
      this.#waiting.set(owner, queue);
      if (!this.#running.has(owner)) this.#starved.add(owner);
    }
    this.#queued++;
    const { promise, resolve } = Promise.withResolvers<void>();
    queue.push(resolve);
    return promise.then(() => this.#started(owner, fn));
  }

  #started<T>(owner: Owner, fn: () => Promise<T>): Promise<T> {
    this.#running.set(owner, (this.#running.get(owner) ?? 0) + 1);
    const release = () => this.#release(owner);
    let work: Promise<T>;
    try {
      work = fn();
    } catch (err) {
      release();
      return Promise.reject(err);
    }
    work.then(release, release);
    return work;
  }

  #release(finished: Owner): void {
    const left = (this.#running.get(finished) ?? 1) - 1;
    if (left === 0) this.#running.delete(finished);
    else this.#running.set(finished, left);
    const owner = this.#nextOwner();
    if (owner === undefined) {
      this.#active--;
      return;
    }
    const queue = this.#waiting.get(owner) as Fifo<() => void>;
    const admit = queue.shift() as () => void;
    // Its turn is used: the owner goes to the back of the line, or out of it.
    this.#starved.delete(owner);
    this.#waiting.delete(owner);
    if (queue.length > 0) this.#waiting.set(owner, queue);
    this.#queued--;
    // The slot passes straight to the admitted operation; #active is unchanged.
    admit();
  }

  /** Whose turn it is: the first starved owner, else the head of the line; undefined when nobody waits. */
  #nextOwner(): Owner | undefined {
    const starved = this.#starved.values().next();
    if (!starved.done) return starved.value;
    const head = this.#waiting.keys().next();
    return head.done ? undefined : head.value;
  }
}
