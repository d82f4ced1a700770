import { Fifo } from "../wire/fifo.js";

/**
 * Bounds concurrent backend calls. Waiters queue here, in FIFO order, rather
 * than inside the HTTP agent, where the SDK's connection timeout would already
 * be running while they wait for a socket.
 */
export class Semaphore {
  readonly #limit: number;
  #active = 0;
  readonly #waiters = new Fifo<() => void>();

  constructor(limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`semaphore limit must be >= 1, got ${limit}`);
    this.#limit = limit;
  }

  /** Calls in progress. */
  get active(): number {
    return this.#active;
  }

  /**
   * Runs `fn` once a slot is free, and frees the slot when it settles. With
   * a free slot, `fn` starts synchronously and its own promise is returned:
   * no extra promise per call on the hot path.
   */
  run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active < this.#limit) {
      this.#active++;
      return this.#started(fn);
    }
    return new Promise<void>((resolve) => this.#waiters.push(resolve)).then(() => this.#started(fn));
  }

  #started<T>(fn: () => Promise<T>): Promise<T> {
    let work: Promise<T>;
    try {
      work = fn();
    } catch (err) {
      this.#release();
      return Promise.reject(err);
    }
    work.then(this.#release, this.#release);
    return work;
  }

  readonly #release = (): void => {
    const next = this.#waiters.shift();
    if (next === undefined) {
      this.#active--;
      return;
    }
    // The slot passes straight to the next waiter; #active is unchanged.
    next();
  };
}
