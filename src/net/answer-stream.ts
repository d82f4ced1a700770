import type { SocketWriter } from "../wire/socket-writer.js";
import type { StreamedAnswer } from "./frame-handler.js";

/** What an {@link AnswerStream} tells its connection. */
export interface AnswerStreamEvents {
  /** Every promised byte was written: the next answer may go. */
  ended(): void;
  /** A piece failed, or the pieces did not add up to the promised length: nothing after it can be framed. */
  broken(err: unknown): void;
}

/**
 * A streamed answer being written: its head, then its pieces, pulled one at
 * a time while the writer holds less than `highWaterBytes`.
 *
 * Invariants:
 * - At most one piece is being pulled at a time; none once stopped.
 * - Exactly the promised length is written, or `broken` is told; `ended`
 *   and `broken` are each told at most once, and never after {@link stop}.
 */
export class AnswerStream {
  readonly #answer: StreamedAnswer;
  readonly #writer: SocketWriter;
  readonly #highWaterBytes: number;
  readonly #events: AnswerStreamEvents;
  #remaining: number;
  #pulling = false;
  #stopped = false;

  constructor(answer: StreamedAnswer, writer: SocketWriter, highWaterBytes: number, events: AnswerStreamEvents) {
    this.#answer = answer;
    this.#writer = writer;
    this.#highWaterBytes = highWaterBytes;
    this.#events = events;
    this.#remaining = answer.length;
  }

  /** Writes the head and pulls the first piece. */
  start(): void {
    this.#writer.write(this.#answer.head);
    this.pull();
  }

  /** Pulls the next piece, unless one is being pulled or the output is at its high-water mark (call again once it drained). */
  pull(): void {
    if (this.#pulling || this.#stopped) return;
    if (this.#writer.pendingBytes >= this.#highWaterBytes) return;
    this.#pulling = true;
    this.#answer.next().then(
      (piece) => {
        this.#pulling = false;
        if (this.#stopped) return;
        if (piece === undefined) {
          if (this.#remaining !== 0)
            return this.#broken(new Error(`a streamed answer ended ${this.#remaining} bytes short`));
          this.#stopped = true;
          this.#events.ended();
          return;
        }
        if (piece.length > this.#remaining) return this.#broken(new Error("a streamed answer overran its length"));
        this.#remaining -= piece.length;
        this.#writer.write(piece, () => this.#answer.release(piece));
        this.pull();
      },
      (err: unknown) => {
        this.#pulling = false;
        if (!this.#stopped) this.#broken(err);
      },
    );
  }

  /** Stops pulling and tells the answer so (the connection closed, or the stream broke). */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    try {
      this.#answer.cancel();
    } catch {
      // A cancel that throws has nothing left to cancel.
    }
  }

  #broken(err: unknown): void {
    this.stop();
    this.#events.broken(err);
  }
}
