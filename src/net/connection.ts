import { ErrorCode, isKvError, KvError } from "../errors.js";
import type { Logger } from "../log.js";
import { Counter, type Counters } from "../metrics.js";
import { decodeRequest } from "../protocol/codec.js";
import type { Dispatcher } from "../protocol/dispatch.js";
import { closesConnection } from "../protocol/error-response.js";
import { FrameDecoder } from "./frame-decoder.js";
import { SocketWriter } from "./socket-writer.js";

/** The part of a Bun socket a connection drives. */
export interface ConnectionSocket {
  write(data: Uint8Array): number;
  pause(): void;
  resume(): void;
  end(): void;
  readonly remoteAddress: string;
}

/** Per-connection limits. */
export interface ConnectionOptions {
  maxFrameBytes: number;
  /** Requests read but not yet answered; past this the socket stops being read. */
  maxInFlight: number;
  /** Unsent response bytes; past this the socket stops being read until `drain`. */
  highWaterBytes: number;
}

/** One response slot in the in-order queue; `parts` is set when its request completes. */
interface Slot {
  parts: Uint8Array[] | null;
}

/**
 * One client connection: frames in, responses out, in request order.
 *
 * Invariants:
 * - Requests are dispatched as soon as they are decoded (pipelining), and
 *   responses are written strictly in request order through one queue.
 * - Reading stops while too many requests are unanswered or too many response
 *   bytes are unsent, and resumes once both fall below half their limits, so a
 *   client that never reads cannot grow server memory without bound.
 * - A stream-level error (bad frame or envelope) logs one line, stops reading,
 *   answers what was already accepted, then closes. Nothing else is affected.
 */
export class Connection {
  readonly #socket: ConnectionSocket;
  readonly #dispatcher: Dispatcher;
  readonly #log: Logger;
  readonly #counters: Counters;
  readonly #options: ConnectionOptions;
  readonly #decoder: FrameDecoder;
  readonly #writer: SocketWriter;
  #slots: Slot[] = [];
  #head = 0;
  #paused = false;
  #closing = false;
  #closed = false;
  readonly #done = Promise.withResolvers<void>();

  constructor(
    socket: ConnectionSocket,
    dispatcher: Dispatcher,
    log: Logger,
    counters: Counters,
    options: ConnectionOptions,
  ) {
    this.#socket = socket;
    this.#dispatcher = dispatcher;
    this.#log = log;
    this.#counters = counters;
    this.#options = options;
    this.#decoder = new FrameDecoder(options.maxFrameBytes);
    this.#writer = new SocketWriter(socket, { onIdle: () => this.#afterProgress() });
  }

  /** Requests accepted and not yet answered. */
  get inFlight(): number {
    return this.#slots.length - this.#head;
  }

  /** Settles when the socket has closed. */
  get closed(): Promise<void> {
    return this.#done.promise;
  }

  /** Socket `data` event. */
  onData(chunk: Uint8Array): void {
    if (this.#closing) return;
    try {
      this.#decoder.push(chunk, this.#onFrame);
    } catch (err) {
      const kvErr = isKvError(err) ? err : new KvError(ErrorCode.BadEnvelope, String(err), { cause: err });
      if (!closesConnection(kvErr)) throw err;
      this.#counters.add(Counter.protocolErrors);
      this.#log.warn("closing connection", {
        code: kvErr.code,
        reason: kvErr.message,
        remote: this.#socket.remoteAddress,
      });
      this.shutdown();
      return;
    }
    this.#applyBackpressure();
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
    this.#writer.close();
    this.#done.resolve();
  }

  /**
   * Graceful close: stop reading, answer every request already accepted,
   * flush, then end the socket. Settles when the socket has closed.
   */
  shutdown(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      this.#socket.pause();
      this.#afterProgress();
    }
    return this.#done.promise;
  }

  /** Ends the socket now, dropping unanswered requests. */
  destroy(): void {
    this.#closing = true;
    this.#writer.close();
    this.#socket.end();
  }

  readonly #onFrame = (frame: Uint8Array): void => {
    const request = decodeRequest(frame);
    this.#counters.add(Counter.requests);
    const slot: Slot = { parts: null };
    this.#slots.push(slot);
    this.#dispatcher.handle(request).then((parts) => {
      slot.parts = parts;
      this.#release();
    });
  };

  /** Writes every completed response at the head of the queue, in order. */
  #release(): void {
    if (this.#closed) return;
    const slots = this.#slots;
    let head = this.#head;
    while (head < slots.length) {
      const parts = (slots[head] as Slot).parts;
      if (parts === null) break;
      for (const part of parts) this.#writer.write(part);
      head++;
    }
    if (head === slots.length) {
      this.#slots = [];
      this.#head = 0;
    } else if (head > 1024 && head * 2 > slots.length) {
      this.#slots = slots.slice(head);
      this.#head = 0;
    } else {
      this.#head = head;
    }
    this.#afterProgress();
  }

  #applyBackpressure(): void {
    if (this.#paused || this.#closing) return;
    if (this.inFlight >= this.#options.maxInFlight || this.#writer.pendingBytes >= this.#options.highWaterBytes) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #afterProgress(): void {
    if (this.#closed) return;
    if (this.#closing) {
      if (this.inFlight === 0) {
        this.#writer.flush();
        if (this.#writer.pendingBytes === 0) this.#socket.end();
      }
      return;
    }
    if (
      this.#paused &&
      this.inFlight <= this.#options.maxInFlight / 2 &&
      this.#writer.pendingBytes <= this.#options.highWaterBytes / 2
    ) {
      this.#paused = false;
      this.#socket.resume();
    } else {
      this.#applyBackpressure();
    }
  }
}
