import { ErrorCode, KvError } from "./errors.js";

/** Longest varint accepted as a length prefix: a uint32, as in protobuf's size-delimited format. */
const MAX_VARINT_BYTES = 5;

/** First allocation for a frame that spans chunks; grows geometrically up to the frame's length. */
const INITIAL_ASSEMBLY_BYTES = 64 * 1024;

/**
 * How a frame whose body is not all in the chunk at hand is read, as its
 * consumer's `begin` decides: assembled whole and handed to `frame`, or
 * handed to `piece` as it arrives.
 */
export const FrameMode = { buffer: 0, stream: 1 } as const;
export type FrameMode = (typeof FrameMode)[keyof typeof FrameMode];

/**
 * Splits a byte stream into size-delimited frames: each frame is a base-128
 * varint length followed by that many bytes (protobuf's `writeDelimitedTo`).
 *
 * Pure and synchronous: it does no I/O and keeps no reference to a chunk after
 * `push` returns, except through the frames it hands out.
 *
 * Invariants:
 * - A frame that lies whole inside one chunk is handed out as a `subarray`
 *   view of that chunk; nothing is copied.
 * - Only the bytes of a frame split across chunks are copied, into a buffer
 *   that doubles up to the declared length, so a frame of S bytes arriving in
 *   many chunks costs O(S) copying and never more than about 1.5·S memory,
 *   however small the chunks; a peer that declares a large frame and sends
 *   little makes the server hold only about twice what it sent.
 * - The declared length is checked against `maxFrameBytes` while the varint is
 *   still being read, before any body byte is buffered.
 * - After `push` throws, the stream is unrecoverable and the decoder must be
 *   discarded (the connection closed).
 * - Backpressure is decided per frame: when `onFrame` returns true, the
 *   decoder stops right after that frame and holds the unparsed rest of the
 *   chunk (and any chunk pushed while paused) until `resume`, so a consumer
 *   never receives more frames than it accepted.
 * - A consumer with `begin` decides how each frame that spans chunks is
 *   read. A streamed frame's body goes to `piece` as views of the chunks, in
 *   order, with nothing copied or held, and `last` on the piece that ends it;
 *   `piece` returning true pauses the decoder right after that piece, as
 *   `frame` does. A frame that lies whole in one chunk always goes to
 *   `frame`, whatever its length.
 */
export class FrameDecoder {
  /** Largest accepted frame body, in bytes. */
  readonly maxFrameBytes: number;

  /** Body length of the frame being read, or -1 while reading a length prefix. */
  #length = -1;
  /** How the body of the frame being read is read. */
  #mode: FrameMode = FrameMode.buffer;
  /** Body bytes of a streamed frame handed out so far. */
  #streamed = 0;
  /** Partial length prefix carried across chunks. */
  #prefixValue = 0;
  #prefixBytes = 0;
  /** Assembly buffer of a frame split across chunks, or null. */
  #body: Uint8Array | null = null;
  #filled = 0;
  /** Chunk rests not yet parsed because a frame callback asked to pause, oldest first. */
  #held: Uint8Array[] = [];
  #heldBytes = 0;

