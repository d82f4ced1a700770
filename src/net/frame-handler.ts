/**
 * The contract between a connection and what answers its frames: the
 * handler interface, the answers it may give, and the stream a large frame
 * may be taken by. `net/` knows nothing of what frames mean; the protocol
 * layer implements {@link FrameHandler}.
 */

/**
 * An answer written piece by piece: `head`, then the pieces `next` resolves,
 * in order, until it resolves undefined. The pieces must add up to exactly
 * `length` bytes: `head`'s length prefix has promised them. The connection
 * pulls a piece only while its unsent output is under the high-water mark,
 * so a reader that stops reading holds the server to one piece.
 */
export class StreamedAnswer {
  readonly head: Uint8Array;
  readonly length: number;
  /** The next piece, or undefined after the last; a rejection closes the connection. */
  readonly next: () => Promise<Uint8Array | undefined>;
  /** Told when the connection stops pulling early (it closed, or a piece failed). */
  readonly cancel: () => void;
  /** Told when a piece from `next` has been sent (or dropped) and its bytes may be reused. */
  readonly release: (piece: Uint8Array) => void;

  constructor(
    head: Uint8Array,
    length: number,
    next: () => Promise<Uint8Array | undefined>,
    cancel: () => void = () => {},
    release: (piece: Uint8Array) => void = () => {},
  ) {
    this.head = head;
    this.length = length;
    this.next = next;
    this.cancel = cancel;
    this.release = release;
  }
}

/** One response: a frame, possibly in several parts (a large value is its own part), or a streamed one. */
export type Answer = Uint8Array | readonly Uint8Array[] | StreamedAnswer;

/** Room in the output to encode an answer into directly (the connection's writer). */
export interface AnswerSink {
  /** Reserves `n` bytes in {@link stage} and returns their offset, or -1 when the caller must allocate. */
  reserve(n: number): number;
  /** The buffer reserved bytes are in; read it right after `reserve`. */
  readonly stage: Uint8Array;
}

/** What a handler returns when it wrote its answer into the sink itself. */
export const WRITTEN: Uint8Array = new Uint8Array(0);

/**
 * An answer that must not overlap the connection's other requests: it is
 * made (`run` is called) only once every earlier request on the connection
 * has been answered, and no later frame is taken until it has been made.
 * Operations over the whole store (a listing, a clear) use it, so they see
 * the connection's earlier writes and its later requests see their effect.
 */
export class Deferred {
  /** Makes the answer; a promise of one must never reject. */
  readonly run: () => Answer | Promise<Answer>;

  constructor(run: () => Answer | Promise<Answer>) {
    this.run = run;
  }
}

/**
 * One large frame taken as it arrives, instead of assembled whole. The
 * connection writes its body's bytes in order, then asks for its answer.
 */
export interface FrameStream {
  /**
   * Takes the body's next bytes: a view valid only during the call. Returns
   * true when it can take no more for now; it then calls the `ready` it was
   * made with once it can, and the connection reads nothing until then.
   */
  write(bytes: Uint8Array): boolean;
  /** The body is complete: the frame's answer, as {@link FrameHandler.handle} gives one (and may throw as it does). */
  end(): Answer | Promise<Answer> | Deferred;
  /** The connection closed before the body was complete. */
  abort(): void;
  /** Bytes it holds in memory, for the connection's byte budget. */
  readonly heldBytes: number;
}

/**
 * What a connection hands each frame to. `net/` knows nothing of what frames
 * mean: the protocol layer implements this.
 */
export interface FrameHandler {
  /**
   * Answers one frame body: the answer now, or a promise of it. An answer
   * returned synchronously may be a view of a scratch buffer, valid only until
   * the next call: the connection writes or copies it at once. A promised
   * answer owns its bytes, and the promise never rejects by contract.
   * Throwing means the stream cannot be trusted any more (a stream-level
   * error): the connection logs it, answers what it accepted, and closes.
   *
   * `sink` is given only when nothing is ahead of this answer: a synchronous
   * answer may then be encoded straight into it, returning {@link WRITTEN}.
   * `cancel.aborted` turns true when the connection has closed, so work
   * queued for it and not started can be dropped.
   */
  handle(
    frame: Uint8Array,
    sink?: AnswerSink,
    cancel?: { readonly aborted: boolean },
  ): Answer | Promise<Answer> | Deferred;
  /**
   * Asked about each frame of `length` bytes that spans reads: a stream to
   * take it as it arrives, or undefined to have it assembled and handed to
   * `handle`. The stream calls `ready` when it can take more after refusing.
   */
  stream?(length: number, ready: () => void, cancel: { readonly aborted: boolean }): FrameStream | undefined;
}

/**
 * The last frame a connection closed gracefully sends: an empty frame (one
 * zero byte). It tells the client that every request the server read has
 * been answered, so a request still unanswered was never read or applied and
 * can be sent again elsewhere. A crash sends no such frame. No answer is an
 * empty frame: every response envelope has a type.
 */
export const GOODBYE = Uint8Array.of(0);
