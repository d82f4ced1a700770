/**
 * Byte helpers on the hot path. They use the ES2026 Uint8Array base64 and
 * hex methods, which Bun implements natively, rather than Buffer views:
 * reading a typed array's `.buffer` makes JSC give it a separate ArrayBuffer
 * object per call, a cost the DynamoDB path pays several times per item
 * (docs/performance.md, "The data path: cost and deadlines").
 */
interface Es2026Bytes {
  toHex(): string;
  toBase64(): string;
}
const Es2026 = Uint8Array as unknown as {
  fromBase64(text: string, options?: { alphabet?: "base64" | "base64url" }): Uint8Array;
  fromHex(text: string): Uint8Array;
};

/** A string naming exactly the bytes of `bytes` (hex): a cheap, exact Map key for binary keys. */
export function byteString(bytes: Uint8Array): string {
  return (bytes as unknown as Es2026Bytes).toHex();
}

/** The bytes a {@link byteString} names. */
export function fromByteString(text: string): Uint8Array {
  return Es2026.fromHex(text);
}

/** Base64 text of `bytes`. */
export function toBase64(bytes: Uint8Array): string {
  return (bytes as unknown as Es2026Bytes).toBase64();
}

/** The bytes of base64 `text`; throws a SyntaxError on anything that is not base64. */
export function fromBase64(text: string): Uint8Array {
  return Es2026.fromBase64(text);
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/** Two base64 characters for each 12-bit value, as one little-endian u16 (first character in the low byte). */
const PAIRS = new Uint16Array(4096);
for (let i = 0; i < 4096; i++) PAIRS[i] = ALPHABET.charCodeAt(i >> 6) | (ALPHABET.charCodeAt(i & 63) << 8);
/** The 6-bit value of each base64 character; -1 for anything else. */
const SEXTETS = new Int8Array(256).fill(-1);
for (let i = 0; i < 64; i++) SEXTETS[ALPHABET.charCodeAt(i)] = i;
const PAD = 0x3d;

/** Length of the padded base64 text of `n` bytes. */
export function base64Length(n: number): number {
  return Math.ceil(n / 3) * 4;
}

/**
 * Writes the padded base64 text of `bytes` into `out` at `at` as ASCII and
 * returns the offset after it. `out` must have {@link base64Length} bytes
 * free there. For large values, where a string would be a transient copy
 * several times the value's size (JSC frees large strings lazily).
 */
export function base64Into(bytes: Uint8Array, out: Uint8Array, at: number): number {
  const whole = bytes.length - (bytes.length % 3);
  let o = at;
  for (let i = 0; i < whole; i += 3) {
    const v = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    const hi = PAIRS[v >> 12] as number;
    const lo = PAIRS[v & 4095] as number;
    out[o] = hi & 0xff;
    out[o + 1] = hi >> 8;
    out[o + 2] = lo & 0xff;
    out[o + 3] = lo >> 8;
    o += 4;
  }
  const rest = bytes.length - whole;
  if (rest > 0) {
    const v = ((bytes[whole] as number) << 16) | (rest === 2 ? (bytes[whole + 1] as number) << 8 : 0);
    const hi = PAIRS[v >> 12] as number;
    out[o] = hi & 0xff;
    out[o + 1] = hi >> 8;
    out[o + 2] = rest === 2 ? ALPHABET.charCodeAt((v >> 6) & 63) : PAD;
    out[o + 3] = PAD;
    o += 4;
  }
  return o;
}

/**
 * Decodes the padded base64 text in `text[from..to)` (ASCII bytes) and
 * returns the bytes; throws a SyntaxError on anything that is not padded
 * base64. For large values in a response, read without a string copy.
 */
export function base64FromBytes(text: Uint8Array, from: number, to: number): Uint8Array {
  const length = to - from;
  if (length % 4 !== 0) throw new SyntaxError("base64 text is not a multiple of 4 characters");
  if (length === 0) return new Uint8Array(0);
  const pad = (text[to - 1] === PAD ? 1 : 0) + (text[to - 2] === PAD ? 1 : 0);
  const out = new Uint8Array((length / 4) * 3 - pad);
  const whole = to - (pad > 0 ? 4 : 0);
  let o = 0;
  for (let i = from; i < whole; i += 4) {
    const v =
      ((SEXTETS[text[i] as number] as number) << 18) |
      ((SEXTETS[text[i + 1] as number] as number) << 12) |
      ((SEXTETS[text[i + 2] as number] as number) << 6) |
      (SEXTETS[text[i + 3] as number] as number);
    // A -1 anywhere sets the sign bit.
    if (v < 0) throw new SyntaxError("not base64 text");
    out[o] = v >> 16;
    out[o + 1] = (v >> 8) & 0xff;
    out[o + 2] = v & 0xff;
    o += 3;
  }
  if (pad > 0) {
    const a = SEXTETS[text[whole] as number] as number;
    const b = SEXTETS[text[whole + 1] as number] as number;
    const c = pad === 1 ? (SEXTETS[text[whole + 2] as number] as number) : 0;
    if ((a | b | c) < 0) throw new SyntaxError("not base64 text");
    const v = (a << 18) | (b << 12) | (c << 6);
    out[o] = v >> 16;
    if (pad === 1) out[o + 1] = (v >> 8) & 0xff;
  }
  return out;
}

/**
 * Frees the memory behind `bytes` now rather than at some later collection,
 * by detaching its buffer: every view of that buffer reads as empty after.
 * For a buffer whose only reader is the caller and which it is done with.
 * A view of part of a buffer (which others may hold) is left alone.
 *
 * Why: JSC promotes a buffer that is alive during a young collection, and a
 * promoted buffer's memory waits for a full one. A 64 MiB get decodes ~170
 * chunk ciphertexts of 380 KiB, each alive for a few microtask hops; left
 * to the collector they raise the server's peak (figures in
 * docs/performance.md, *Large values*).
 */
export function discard(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (!(buffer instanceof ArrayBuffer) || buffer.detached) return;
  if (bytes.byteOffset !== 0 || bytes.byteLength !== buffer.byteLength) return;
  buffer.transfer(0);
}

/** Whether `a` and `b` hold the same bytes. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Writes `value` (0..2^32-1) at `at` as a big-endian u32, byte by byte: a
 * DataView over the array would make JSC materialise its ArrayBuffer.
 */
export function writeUint32(out: Uint8Array, at: number, value: number): void {
  out[at] = value >>> 24;
  out[at + 1] = (value >>> 16) & 0xff;
  out[at + 2] = (value >>> 8) & 0xff;
  out[at + 3] = value & 0xff;
}

/** Writes a safe integer `value` at `at` as a big-endian u64: two u32 halves, no BigInt. */
export function writeUint64(out: Uint8Array, at: number, value: number): void {
  writeUint32(out, at, Math.floor(value / 2 ** 32));
  writeUint32(out, at + 4, value >>> 0);
}
