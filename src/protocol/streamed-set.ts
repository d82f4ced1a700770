import type { Grant } from "../auth/access-policy.js";
import type { Answer, Deferred, FrameStream } from "../net/frame-handler.js";
import type { Cancel, KvStore, ValueSink } from "../store/kv-store.js";
import { writeValue } from "../store/kv-store.js";
import type { ReplyKind } from "../wire/envelope.js";
import { ErrorCode, KvError } from "../wire/errors.js";
import { checkSetTrailer, type SetLayout, scanValueHead } from "../wire/value-head.js";

/** What a {@link StreamedSet} needs from its dispatcher. */
export interface StreamedSetHost {
  readonly store: KvStore;
  /** Why a set of this key and value size, by a caller holding `grant`, is refused, or undefined. */
  refuseSet(key: Uint8Array, valueLength: number, ttlMs: number | undefined, grant: Grant): KvError | undefined;
  /** The answer to a set once `work` settles (counted and timed from `started`). */
  answerSet(work: Promise<number>, started: number): Promise<Answer>;
  /** The error answer for `reply`, logged and counted. */
  fail(reply: ReplyKind, err: KvError): Uint8Array;
}

/** The connection's side of a streamed set (dispatch.ts's `Caller`). */
export interface StreamedSetCaller {
  readonly grant: Grant;
  /** Answers a whole frame, as a small one is answered (a large frame that is not a streamable set). */
  handle(frame: Uint8Array): Answer | Promise<Answer> | Deferred;
}

/** Bytes of a large frame looked at before giving up on finding its value and buffering it whole. */
const MAX_HEAD_BYTES = 64 * 1024;

/** First allocation for the bytes of a frame kept whole; doubles up to the frame's length. */
const INITIAL_BUFFER_BYTES = 64 * 1024;

/**
 * One large frame read as it arrives. Its first bytes are kept until they
 * show a set's key and the value's length (see {@link scanValueHead}); from
 * there the value's bytes go straight to the store's sink, and the socket
 * is paused whenever the sink's window is full. The few bytes after the
 * value are kept and checked at the end, when the set is committed.
 *
 * A frame of any other shape (the value before the key, say) is kept
 * whole, as if small, and answered by the dispatcher at its end. A set the
 * dispatcher refuses (a key or value too long) drops its bytes and answers
 * the refusal at the end, the connection staying open.
 */
export class StreamedSet implements FrameStream {
  readonly #host: StreamedSetHost;
  /** Whom the frame is answered for: what it may do, and how a frame kept whole is answered. */
  readonly #caller: StreamedSetCaller;
  readonly #length: number;
  readonly #ready: () => void;
  readonly #cancel: Cancel | undefined;
  #state: "head" | "whole" | "value" | "drop" = "head";
  /** Bytes received so far. */
  #received = 0;
  /** The frame's bytes while its head is read or when it is kept whole. */
  #buffer: Uint8Array | null;
  #layout: SetLayout | undefined;
  #sink: ValueSink | undefined;
  #trailer: Uint8Array | undefined;
  #refusal: KvError | undefined;
  #started = 0;

  constructor(host: StreamedSetHost, caller: StreamedSetCaller, length: number, ready: () => void, cancel?: Cancel) {
    this.#host = host;
    this.#caller = caller;
    this.#length = length;
    this.#ready = ready;
    this.#cancel = cancel;
    this.#buffer = new Uint8Array(Math.min(length, INITIAL_BUFFER_BYTES));
  }

  get heldBytes(): number {
    return (this.#buffer?.length ?? 0) + (this.#sink?.heldBytes ?? 0) + (this.#trailer?.length ?? 0);
  }

  write(piece: Uint8Array): boolean {
    const at = this.#received;
    this.#received += piece.length;
    switch (this.#state) {
      case "whole":
        this.#keep(piece, at);
        return false;
      case "drop":
        return false;
      case "value":
        return this.#value(piece, at);
      case "head":
        return this.#head(piece, at);
    }
  }

  end(): Answer | Promise<Answer> | Deferred {
    switch (this.#state) {
      case "head":
      case "whole": {
        // Too short to show a value (or not a set): the whole frame, as a small one.
        const frame = this.#buffer as Uint8Array;
        this.#buffer = null;
        return this.#caller.handle(frame);
      }
      case "drop":
        return this.#host.fail("set", this.#refusal as KvError);
      case "value":
        return this.#commit();
    }
  }

  abort(): void {
    this.#sink?.abort();
    this.#buffer = null;
    this.#state = "drop";
  }

  #head(piece: Uint8Array, at: number): boolean {
    this.#keep(piece, at);
    const seen = (this.#buffer as Uint8Array).subarray(0, this.#received);
    const head = scanValueHead(seen, this.#length);
    if (head.kind === "more") {
      if (this.#received > MAX_HEAD_BYTES) this.#state = "whole";
      return false;
    }
    if (head.kind === "buffer") {
      this.#state = "whole";
      return false;
    }
    this.#layout = head;
    this.#buffer = null;
    const refusal = this.#host.refuseSet(head.key, head.valueLength, head.ttlMs, this.#caller.grant);
    if (refusal !== undefined) {
      this.#refusal = refusal;
      this.#state = "drop";
      return false;
    }
    this.#started = performance.now();
    this.#sink = writeValue(this.#host.store, head.key, head.valueLength, this.#cancel, head.ttlMs);
    this.#trailer = new Uint8Array(this.#length - (head.valueStart + head.valueLength));
    this.#state = "value";
    // What of the value (and after it) came with the head goes on as if it had just arrived.
    return this.#value(seen.subarray(head.valueStart), head.valueStart);
  }

  /** Takes bytes at frame offset `at`: the value's to the sink, the rest to the trailer. */
  #value(piece: Uint8Array, at: number): boolean {
    const layout = this.#layout as SetLayout;
    const valueEnd = layout.valueStart + layout.valueLength;
    const split = Math.max(0, Math.min(piece.length, valueEnd - at));
    let full = false;
    if (split > 0) full = !(this.#sink as ValueSink).write(piece.subarray(0, split));
    if (split < piece.length) (this.#trailer as Uint8Array).set(piece.subarray(split), at + split - valueEnd);
    if (full) (this.#sink as ValueSink).ready().then(this.#ready);
    return full;
  }

  /** Copies bytes at frame offset `at` into the buffer, growing it as needed. */
  #keep(piece: Uint8Array, at: number): void {
    let buffer = this.#buffer as Uint8Array;
    const needed = at + piece.length;
    if (needed > buffer.length) {
      const grown = new Uint8Array(Math.min(this.#length, Math.max(needed, buffer.length * 2)));
      grown.set(buffer.subarray(0, at));
      buffer = grown;
      this.#buffer = grown;
    }
    buffer.set(piece, at);
  }

  #commit(): Answer | Promise<Answer> {
    const layout = this.#layout as SetLayout;
    const sink = this.#sink as ValueSink;
    const valueEnd = layout.valueStart + layout.valueLength;
    let wrong: ReturnType<typeof checkSetTrailer>;
    try {
      wrong = checkSetTrailer(
        this.#trailer as Uint8Array,
        layout.dataEnd - valueEnd,
        layout.setReqEnd - layout.dataEnd,
      );
    } catch (err) {
      // Not protobuf: a stream-level error, as for a whole frame; the connection closes.
      sink.abort();
      throw err;
    }
    if (wrong !== undefined) {
      sink.abort();
      return this.#host.fail(wrong.reply, new KvError(ErrorCode.BadRequest, wrong.reason));
    }
    return this.#host.answerSet(sink.end(), this.#started);
  }
}
