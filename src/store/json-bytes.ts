import { base64Into, base64Length, toBase64 } from "../bytes.js";
import { BufferPool } from "../wire/buffer-pool.js";

const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/** Text up to this long is written char by char (see `raw`). */
const SHORT_TEXT = 256;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Binary values at least this long are base64-encoded straight into the body, not through a string. */
const DIRECT_BASE64_BYTES = 2048;

/**
 * Bodies of 64 KiB and more are kept when released, 8 at most: a few windows
 * of large-value chunks in flight. A new body starts at 512 bytes.
 */
const pool = new BufferPool(512, 8, 64 * 1024);

/**
 * A JSON request body written as UTF-8 bytes, for the data client.
 *
 * Why bytes and not a string: a chunk of a large value is about 500 KB of
 * base64. As strings, each chunk became several such copies (the base64
 * text, the body, the signer's and fetch's UTF-8 copies), and JSC collects
 * large strings lazily, so a large transfer peaked far above its window. Here a large binary value is encoded once, into a buffer that
 * is reused from call to call.
 *
 * Invariant: a buffer is back in the pool only after {@link release}, which
 * the client calls once the call has an answer: by then the body has been
 * sent and nothing reads it. A body whose call failed in transit is not
 * released (the transport might still hold it) and is left to the collector.
 */
export class JsonBytes {
  #buf: Uint8Array;
  #len = 0;

  constructor() {
    this.#buf = pool.take();
  }

  /** Appends `text` as UTF-8: JSON punctuation and literals, or text already escaped. */
  raw(text: string): this {
    const n = text.length;
    if (n <= SHORT_TEXT) {
      // Short ASCII is copied char by char: a subarray and an encodeInto per piece cost more than the piece.
      this.#reserve(n);
      const buf = this.#buf;
      let p = this.#len;
      for (let i = 0; i < n; i++) {
        const c = text.charCodeAt(i);
        if (c >= 0x80) return this.#utf8(text);
        buf[p++] = c;
      }
      this.#len = p;
      return this;
    }
    return this.#utf8(text);
  }

  /** Appends `text` as a JSON string literal. */
  string(text: string): this {
    const n = text.length;
    if (n <= SHORT_TEXT) {
      // Printable ASCII without a quote or backslash needs no escape.
      this.#reserve(n + 2);
      const buf = this.#buf;
      let p = this.#len;
      buf[p++] = QUOTE;
      for (let i = 0; i < n; i++) {
        const c = text.charCodeAt(i);
        if (c < 0x20 || c >= 0x80 || c === QUOTE || c === BACKSLASH) return this.#utf8(JSON.stringify(text));
        buf[p++] = c;
      }
      buf[p++] = QUOTE;
      this.#len = p;
      return this;
    }
    return this.#utf8(JSON.stringify(text));
  }

  /** Appends the base64 text of `bytes`, without quotes. */
  base64(bytes: Uint8Array): this {
    if (bytes.length < DIRECT_BASE64_BYTES) return this.raw(toBase64(bytes));
    this.#reserve(base64Length(bytes.length));
    this.#len = base64Into(bytes, this.#buf, this.#len);
    return this;
  }

  /** The bytes written so far: a view, valid until {@link release}. */
  get bytes(): Uint8Array {
    return this.#buf.subarray(0, this.#len);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#len;
  }

  /** Gives the buffer back for reuse; the body must not be read after. */
  release(): void {
    const buf = this.#buf;
    this.#buf = EMPTY;
    this.#len = 0;
    pool.give(buf);
  }

  #utf8(text: string): this {
    this.#reserve(text.length * 3);
    this.#len += encoder.encodeInto(text, this.#buf.subarray(this.#len)).written;
    return this;
  }

  #reserve(more: number): void {
    const need = this.#len + more;
    if (need <= this.#buf.length) return;
    const grown = new Uint8Array(Math.max(need, this.#buf.length * 2));
    grown.set(this.#buf.subarray(0, this.#len));
    this.#buf = grown;
  }
}
