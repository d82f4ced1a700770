import { ErrorCode, KvError } from "../wire/errors.js";
import { chunkBuffers, collectSoon } from "./chunk-buffers.js";
import type { ValueStream } from "./kv-store.js";

/** What a chunk read resolves when the chunk's item is gone. */
export const MISSING = Symbol("missing chunk");

/** Chunks a streamed read keeps read and decrypted ahead of its reader (1.5 MiB of plaintext). */
const READ_AHEAD_CHUNKS = 4;

/**
 * The chunks of one version, read in order with {@link READ_AHEAD_CHUNKS}
 * read and decrypted ahead of the reader. A chunk found missing after the
 * first (the version was deleted, or swept, while being read) rejects.
 *
 * Chunks are decrypted into pooled buffers ({@link chunkBuffers}); a piece
 * the reader releases goes back to the pool, one it never releases is left
 * to the collector.
 */
export class ChunkStream implements ValueStream {
  readonly size: number;
  readonly #count: number;
  readonly #read: (i: number, into: Uint8Array) => Promise<Uint8Array | typeof MISSING>;
  readonly #ahead: Promise<Uint8Array | typeof MISSING>[] = [];
  /**
   * Pieces handed out and not released, with the pooled buffer each is a
   * view of. Weak: a reader that never releases (one that fails midway) must not
   * have every piece of the value kept alive here until the stream ends.
   */
  readonly #lent = new WeakMap<Uint8Array, Uint8Array>();
  /** Index of the next chunk to start reading. */
  #started = 0;
  /** Index of the next chunk to hand out. */
  #handed = 0;
  #cancelled = false;

  constructor(
    count: number,
    size: number,
    read: (i: number, into: Uint8Array) => Promise<Uint8Array | typeof MISSING>,
  ) {
    this.#count = count;
    this.size = size;
    this.#read = read;
    this.#fill();
  }

  /** Whether the first chunk is there (false: it is missing, and the caller may retry on a newer version). */
  async ready(): Promise<boolean> {
    const first = this.#ahead[0];
    return first !== undefined && (await first) !== MISSING;
  }

  async next(): Promise<Uint8Array | undefined> {
    if (this.#handed === this.#count || this.#cancelled) return undefined;
    const read = this.#ahead.shift() as Promise<Uint8Array | typeof MISSING>;
    const index = this.#handed++;
    this.#fill();
    const plain = await read;
    collectSoon();
    if (plain === MISSING) {
      this.cancel();
      throw new KvError(ErrorCode.Storage, `chunk ${index} was deleted while the value was being read`);
    }
    return plain;
  }

  release(piece: Uint8Array): void {
    const buffer = this.#lent.get(piece);
    if (buffer === undefined) return;
    this.#lent.delete(piece);
    chunkBuffers.give(buffer);
  }

  cancel(): void {
    this.#cancelled = true;
    // Reads in flight finish on their own; their results are dropped. Rejections are the reader's to see, or no one's.
    for (const read of this.#ahead) read.catch(() => {});
    this.#ahead.length = 0;
  }

  #fill(): void {
    while (!this.#cancelled && this.#started < this.#count && this.#ahead.length < READ_AHEAD_CHUNKS) {
      const buffer = chunkBuffers.take();
      // A read that fails leaves its buffer to the collector.
      const read = this.#read(this.#started++, buffer).then((plain) => {
        if (plain === MISSING) chunkBuffers.give(buffer);
        else this.#lent.set(plain, buffer);
        return plain;
      });
      // Until the reader awaits it, a failure must not count as unhandled.
      read.catch(() => {});
      this.#ahead.push(read);
    }
  }
}
