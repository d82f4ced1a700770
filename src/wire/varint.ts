/** Varint helpers for writing protobuf framing (non-negative integers below 2^53). */

/** Number of bytes of the varint encoding of `value`. */
export function varintSize(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x20_0000) return 3;
  if (value < 0x1000_0000) return 4;
  let n = 5;
  for (let v = Math.floor(value / 0x8_0000_0000); v > 0; v = Math.floor(v / 128)) n++;
  return n;
}

/** Writes `value` as a varint into `out` at `pos`; returns the position after it. */
export function writeVarint(out: Uint8Array, pos: number, value: number): number {
  let v = value;
  while (v >= 0x80) {
    out[pos++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  out[pos++] = v;
  return pos;
}
