import { varintSize, writeVarint } from "./varint.js";

/**
 * A protobuf field to write: a varint, a length-delimited byte string, or an
 * embedded message. Fields are written in the order given.
 */
export type Field =
  | { readonly field: number; readonly varint: number }
  | { readonly field: number; readonly bytes: Uint8Array }
  | { readonly field: number; readonly message: readonly Field[] };

/** Byte strings at least this long go out as their own part, uncopied. */
const OWN_PART_BYTES = 16 * 1024;

/** Encoded size of `fields`, without a length prefix. */
export function messageSize(fields: readonly Field[]): number {
  let size = 0;
  for (const f of fields) {
    const tag = varintSize(f.field << 3);
    if ("varint" in f) size += tag + varintSize(f.varint);
    else {
      const n = "bytes" in f ? f.bytes.length : messageSize(f.message);
      size += tag + varintSize(n) + n;
    }
  }
  return size;
}

/**
 * Encodes a length-prefixed frame of `fields`. Small parts are copied into
 * one buffer; byte strings of {@link OWN_PART_BYTES} or more are returned as
 * their own parts, in order, so a large value is never copied.
 */
export function encodeFrame(fields: readonly Field[]): Uint8Array[] {
  const body = messageSize(fields);
  const total = varintSize(body) + body;
  const own = ownBytes(fields);
  const parts: Uint8Array[] = [];
  let buf = new Uint8Array(total - own);
  let start = 0;
  let pos = writeVarint(buf, 0, body);
  const write = (list: readonly Field[]): void => {
    for (const f of list) {
      if ("varint" in f) {
        pos = writeVarint(buf, pos, (f.field << 3) | 0);
        pos = writeVarint(buf, pos, f.varint);
      } else if ("bytes" in f) {
        pos = writeVarint(buf, pos, (f.field << 3) | 2);
        pos = writeVarint(buf, pos, f.bytes.length);
        if (f.bytes.length >= OWN_PART_BYTES) {
          parts.push(buf.subarray(start, pos), f.bytes);
          buf = buf.subarray(pos);
          start = 0;
          pos = 0;
        } else {
          buf.set(f.bytes, pos);
          pos += f.bytes.length;
        }
      } else {
        pos = writeVarint(buf, pos, (f.field << 3) | 2);
        pos = writeVarint(buf, pos, messageSize(f.message));
        write(f.message);
      }
    }
  };
  write(fields);
  if (pos > start) parts.push(buf.subarray(start, pos));
  return parts;
}

function ownBytes(fields: readonly Field[]): number {
  let n = 0;
  for (const f of fields) {
    if ("bytes" in f && f.bytes.length >= OWN_PART_BYTES) n += f.bytes.length;
    else if ("message" in f) n += ownBytes(f.message);
  }
  return n;
}

/** {@link encodeFrame} as one buffer, for frames known to be small. */
export function encodeSmallFrame(fields: readonly Field[]): Uint8Array {
  const parts = encodeFrame(fields);
  if (parts.length === 1) return parts[0] as Uint8Array;
  return Buffer.concat(parts);
}
