/**
 * Buffers reused instead of allocated: `take` hands out a kept buffer, or a
 * new one of `bytes`; `give` keeps a buffer for the next `take`, up to
 * `kept` of them and only if it is at least `keepFrom` long.
 *
 * Invariant: a buffer is given back only when nothing reads or writes it any
 * more; the pool does not check, so each user states who gives back when.
 */
export class BufferPool {
  readonly #free: Uint8Array[] = [];
  readonly #bytes: number;
  readonly #kept: number;
  readonly #keepFrom: number;

  /**
   * @param bytes length of a new buffer
   * @param kept buffers kept for reuse at most
   * @param keepFrom shortest buffer kept (default `bytes`)
   */
  constructor(bytes: number, kept: number, keepFrom = bytes) {
    this.#bytes = bytes;
    this.#kept = kept;
    this.#keepFrom = keepFrom;
  }

  /** A kept buffer (at least `keepFrom` long), or a new one of `bytes`. */
  take(): Uint8Array {
    return this.#free.pop() ?? new Uint8Array(this.#bytes);
  }

  /** Keeps `buffer` for reuse, or drops it when the pool is full or it is too short. */
  give(buffer: Uint8Array): void {
    if (buffer.length >= this.#keepFrom && this.#free.length < this.#kept) this.#free.push(buffer);
  }
}
