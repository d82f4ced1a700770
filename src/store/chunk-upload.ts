import { type Sealed, seal } from "../crypto/envelope.js";
import type { ItemKey, KeyRef } from "../crypto/item-key.js";
import { asKvError, ErrorCode, KvError } from "../wire/errors.js";
import { chunkBuffers } from "./chunk-buffers.js";
import type { AttributeMap } from "./dynamo-json.js";
import { CHUNK_BYTES, chunkAad, chunkItem } from "./item-format.js";
import type { ValueSink } from "./kv-store.js";

/**
 * Chunks a streamed set has encrypted and in flight at once (1.5 MiB of
 * plaintext). Past it `write` answers false and the writer waits, so an
 * upload holds this many chunks and one partial chunk, whatever the size.
 */
export const UPLOAD_WINDOW_CHUNKS = 4;

/** What a {@link ChunkUpload} needs from its store. */
export interface ChunkUploadParts {
  readonly key: Uint8Array;
  readonly size: number;
  /** The new version's id: every chunk's item key and AAD name it. */
  readonly ver: Uint8Array;
  /** The table name bound into AADs. */
  readonly scope: string;
  /** When the value expires (ms since the epoch; undefined: never), bound into every chunk's AAD. */
  readonly expiresAt: number | undefined;
  /**
   * The data key every chunk is sealed under, asked for once the store
   * admits the upload: no chunk is sealed or written before it resolves.
   */
  readonly dataKey: Promise<ItemKey>;
  /** Writes one chunk item. */
  put(item: AttributeMap): Promise<void>;
  /**
   * Switches the head to the new version: the commit point. `started` is
   * when the first byte came. Resolves the key's version written.
   */
  commit(keyRef: KeyRef, count: number, started: number): Promise<number>;
  /** Deletes chunks `0..count-1` of the version after a failed or abandoned upload; best effort. */
  discard(count: number): Promise<void>;
  /** Told once the upload holds nothing more: finished, failed or abandoned (its cleanup done). */
  settled(): void;
  /** How long the upload may take from its first byte to its commit, in ms. */
  readonly deadlineMs: number;
}

/**
 * A large value written as it arrives: each {@link CHUNK_BYTES} of plaintext
 * is sealed and written as its own chunk item as soon as it is complete, with
 * at most {@link UPLOAD_WINDOW_CHUNKS} writes in flight.
 *
 * Invariants:
 * - Nothing is visible until the commit (`end`, or `finish`'s commit): the
 *   head still names the old version, so a failed or abandoned upload
 *   leaves the old value readable and only orphan chunks behind, which it
 *   deletes itself (the orphan sweep removes any it could not).
 * - After the first failure the rest of the bytes are taken and dropped,
 *   and `end`/`finish` reject with that failure.
 * - The commit is refused once `deadlineMs` has passed since the first byte:
 *   the orphan sweep may delete chunks older than its grace period, and a
 *   head must never point at swept chunks.
 */
export class ChunkUpload implements ValueSink {
  readonly #p: ChunkUploadParts;
  readonly #count: number;
  readonly #started = Date.now();
  /** The pooled buffer of the chunk being filled, or null between chunks. */
  #partial: Uint8Array | null = null;
  /** Length of the chunk being filled. */
  #length = 0;
  #filled = 0;
  /** Index of the next chunk to send. */
  #next = 0;
  #received = 0;
  #inFlight = 0;
  #inFlightBytes = 0;
  #failure: KvError | undefined;
  #state: "open" | "finishing" | "done" = "open";
  #waiters: (() => void)[] = [];

  constructor(parts: ChunkUploadParts) {
    this.#p = parts;
    this.#count = Math.max(1, Math.ceil(parts.size / CHUNK_BYTES));
    // Awaited by each chunk; until then a failure must not count as unhandled.
    parts.dataKey.catch(() => {});
  }

