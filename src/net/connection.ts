import type { Logger } from "../log.js";
import { Counter, type Counters } from "../metrics.js";
import { ErrorCode, errorMessage, isKvError } from "../wire/errors.js";
import { type FrameConsumer, FrameDecoder, FrameMode } from "../wire/frame-decoder.js";
import { SocketWriter } from "../wire/socket-writer.js";
import { AnswerStream } from "./answer-stream.js";
import {
  BUDGETED_FRAME_BYTES,
  type ConnectionOptions,
  type ConnectionSocket,
  FRAMES_PER_TURN,
} from "./connection-limits.js";
import {
  type Answer,
  Deferred,
  type FrameHandler,
  type FrameStream,
  GOODBYE,
  StreamedAnswer,
} from "./frame-handler.js";

export type { ConnectionOptions, ConnectionSocket } from "./connection-limits.js";
export { FRAMES_PER_TURN } from "./connection-limits.js";

/** Ring slots a connection starts with. */
const INITIAL_RING = 16;

/**
 * One client connection: frames in, answers out, in request order.
 *
 * Invariants:
 * - Requests are handled as soon as they are decoded (pipelining), and
 *   answers are written strictly in request order.
 * - Backpressure is decided per frame: once `maxInFlight` requests are
 *   unanswered or `highWaterBytes` of answers are unsent, the decoder stops
 *   after that frame (the rest of the read is held, not parsed) and the socket
 *   is paused; both resume below half of each limit. So requests in flight
 *   never exceed `maxInFlight`, whatever the size of a read. With a shared
 *   {@link InFlightShare}, a connection past its `minShare` also stops while
 *   the listener's total is at its pool (see in-flight-share.ts). After
 *   {@link FRAMES_PER_TURN} frames from one read it pauses until the event
 *   loop's next turn (setImmediate), so other sockets are served between.
 * - Answers that are not ready wait in a ring indexed by request sequence
 *   number (at most `maxInFlight` live entries): no object per request. An answer ready at once
 *   with nothing ahead of it is written directly.
 * - A stream-level error logs one line, stops reading, answers what was
 *   already accepted, then closes. Nothing else is affected.
 * - Once the socket has closed, nothing more is handed to the handler, and
 *   frames held unparsed are dropped. A write that finds the socket gone
 *   closes the connection as the `close` event would: Bun may not report a
 *   paused socket's reset otherwise, and the frames it held would be run
 *   for nobody.
 * - A {@link Deferred} answer runs once every request before it is
 *   answered, and the decoder takes no frame after it until it is answered;
 *   one that has not started when the socket closes never runs.
 */
export class Connection {
  /** A number for log lines, unique within its listener (0 when none was given). */
  readonly id: number;
  readonly #socket: ConnectionSocket;
  readonly #handler: FrameHandler;
  readonly #log: Logger;
  readonly #counters: Counters;
  readonly #options: ConnectionOptions;
  readonly #decoder: FrameDecoder;
  readonly #writer: SocketWriter;
  /**
   * Answers by sequence number modulo its length; undefined while pending.
   * It starts small and doubles as requests in flight grow, up to
   * `maxInFlight` rounded up to a power of two, so an idle connection costs little.
   */
  #ring: (Answer | undefined)[] = new Array(INITIAL_RING).fill(undefined);
  #mask = INITIAL_RING - 1;
  /** Sequence number of the oldest unanswered request. */
  #head = 0;
  /** Sequence number the next request gets. */
  #tail = 0;
  /** The streamed answer being written: no later answer is written until it ends. */
  #streaming: AnswerStream | null = null;
  /** The Deferred answer waiting for earlier ones, or running; the decoder is stopped after it. */
  #deferred: { readonly seq: number; readonly answer: Deferred; started: boolean } | null = null;
  /** The large frame being taken as it arrives, if any. */
  #inbound: FrameStream | null = null;
  /** The inbound stream refused more and has not called ready yet. */
  #inboundBlocked = false;
  /** Waiting for the byte budget to let this connection read on. */
  #budgetBlocked = false;
  /** What this connection has counted in the byte budget. */
  #charged = 0;
  /** Large frames read and not yet answered, by sequence number, and their total. */
  readonly #largeFrames = new Map<number, number>();
  #largeFrameBytes = 0;
  #paused = false;
  /** Frames taken since the last data event or turn; at {@link FRAMES_PER_TURN}, the connection yields. */
  #turnFrames = 0;
  /** Yielded: reading waits for the event loop's next turn. */
  #yielded = false;
  #closing = false;
  /** Closing by {@link shutdown}: the last bytes sent are {@link GOODBYE}. */
  #graceful = false;
  #closed = false;
  readonly #done = Promise.withResolvers<void>();