  constructor(maxFrameBytes: number) {
    if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 0 || maxFrameBytes > 0xffff_ffff) {
      throw new RangeError(`maxFrameBytes must be an integer in [0, 2^32-1], got ${maxFrameBytes}`);
    }
    this.maxFrameBytes = maxFrameBytes;
  }

  /** Bytes held for a frame that has not completed yet. */
  get bufferedBytes(): number {
    return this.#filled + this.#prefixBytes;
  }

  /** Bytes allocated to assemble the frame being read (at least {@link bufferedBytes}). */
  get assemblyBytes(): number {
    return this.#body?.length ?? 0;
  }

  /** Bytes received but not parsed yet, because a frame callback paused the decoder. */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  /**
   * Parses what a pause left unparsed, as `push` would, until it is all
   * consumed or `onFrame` asks to pause again. Returns whether it paused again.
   */
  resume(onFrame: FrameCallback | FrameConsumer): boolean {
    const consumer = consumerOf(onFrame);
    while (this.#held.length > 0) {
      const chunk = this.#held.shift() as Uint8Array;
      this.#heldBytes -= chunk.length;
      if (this.#parse(chunk, consumer)) return true;
    }
    return false;
  }

  /** Forgets everything received and not yet handed out (the connection is closing). */
  discard(): void {
    this.#held = [];
    this.#heldBytes = 0;
    this.#body = null;
    this.#filled = 0;
    this.#length = -1;
  }

  /** Whether the decoder is between frames: no partial prefix or body is held. */
  get idle(): boolean {
    return this.#length < 0 && this.#prefixBytes === 0;
  }

  /**
   * Feeds one chunk and calls `onFrame` with each frame body completed by it,
   * in stream order, until `onFrame` returns true (pause). Throws a
   * {@link KvError} with code `KV_ERR_FRAME_TOO_LARGE` or `KV_ERR_BAD_FRAME`
   * on a bad length prefix. Returns whether the decoder is paused.
   */
  push(chunk: Uint8Array, onFrame: FrameCallback | FrameConsumer): boolean {
    if (this.#held.length > 0) {
      // Paused: keep the chunk behind what is already held.
      this.#hold(chunk);
      return true;
    }
    return this.#parse(chunk, consumerOf(onFrame));
  }

  #hold(rest: Uint8Array): void {
    if (rest.length === 0) return;
    this.#held.push(rest);
    this.#heldBytes += rest.length;
  }

  /** Holds the unparsed rest of the chunk being parsed: it comes before anything already held. */
  #holdRest(rest: Uint8Array): void {
    if (rest.length === 0) return;
    this.#held.unshift(rest);
    this.#heldBytes += rest.length;
  }

  #parse(chunk: Uint8Array, consumer: FrameConsumer): boolean {
    const end = chunk.length;
    let pos = 0;
    for (;;) {
      if (this.#length < 0) {
        // Read (or continue) a length prefix.
        if (pos === end) return false;
        let value = this.#prefixValue;
        let count = this.#prefixBytes;
        let done = false;
        while (pos < end) {
          const byte = chunk[pos++] as number;
          // Multiplication, not shifts: the fifth byte would overflow int32.
          value += (byte & 0x7f) * 2 ** (7 * count);
          count++;
          if (value > this.maxFrameBytes) {
            throw new KvError(
              ErrorCode.FrameTooLarge,
              `frame length ${count < MAX_VARINT_BYTES && byte >= 0x80 ? "at least " : ""}${value} exceeds the maximum of ${this.maxFrameBytes} bytes`,
            );
          }
          if (byte < 0x80) {
            done = true;
            break;
          }
          if (count === MAX_VARINT_BYTES) {
            throw new KvError(ErrorCode.BadFrame, `frame length prefix is longer than ${MAX_VARINT_BYTES} bytes`);
          }
        }
        if (!done) {
          this.#prefixValue = value;
          this.#prefixBytes = count;
          return false;
        }
        this.#prefixValue = 0;
        this.#prefixBytes = 0;
        if (end - pos >= value) {
          // The whole frame is in this chunk: handed out as a view, whatever its length.
          const start = pos;
          pos += value;
          if (consumer.frame(chunk.subarray(start, pos)) === true) {
            this.#holdRest(chunk.subarray(pos));
            return true;
          }
          continue;
        }
        this.#length = value;
        this.#mode = consumer.begin?.(value) ?? FrameMode.buffer;
        this.#streamed = 0;
      }

      const length = this.#length;
      if (this.#mode === FrameMode.stream) {
        const take = Math.min(length - this.#streamed, end - pos);
        if (take === 0) return false;
        this.#streamed += take;
        const last = this.#streamed === length;
        if (last) this.#length = -1;
        const start = pos;
        pos += take;
        if ((consumer.piece as PieceCallback)(chunk.subarray(start, pos), last) === true) {
          this.#holdRest(chunk.subarray(pos));
          return true;
        }
        continue;
      }

      const body = this.#body;
      if (body === null) {
        const available = end - pos;
        // The frame is split: copy its head out of this chunk so the chunk is not pinned.
        const assembly = new Uint8Array(Math.min(length, Math.max(available, INITIAL_ASSEMBLY_BYTES)));
        assembly.set(chunk.subarray(pos));
        this.#body = assembly;
        this.#filled = available;
        return false;
      }

      const take = Math.min(length - this.#filled, end - pos);
      const needed = this.#filled + take;
      let target = body;
      if (needed > body.length) {
        target = new Uint8Array(Math.min(length, Math.max(needed, body.length * 2)));
        target.set(body.subarray(0, this.#filled));
        this.#body = target;
      }
      target.set(chunk.subarray(pos, pos + take), this.#filled);
      this.#filled = needed;
      pos += take;
      if (needed < length) return false;
      this.#body = null;
      this.#filled = 0;
      this.#length = -1;
      if (consumer.frame(target) === true) {
        this.#holdRest(chunk.subarray(pos));
        return true;
      }
    }
  }
}

/** Receives one frame body; returning exactly `true` pauses the decoder right after it. */
export type FrameCallback = (body: Uint8Array) => unknown;

/** Receives a piece of a streamed frame's body; returning exactly `true` pauses the decoder right after it. */
export type PieceCallback = (bytes: Uint8Array, last: boolean) => unknown;

/** What a decoder hands frames to; without `begin`, every frame is assembled whole. */
export interface FrameConsumer {
  readonly frame: FrameCallback;
  /** Decides how a frame of `length` bytes that spans chunks is read; `piece` must be given to return `stream`. */
  readonly begin?: (length: number) => FrameMode;
  readonly piece?: PieceCallback;
}

function consumerOf(onFrame: FrameCallback | FrameConsumer): FrameConsumer {
  return typeof onFrame === "function" ? { frame: onFrame } : onFrame;
}
