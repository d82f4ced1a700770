/** What the governor reads of the process's memory: `process.memoryUsage().heapUsed`. */
export interface HeapUsage {
  /** Bytes of the JS heap in use. Bun counts external buffers (ArrayBuffers, socket reads) in it. */
  heapUsed: number;
}

/** Settings and seams of a {@link MemoryGovernor}; only `limitBytes` is required. */
export interface MemoryGovernorOptions {
  /** Heap in use (buffers included) past which a collection is forced; 0 turns the governor off. */
  limitBytes: number;
  /** Most of the process's time forced collections may take, as a fraction. */
  maxTimeShare?: number;
  /** Reads the heap; `process.memoryUsage()` by default. */
  usage?: () => HeapUsage;
  /** A synchronous full collection; `Bun.gc(true)` by default (it also sweeps, so the RSS falls). */
  collect?: () => void;
  /** A monotonic clock in ms; `performance.now` by default. */
  now?: () => number;
}

const DEFAULT_MAX_TIME_SHARE = 0.05;

/**
 * A soft limit on the JS heap in use, buffers included, in the spirit of Go's
 * GOMEMLIMIT: past it, the server forces a full collection instead of waiting
 * for the runtime's own.
 *
 * Why: every socket read arrives as a fresh buffer of up to 512 KiB, and a
 * connection paused mid-read keeps its rest alive across young collections,
 * so under many fast writers the read buffers are promoted and wait, as
 * garbage, for a full collection that JSC schedules by its heap's growth, not
 * by those buffers. Forcing one when the heap passes the limit turns that
 * garbage back into free memory before the process's RSS follows it. The
 * price is the collection's pause, which grows with what is live; the time
 * share bounds how often it is paid.
 *
 * Invariants:
 * - A look at the heap is one `memoryUsage()` call (microseconds); it
 *   collects only past the limit.
 * - It forces a collection only while what stays live is under the limit:
 *   live is what the last forced collection left, or less if a later look
 *   saw less (the runtime collected). A heap that is large because it holds
 *   data (the memory store's values) is then left to the runtime, instead of
 *   being collected for nothing, with a pause that grows with the data, again
 *   and again; once the heap is seen under the limit, forcing resumes.
 * - Forced collections take at most `maxTimeShare` of the time: after one
 *   that took d ms, the next waits d·(1/share − 1) ms.
 */
export class MemoryGovernor {
  readonly #limit: number;
  readonly #pauseFactor: number;
  readonly #usage: () => HeapUsage;
  readonly #collect: () => void;
  readonly #now: () => number;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** What the last forced collection left, lowered by any later look that saw less (the runtime collected). */
  #live = 0;
  #notBefore = Number.NEGATIVE_INFINITY;
  /** Collections forced so far. */
  collections = 0;
  /** Time they took, in ms. */
  collectingMs = 0;

  constructor(options: MemoryGovernorOptions) {
    const share = options.maxTimeShare ?? DEFAULT_MAX_TIME_SHARE;
    if (!(options.limitBytes >= 0)) throw new RangeError(`limitBytes must be >= 0, got ${options.limitBytes}`);
    if (!(share > 0 && share <= 1)) throw new RangeError(`maxTimeShare must be in (0, 1], got ${share}`);
    this.#limit = options.limitBytes;
    this.#pauseFactor = 1 / share - 1;
    this.#usage = options.usage ?? (() => process.memoryUsage());
    this.#collect = options.collect ?? (() => Bun.gc(true));
    this.#now = options.now ?? (() => performance.now());
  }

  /** Whether the governor does anything (a limit was set). */
  get enabled(): boolean {
    return this.#limit > 0;
  }

  /**
   * Looks at the heap every `intervalMs` until {@link stop}, calling
   * `onCollect` with each forced collection's duration in ms. The timer does
   * not keep the process alive.
   */
  start(intervalMs: number, onCollect?: (ms: number) => void): void {
    if (this.#limit === 0 || this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      const before = this.collectingMs;
      if (this.check()) onCollect?.(this.collectingMs - before);
    }, intervalMs);
    this.#timer.unref();
  }

  /** Stops looking. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Looks at the heap now; forces a collection if it is past the limit and the rules above allow. Returns whether it did. */
  check(): boolean {
    if (this.#limit === 0) return false;
    const before = this.#usage();
    const used = before.heapUsed;
    if (used < this.#live) this.#live = used;
    if (used <= this.#limit || this.#live > this.#limit) return false;
    const start = this.#now();
    if (start < this.#notBefore) return false;
    this.#collect();
    const end = this.#now();
    const after = this.#usage();
    this.collections++;
    this.collectingMs += end - start;
    this.#notBefore = end + (end - start) * this.#pauseFactor;
    this.#live = after.heapUsed;
    return true;
  }
}