  constructor(
    socket: ConnectionSocket,
    handler: FrameHandler,
    log: Logger,
    counters: Counters,
    options: ConnectionOptions,
    id = 0,
  ) {
    this.id = id;
    if (!Number.isInteger(options.maxInFlight) || options.maxInFlight < 1) {
      throw new RangeError(`maxInFlight must be a positive integer, got ${options.maxInFlight}`);
    }
    this.#socket = socket;
    this.#handler = handler;
    this.#log = log;
    this.#counters = counters;
    this.#options = options;
    this.#decoder = new FrameDecoder(options.maxFrameBytes);
    this.#writer = new SocketWriter(socket, {
      onIdle: () => this.#afterProgress(),
      onWritten: (bytes) => counters.add(Counter.bytesOut, bytes),
      onGone: () => this.#gone(),
    });
    this.#consumer = { frame: this.#onFrame, begin: this.#begin, piece: this.#piece };
  }

  readonly #consumer: FrameConsumer;

  /** Requests accepted and not yet answered. */
  get inFlight(): number {
    return this.#tail - this.#head;
  }

  /** Whether the connection owes anything: requests unanswered, answers unsent or requests read and not parsed. */
  get busy(): boolean {
    return this.inFlight > 0 || this.#writer.pendingBytes > 0 || this.#decoder.heldBytes > 0;
  }

  /** True once the socket has closed: the connection is its requests' cancel signal. */
  get aborted(): boolean {
    return this.#closed;
  }

  /** Settles when the socket has closed. */
  get closed(): Promise<void> {
    return this.#done.promise;
  }

  /** Socket `data` event. */
  onData(chunk: Uint8Array): void {
    this.#counters.add(Counter.bytesIn, chunk.length);
    if (this.#closing) return;
    if (!this.#yielded) this.#turnFrames = 0;
    try {
      this.#decoder.push(chunk, this.#consumer);
    } catch (err) {
      this.#streamError(err);
      return;
    }
    if (this.#droppedAfterClose()) return;
    this.#checkBudget();
  }

  /** Socket `drain` event. */
  onDrain(): void {
    this.#writer.drain();
  }

  /** Socket `close` event. */
  onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing = true;
    this.#decoder.discard();
    this.#writer.close();
    this.#ring.fill(undefined);
    this.#deferred = null;
    this.#stopStreaming();
    this.#inbound?.abort();
    this.#inbound = null;
    this.#largeFrames.clear();
    this.#largeFrameBytes = 0;
    // Its requests in flight are all it counted into the share (see #share), and it counts nothing more.
    this.#options.share?.add(-this.inFlight);
    const budget = this.#options.budget;
    if (budget !== undefined) {
      budget.release(this);
      budget.add(-this.#charged);
      this.#charged = 0;
    }
    this.#done.resolve();
  }

  /**
   * Whether the connection closed during the parse that just returned (see
   * {@link #gone}): the decoder, stopped by the closed connection, held the
   * rest of the read again, and it is dropped now.
   */
  #droppedAfterClose(): boolean {
    if (!this.#closed) return false;
    this.#decoder.discard();
    return true;
  }

  /**
   * A write found the socket gone before Bun reported its close, as it may
   * for a paused socket whose peer reset it: closes now, as the `close`
   * event would, so the requests it holds unparsed and those queued for it
   * are dropped instead of run for nobody.
   */
  #gone(): void {
    if (this.#closed) return;
    this.#log.debug("socket gone before its close was reported", { conn: this.id });
    this.onClose();
    this.#socket.terminate();
  }

  /**
   * Graceful close: take no new requests, answer every request already read
   * (including any held unparsed under backpressure), flush, then end the
   * socket. Settles when the socket has closed. With `goodbye` (a server
   * draining), {@link GOODBYE} follows the last answer, so the client knows
   * that what is unanswered was not read.
   *
   * The socket goes on reading, and what arrives is dropped: a paused
   * socket does not report a peer's reset until it is resumed, so a peer
   * gone mid-drain would otherwise have every request it had queued run
   * against the store for nobody, and hold up the drain meanwhile.
   */
  shutdown(goodbye = false): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      this.#graceful = goodbye;
      if (this.#paused) {
        this.#paused = false;
        this.#socket.resume();
      }
      this.#afterProgress();
    }
    return this.#done.promise;
  }

  /** Ends the socket now, dropping unanswered requests. */
  destroy(): void {
    this.#closing = true;
    this.#decoder.discard();
    this.#writer.close();
    this.#socket.end();
  }

  /** Handles one frame; returns true to stop the decoder after it. */
  readonly #onFrame = (frame: Uint8Array): boolean => {
    // Closed from inside this read (see #gone): nothing more is handled.
    if (this.#closed) return true;
    const seq = this.#nextSeq();
    let answer: Answer | Promise<Answer> | Deferred;
    try {
      answer = this.#handler.handle(frame, seq === this.#head ? this.#writer : undefined, this);
    } catch (err) {
      this.#tail--;
      this.#share(-1);
      throw err;
    }
    if (frame.length >= BUDGETED_FRAME_BYTES) this.#holdLarge(seq, frame.length);
    return this.#place(seq, answer);
  };

  /** A frame spanning reads begins: taken as it arrives if the handler streams it, else assembled. */
  readonly #begin = (length: number): FrameMode => {
    if (this.#handler.stream === undefined) return FrameMode.buffer;
    let stream: FrameStream | undefined;
    const ready = () => {
      if (this.#inbound !== stream || !this.#inboundBlocked) return;
      this.#inboundBlocked = false;
      this.#afterProgress();
    };
    stream = this.#handler.stream(length, ready, this);
    if (stream === undefined) return FrameMode.buffer;
    this.#counters.add(Counter.streamedFrames);
    this.#inbound = stream;
    return FrameMode.stream;
  };

  /** A piece of the inbound stream's frame; its last piece makes the frame's answer. */
  readonly #piece = (bytes: Uint8Array, last: boolean): boolean => {
    if (this.#closed) return true;
    const stream = this.#inbound as FrameStream;
    const full = stream.write(bytes);
    if (!last) {
      if (full) {
        this.#inboundBlocked = true;
        this.#pauseSocket();
      }
      return full;
    }
    this.#inbound = null;
    const seq = this.#nextSeq();
    // What the stream holds (a frame kept whole, or a window of chunks) counts until the answer.
    const held = stream.heldBytes;
    let answer: Answer | Promise<Answer> | Deferred;
    try {
      answer = stream.end();
    } catch (err) {
      this.#tail--;
      this.#share(-1);
      throw err;
    }
    if (held > 0) this.#holdLarge(seq, held);
    return this.#place(seq, answer);
  };

  /** Counts a request and gives it the next sequence number, growing the ring if it is full. */
  #nextSeq(): number {
    this.#counters.add(Counter.requests);
    if (this.#tail - this.#head >= this.#ring.length) this.#growRing();
    this.#turnFrames++;
    this.#share(1);
    return this.#tail++;
  }

  /** Puts request `seq`'s answer in line; returns true to stop the decoder after it. */
  #place(seq: number, answer: Answer | Promise<Answer> | Deferred): boolean {
    if (answer instanceof Deferred) {
      this.#deferred = { seq, answer, started: false };
      // Not from inside the decoder's callback: answering resumes the decoder.
      if (seq === this.#head) queueMicrotask(() => this.#runDeferred());
      this.#mustPause();
      return true;
    }
    if (answer instanceof Promise) {
      answer.then((a) => this.#complete(seq, a), this.#onBroken);
    } else if (answer instanceof StreamedAnswer) {
      this.#complete(seq, answer);
    } else if (seq === this.#head) {
      // Nothing ahead of it: written (copied into the writer's stage) at once; WRITTEN is empty.
      this.#write(answer);
      this.#advance();
    } else {
      this.#ring[seq & this.#mask] = copyOf(answer);
    }
    return this.#mustPause();
  }

  /** Counts a large frame's bytes against the budget until request `seq` is answered. */
  #holdLarge(seq: number, bytes: number): void {
    this.#largeFrames.set(seq, bytes);
    this.#largeFrameBytes += bytes;
  }

  /** The request at the head of the line is answered: move to the next. */
  #advance(): void {
    if (this.#largeFrames.size > 0) {
      const bytes = this.#largeFrames.get(this.#head);
      if (bytes !== undefined) {
        this.#largeFrames.delete(this.#head);
        this.#largeFrameBytes -= bytes;
      }
    }
    this.#head++;
    this.#share(-1);
  }

  /** Counts requests in or out of the listener's shared total, beside every change to {@link inFlight}, while open. */
  #share(n: number): void {
    if (!this.#closed) this.#options.share?.add(n);
  }

  /** Doubles the ring, moving each pending or ready answer to its slot under the new mask. */
  #growRing(): void {
    const old = this.#ring;
    const oldMask = this.#mask;
    const ring: (Answer | undefined)[] = new Array(old.length * 2).fill(undefined);
    const mask = ring.length - 1;
    for (let seq = this.#head; seq < this.#tail; seq++) ring[seq & mask] = old[seq & oldMask];
    this.#ring = ring;
    this.#mask = mask;
  }

  /** Runs the Deferred answer, whose turn has come: every request before it is answered. */
  #runDeferred(): void {
    const deferred = this.#deferred;
    if (deferred === null || deferred.started || this.#closed) return;
    deferred.started = true;
    let answer: Answer | Promise<Answer>;
    try {
      answer = deferred.answer.run();
    } catch (err) {
      this.#broken(err);
      return;
    }
    if (answer instanceof Promise) {
      answer.then((a) => this.#complete(deferred.seq, a), this.#onBroken);
    } else this.#complete(deferred.seq, answer);
  }

  #complete(seq: number, answer: Answer): void {
    if (this.#closed) return;
    this.#ring[seq & this.#mask] = answer;
    if (seq === this.#head) this.#release();
  }

  /** Writes every ready answer at the head of the ring, in order; a streamed one holds the rest back until it ends. */
  #release(): void {
    const ring = this.#ring;
    const mask = this.#mask;
    while (this.#head < this.#tail && this.#streaming === null) {
      const answer = ring[this.#head & mask];
      if (answer === undefined) break;
      ring[this.#head & mask] = undefined;
      if (answer instanceof StreamedAnswer) {
        this.#startStreaming(answer);
        break;
      }
      this.#write(answer);
      if (this.#deferred?.seq === this.#head) this.#deferred = null;
      this.#advance();
    }
    if (this.#streaming === null && this.#deferred?.seq === this.#head) this.#runDeferred();
    this.#afterProgress();
  }

  #write(answer: Uint8Array | readonly Uint8Array[]): void {
    if (answer instanceof Uint8Array) this.#writer.write(answer);
    else for (const part of answer) this.#writer.write(part);
  }

  /** Writes a streamed answer's head and starts pulling its pieces; the head of the ring stays on it until it ends. */
  #startStreaming(answer: StreamedAnswer): void {
    const stream = new AnswerStream(answer, this.#writer, this.#options.highWaterBytes, {
      ended: () => {
        this.#streaming = null;
        if (this.#deferred?.seq === this.#head) this.#deferred = null;
        this.#advance();
        this.#release();
      },
      broken: (err) => this.#streamBroken(err),
    });
    this.#streaming = stream;
    stream.start();
  }

  /**
   * A streamed answer failed midway: its length prefix promised bytes that
   * cannot be sent, so nothing after it can be framed. Close the connection.
   */
  #streamBroken(err: unknown): void {
    this.#log.warn("closing connection: a streamed answer failed midway", {
      reason: errorMessage(err),
      code: isKvError(err) ? err.code : undefined,
      conn: this.id,
    });
    this.#stopStreaming();
    this.destroy();
  }

  #stopStreaming(): void {
    this.#streaming?.stop();
    this.#streaming = null;
  }

  #mustPause(): boolean {
    if (this.#turnFrames >= FRAMES_PER_TURN && !this.#closing) {
      if (!this.#yielded) {
        this.#yielded = true;
        setImmediate(this.#endTurn);
      }
      this.#pauseSocket();
      return true;
    }
    if (this.#deferred === null && this.#belowLimits()) return false;
    this.#pauseSocket();
    return true;
  }

  /** Whether another frame may be taken: requests in flight, the listener's share and unsent bytes all allow it. */
  #belowLimits(): boolean {
    return (
      this.inFlight < this.#options.maxInFlight &&
      (this.#options.share?.mayTake(this.inFlight) ?? true) &&
      this.#writer.pendingBytes < this.#options.highWaterBytes
    );
  }

  /** Stops reading the socket; never while closing, when what arrives is dropped and a reset must be seen (see {@link shutdown}). */
  #pauseSocket(): void {
    if (!this.#paused && !this.#closing) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  /**
   * Brings the byte budget up to date with what this connection holds, and,
   * if it is in the middle of a frame, asks whether it may read on; if not,
   * pauses the socket until the budget wakes it.
   */
  #checkBudget(): void {
    const budget = this.#options.budget;
    if (budget === undefined || this.#closed) return;
    const held =
      this.#decoder.assemblyBytes + (this.#inbound?.heldBytes ?? 0) + this.#largeFrameBytes + this.#writer.pendingBytes;
    if (held !== this.#charged) {
      budget.add(held - this.#charged);
      this.#charged = held;
    }
    if (this.#decoder.idle) {
      if (budget.holder === this) budget.release(this);
      return;
    }
    if (this.#budgetBlocked || budget.admit(this, this.#budgetWake, this.#budgetEvict)) return;
    this.#budgetBlocked = true;
    this.#counters.add(Counter.budgetPauses);
    this.#pauseSocket();
  }

  /** Held the byte budget on one frame for too long while others waited: a trickling client. */
  readonly #budgetEvict = (): void => {
    if (this.#closed) return;
    this.#log.warn("closing connection: it held the byte budget on one frame while others waited", {
      conn: this.id,
      limitMs: this.#options.budget?.holdLimitMs,
    });
    this.destroy();
  };

  /** The event loop came round: read on, with a fresh count. */
  readonly #endTurn = (): void => {
    this.#yielded = false;
    this.#turnFrames = 0;
    this.#afterProgress(true);
  };

  readonly #budgetWake = (): void => {
    this.#budgetBlocked = false;
    this.#afterProgress();
  };

  /**
   * Reads on if the limits allow: below half of each after a limit stopped
   * reading, or (`turnEnded`, the connection only yielded) below each.
   */
  #afterProgress(turnEnded = false): void {
    if (this.#closed) return;
    this.#streaming?.pull();
    const { maxInFlight, highWaterBytes } = this.#options;
    if (
      this.#deferred === null &&
      !this.#inboundBlocked &&
      !this.#budgetBlocked &&
      !this.#yielded &&
      (turnEnded
        ? this.#belowLimits()
        : this.inFlight <= maxInFlight / 2 &&
          (this.#options.share?.mayResume(this.inFlight) ?? true) &&
          this.#writer.pendingBytes <= highWaterBytes / 2)
    ) {
      let pausedAgain = false;
      if (this.#decoder.heldBytes > 0) {
        try {
          pausedAgain = this.#decoder.resume(this.#consumer);
        } catch (err) {
          this.#streamError(err);
          return;
        }
        if (this.#droppedAfterClose()) return;
      }
      this.#checkBudget();
      if (pausedAgain) return;
      if (this.#paused && !this.#closing && !this.#budgetBlocked) {
        this.#paused = false;
        this.#socket.resume();
      }
    } else this.#checkBudget();
    if (this.#closing && this.inFlight === 0 && this.#decoder.heldBytes === 0) {
      this.#writer.flush();
      if (this.#writer.pendingBytes === 0) {
        // Best effort, after every answer: never waited for, so a socket that takes nothing (a TLS
        // handshake never finished) still closes. Without it the client just sees the close.
        if (this.#graceful) this.#socket.write(GOODBYE);
        this.#socket.end();
      }
    }
  }

  #streamError(err: unknown): void {
    this.#decoder.discard();
    if (isKvError(err)) {
      this.#counters.add(Counter.protocolErrors);
      this.#log.warn("closing connection", {
        code: err.code,
        reason: err.message,
        remote: this.#socket.remoteAddress,
        conn: this.id,
      });
    } else {
      // Not the peer's fault: a bug in this server. Say so, loudly.
      this.#log.error("closing connection after an internal error", {
        code: ErrorCode.ServerInternal,
        reason: errorMessage(err),
        conn: this.id,
      });
    }
    this.shutdown();
  }

  /** {@link #broken} as one function per connection, not one per request waiting on its answer. */
  readonly #onBroken = (err: unknown): void => this.#broken(err);

  /** A handler promise rejected, which its contract forbids: no answer can be made in order, so close. */
  #broken(err: unknown): void {
    if (this.#closed) return;
    this.#log.error("closing connection: an answer failed", { reason: errorMessage(err), conn: this.id });
    this.destroy();
  }
}

/** A synchronous answer may be a scratch view: one that must wait is copied. */
function copyOf(answer: Answer): Answer {
  if (answer instanceof StreamedAnswer) return answer;
  return answer instanceof Uint8Array ? answer.slice() : answer.map((p) => p.slice());
}