  get heldBytes(): number {
    return (this.#partial === null ? 0 : this.#length) + this.#inFlightBytes;
  }

  write(bytes: Uint8Array): boolean {
    if (this.#state !== "open") return true;
    if (bytes.length > this.#p.size - this.#received) throw new RangeError("more bytes written than the value's size");
    this.#received += bytes.length;
    if (this.#failure !== undefined) return true;
    if (Date.now() - this.#started > this.#p.deadlineMs) {
      this.#fail(new KvError(ErrorCode.Timeout, `the value took more than ${this.#p.deadlineMs} ms to arrive`));
      return true;
    }
    let from = 0;
    while (from < bytes.length) {
      if (this.#partial === null) {
        this.#partial = chunkBuffers.take();
        this.#length = Math.min(CHUNK_BYTES, this.#p.size - this.#next * CHUNK_BYTES);
        this.#filled = 0;
      }
      const take = Math.min(bytes.length - from, this.#length - this.#filled);
      this.#partial.set(bytes.subarray(from, from + take), this.#filled);
      this.#filled += take;
      from += take;
      if (this.#filled === this.#length) this.#send();
    }
    return this.#inFlight < UPLOAD_WINDOW_CHUNKS;
  }

  ready(): Promise<void> {
    if (this.#inFlight < UPLOAD_WINDOW_CHUNKS || this.#failure !== undefined || this.#state !== "open") {
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  async end(): Promise<number> {
    const commit = await this.finish();
    return commit();
  }

  async finish(): Promise<() => Promise<number>> {
    if (this.#state !== "open") throw new RangeError("finish after end or abort");
    if (this.#received !== this.#p.size) {
      throw new RangeError(`finish after ${this.#received} of ${this.#p.size} bytes`);
    }
    this.#state = "finishing";
    await this.#idle();
    if (this.#failure !== undefined) {
      await this.#cleanUp();
      throw this.#failure;
    }
    let keyRef: KeyRef;
    try {
      keyRef = (await this.#p.dataKey).ref;
    } catch (err) {
      await this.#cleanUp();
      throw asKvError(err, ErrorCode.Kms, "no data key for the value");
    }
    this.#state = "done";
    this.#p.settled();
    return () => this.#p.commit(keyRef, this.#count, this.#started);
  }

  abort(): void {
    if (this.#state === "done") return;
    const wasOpen = this.#state === "open";
    this.#state = "done";
    this.#fail(new KvError(ErrorCode.Unavailable, "the upload was abandoned"));
    // A finishing upload cleans up when its writes settle; an open one does it here.
    if (wasOpen) this.#idle().then(() => this.#cleanUp());
  }

  #send(): void {
    const plain = this.#partial as Uint8Array;
    const length = this.#length;
    this.#partial = null;
    const index = this.#next++;
    // The plaintext until it is sealed and the ciphertext until the write settles: counted as both throughout.
    const held = 2 * length;
    this.#inFlight++;
    this.#inFlightBytes += held;
    this.#sendChunk(index, plain, length).then(
      () => this.#settle(held),
      (err: unknown) => {
        this.#fail(asKvError(err, ErrorCode.Storage, `chunk ${index} could not be written`));
        this.#settle(held);
      },
    );
  }

  async #sendChunk(index: number, plain: Uint8Array, length: number): Promise<void> {
    const out = chunkBuffers.take();
    const { key, ver, scope, size, expiresAt } = this.#p;
    let sealed: Sealed | undefined;
    try {
      const dataKey = await this.#p.dataKey;
      if (this.#failure === undefined) {
        const aad = chunkAad(scope, key, ver, index, this.#count, size, expiresAt);
        sealed = seal(dataKey.plaintext, plain.subarray(0, length), aad, out);
      }
    } finally {
      chunkBuffers.give(plain);
      if (sealed === undefined) chunkBuffers.give(out);
    }
    if (sealed === undefined) return;
    await this.#p.put(chunkItem(key, ver, index, { ...sealed, ts: this.#started, expiresAt }));
    // Written: nothing reads the ciphertext again. After a failed write a retry
    // might still read it, so then it is dropped rather than given back.
    chunkBuffers.give(out);
  }

  #settle(held: number): void {
    this.#inFlight--;
    this.#inFlightBytes -= held;
    this.#wake();
  }

  #fail(err: KvError): void {
    this.#failure ??= err;
    if (this.#partial !== null) chunkBuffers.give(this.#partial);
    this.#partial = null;
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Settles once no chunk write is in flight. */
  async #idle(): Promise<void> {
    while (this.#inFlight > 0) await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  /** Deletes what was sent, then tells the store the upload is over. */
  async #cleanUp(): Promise<void> {
    this.#state = "done";
    try {
      if (this.#next > 0) await this.#p.discard(this.#next);
    } finally {
      this.#p.settled();
    }
  }
}
