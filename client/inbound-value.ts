import { GET_OK_SHAPE, type SetLayout, scanValueHead } from "../src/wire/value-head.js";

/**
 * One large get answer read as it arrives, for `getTo`: its first bytes are
 * kept until they show where the value starts (see `scanValueHead`), and
 * from there the value's bytes go to the sink piece by piece. An answer of
 * another shape (a failure, an unexpected field order) is kept whole and
 * decoded as any other answer.
 *
 * Invariants:
 * - The sink gets exactly the value's bytes, in order, once each.
 * - A sink that throws or rejects gets nothing more; the failure is kept
 *   for the call to reject with once the answer has been read.
 */
export class InboundValue {
  readonly #length: number;
  readonly #sink: (piece: Uint8Array) => void | Promise<void>;
  /** The answer's bytes until its value is found, or all of them if it has an unexpected shape. */
  #head: Uint8Array;
  #received = 0;
  #layout: SetLayout | undefined;
  #whole = false;
  /** What the sink threw or rejected with, if it did. */
  failure: unknown;

  constructor(length: number, sink: (piece: Uint8Array) => void | Promise<void>) {
    this.#length = length;
    this.#sink = sink;
    this.#head = new Uint8Array(Math.min(length, 4096));
  }

  /** Whether the value went to the sink; if not, {@link whole} is the answer to decode. */
  get streamed(): boolean {
    return this.#layout !== undefined;
  }

  /** The whole answer, when it was not streamed. */
  get whole(): Uint8Array {
    return this.#head;
  }

  /** Takes the answer's next bytes (a view valid during the call); a promise while the sink is busy. */
  take(bytes: Uint8Array): void | Promise<void> {
    const at = this.#received;
    this.#received += bytes.length;
    if (this.#layout !== undefined) return this.#toSink(bytes, at);
    if (at + bytes.length > this.#head.length) {
      const grown = new Uint8Array(Math.min(this.#length, Math.max(at + bytes.length, this.#head.length * 2)));
      grown.set(this.#head.subarray(0, at));
      this.#head = grown;
    }
    this.#head.set(bytes, at);
    if (this.#whole) return;
    const head = scanValueHead(this.#head.subarray(0, this.#received), this.#length, GET_OK_SHAPE);
    if (head.kind === "buffer") this.#whole = true;
    else if (head.kind === "stream") {
      this.#layout = head;
      const pending = this.#toSink(this.#head.subarray(head.valueStart, this.#received), head.valueStart);
      this.#head = new Uint8Array(0);
      return pending;
    }
  }

  /** Hands the value's part of `bytes` (at answer offset `at`) to the sink; a sink that failed gets no more. */
  #toSink(bytes: Uint8Array, at: number): void | Promise<void> {
    const layout = this.#layout as SetLayout;
    const take = Math.min(bytes.length, layout.valueStart + layout.valueLength - at);
    if (take <= 0 || this.failure !== undefined) return;
    try {
      const done = this.#sink(bytes.subarray(0, take));
      if (done instanceof Promise) {
        return done.catch((err: unknown) => {
          this.failure ??= err;
        });
      }
    } catch (err) {
      this.failure ??= err;
    }
  }
}
