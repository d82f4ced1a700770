import { ErrorCode, KvError } from "./errors.js";

/** Protobuf wire types. */
export const Wire = { varint: 0, fixed64: 1, bytes: 2, startGroup: 3, endGroup: 4, fixed32: 5 } as const;

/** Nesting allowed for groups being skipped, as in protobuf's own parsers. */
const MAX_GROUP_DEPTH = 64;

function malformed(reason: string): KvError {
  return new KvError(ErrorCode.BadEnvelope, reason);
}

/**
 * A minimal protobuf reader over a byte view: the few operations the codec
 * needs, without the DataView and text decoder a general reader allocates per
 * message. Every read is bounds-checked and throws `KV_ERR_BAD_ENVELOPE`.
 * Fields are read by the caller in a loop: `while (r.more()) { r.tag(); ... }`.
 */
export class WireReader {
  pos: number;
  readonly #buf: Uint8Array;
  readonly #end: number;
  /** Field number and wire type of the last tag read. */
  field = 0;
  wire = 0;

  constructor(buf: Uint8Array, start = 0, end = buf.length) {
    this.#buf = buf;
    this.pos = start;
    this.#end = end;
  }

  more(): boolean {
    return this.pos < this.#end;
  }

  /** Reads a varint of up to 10 bytes as a number (exact below 2^53; wider values are only skipped). */
  varint(): number {
    const buf = this.#buf;
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.#end) throw malformed("truncated varint");
      const b = buf[this.pos++] as number;
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
    throw malformed("varint longer than 10 bytes");
  }

  /**
   * Reads an int32 field: its low 32 bits, two's complement, as protobuf
   * does (a negative int32 is a 10-byte varint whose value a double cannot hold).
   */
  int32(): number {
    const buf = this.#buf;
    let low = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.#end) throw malformed("truncated varint");
      const b = buf[this.pos++] as number;
      // Shifts wrap at 32 bits, so the fifth byte contributes only its low 4 bits.
      if (i < 5) low |= (b & 0x7f) << (7 * i);
      if (b < 0x80) return low | 0;
    }
    throw malformed("varint longer than 10 bytes");
  }

  /** Reads a tag into `field` and `wire`. */
  tag(): void {
    const t = this.varint();
    if (t > 0xffff_ffff) throw malformed("tag overflows uint32");
    this.field = Math.floor(t / 8);
    this.wire = t % 8;
    if (this.field === 0 || this.wire > 5) throw malformed(`illegal tag: field ${this.field}, wire type ${this.wire}`);
  }

  /** Reads a length-delimited field as a view of the buffer. */
  bytes(): Uint8Array {
    const len = this.varint();
    const start = this.pos;
    if (len > this.#end - start) throw malformed("length-delimited field runs past its message");
    this.pos = start + len;
    return this.#buf.subarray(start, this.pos);
  }

  /** Reads a length-delimited field as a reader over it, without creating a view. */
  message(): WireReader {
    const len = this.varint();
    const start = this.pos;
    if (len > this.#end - start) throw malformed("length-delimited field runs past its message");
    this.pos = start + len;
    return new WireReader(this.#buf, start, this.pos);
  }

  /** Skips the value of the field whose tag was just read. */
  skip(depth = 0): void {
    switch (this.wire) {
      case Wire.varint:
        this.varint();
        return;
      case Wire.fixed64:
        this.#advance(8);
        return;
      case Wire.fixed32:
        this.#advance(4);
        return;
      case Wire.bytes:
        this.bytes();
        return;
      case Wire.startGroup: {
        if (depth >= MAX_GROUP_DEPTH) throw malformed("groups nested too deeply");
        const field = this.field;
        for (;;) {
          if (!this.more()) throw malformed("unterminated group");
          this.tag();
          if ((this.wire as number) === Wire.endGroup) {
            if (this.field !== field) throw malformed("mismatched end-group tag");
            return;
          }
          this.skip(depth + 1);
        }
      }
      default:
        throw malformed(`unexpected wire type ${this.wire}`);
    }
  }

  #advance(n: number): void {
    if (n > this.#end - this.pos) throw malformed("truncated fixed-width field");
    this.pos += n;
  }
}
