import type { ReplyKind } from "./envelope.js";
import { ErrorCode, isKvError, KvError } from "./errors.js";
import { Wire, WireReader } from "./wire-reader.js";

/**
 * Where a streamed set's parts lie in its frame: the key, and the value's
 * offset and length, with the ends of the `data` and `set_request`
 * messages that enclose it. Offsets count from the frame body's first byte.
 */
export interface SetLayout {
  /** A copy of the key. */
  readonly key: Uint8Array;
  readonly valueStart: number;
  readonly valueLength: number;
  readonly dataEnd: number;
  readonly setReqEnd: number;
  /** A set's `ttl_ms`, when it came before `req`. */
  readonly ttlMs?: number;
}

/**
 * The shape of a message that carries a `data{key, value}` streamed: its
 * envelope type, the tag of the envelope field holding it, the fields that
 * come first inside that field, and the tag of the `data` field.
 */
export interface ValueShape {
  readonly type: number;
  readonly outerTag: number;
  readonly prefix: readonly (readonly [tag: number, value: number])[];
  /** The tag of a varint field that may come before the data field and is answered as `ttlMs`. */
  readonly ttlTag?: number;
  readonly dataTag: number;
}

/**
 * `req_envelope{type: set_request_t, set_req{[ttl_ms], req{key, value}}}`:
 * as every encoder writes a set, and as kvs-client writes one with a TTL.
 */
export const SET_SHAPE: ValueShape = { type: 1, outerTag: 0x12, prefix: [], ttlTag: 0x20, dataTag: 0x0a };

/** `req_envelope{type: get_response_t, get_resp{error: ok, req{key, value}}}`, as the server writes a streamed get. */
export const GET_OK_SHAPE: ValueShape = { type: 4, outerTag: 0x2a, prefix: [[0x08, 1]], dataTag: 0x12 };

/** What the first bytes of a large frame say about how to read it. */
export type SetHead =
  /** Not enough bytes yet to tell. */
  | { readonly kind: "more" }
  /** Not a set in the streamed shape: buffer the frame and decode it whole. */
  | { readonly kind: "buffer" }
  | ({ readonly kind: "stream" } & SetLayout);

/** Most bytes after a streamed value: its frame's trailing fields are kept and checked at the end. */
export const MAX_SET_TRAILER_BYTES = 64 * 1024;

const MORE: SetHead = { kind: "more" };
const BUFFER: SetHead = { kind: "buffer" };

/** Thrown inside the scan when the head ends before what it needs. */
const SHORT = Symbol("short");

/**
 * Reads the start of a frame of `frameLength` bytes, of which `head` holds
 * the first ones, and finds where its value lies, so that the value can be
 * taken as it arrives instead of buffered whole.
 *
 * Only the shape every protobuf encoder writes is streamed; for a set:
 * `type` = set_request_t first, then `set_req`, whose first field is `req`,
 * whose first field is the key and second the value, with at most
 * {@link MAX_SET_TRAILER_BYTES} after the value. Anything else (the value
 * before the key, other fields first, lengths that do not nest, a malformed
 * varint) answers `buffer`: the frame is then buffered and decoded whole,
 * with the exact semantics of a small frame, errors included.
 *
 * Pure: it does no I/O and keeps no reference to `head`.
 */
export function scanValueHead(head: Uint8Array, frameLength: number, shape: ValueShape = SET_SHAPE): SetHead {
  let pos = 0;
  const varint = (maxBytes = 5): number => {
    let value = 0;
    for (let i = 0; i < maxBytes; i++) {
      if (pos >= head.length) throw SHORT;
      const byte = head[pos++] as number;
      value += (byte & 0x7f) * 2 ** (7 * i);
      if (byte < 0x80) return value;
    }
    return -1; // longer than the field can be: not the streamed shape
  };
  try {
    // req_envelope: type, then the field holding the data (set_req, get_resp).
    if (varint() !== 0x08 || varint() !== shape.type) return BUFFER;
    if (varint() !== shape.outerTag) return BUFFER;
    const setReqLength = varint();
    const setReqEnd = pos + setReqLength;
    if (setReqLength < 0 || setReqEnd > frameLength) return BUFFER;
    // Inside it: the fields that come first (get_response's error), then req.
    for (const [tag, value] of shape.prefix) if (varint() !== tag || varint() !== value) return BUFFER;
    let tag = varint();
    let ttlMs: number | undefined;
    if (shape.ttlTag !== undefined && tag === shape.ttlTag) {
      // Seven bytes hold 2^49 ms, beyond any TTL the store takes; longer ones are decoded whole and refused.
      ttlMs = varint(7);
      if (ttlMs < 0) return BUFFER;
      tag = varint();
    }
    if (tag !== shape.dataTag) return BUFFER;
    const dataLength = varint();
    const dataEnd = pos + dataLength;
    if (dataLength < 0 || dataEnd > setReqEnd) return BUFFER;
    // data: key, then value.
    if (varint() !== 0x0a) return BUFFER;
    const keyLength = varint();
    if (keyLength < 0 || pos + keyLength > dataEnd) return BUFFER;
    if (pos + keyLength > head.length) return MORE;
    const key = head.slice(pos, pos + keyLength);
    pos += keyLength;
    if (varint() !== 0x12) return BUFFER;
    const valueLength = varint();
    const valueStart = pos;
    if (valueLength < 0 || valueStart + valueLength > dataEnd) return BUFFER;
    if (frameLength - (valueStart + valueLength) > MAX_SET_TRAILER_BYTES) return BUFFER;
    const layout = { kind: "stream", key, valueStart, valueLength, dataEnd, setReqEnd } as const;
    return ttlMs === undefined ? layout : { ...layout, ttlMs };
  } catch (err) {
    if (err === SHORT) return MORE;
    throw err;
  }
}

/** The reply kind of each request type, so a frame whose type changes late is refused in that type's kind. */
const REPLY_OF_TYPE: Record<number, ReplyKind> = {
  1: "set",
  2: "set",
  3: "get",
  4: "get",
  5: "delete",
  6: "delete",
  7: "exists",
  8: "exists",
  9: "list",
  10: "list",
  11: "clear",
  12: "clear",
};

/**
 * Checks what follows a streamed value: the rest of `data` (`dataRest`
 * bytes), the rest of `set_request` (`setReqRest` bytes), then the rest of
 * the envelope. Unknown fields are skipped, as in a whole frame. Returns
 * undefined when the frame is the set it began as, or why it is not: a
 * field that would replace the key, the value, `req` or `set_req` (protobuf
 * lets the last occurrence win, which a value already taken cannot honour),
 * a write condition or a `ttl_ms` (each must be known before the value is
 * written: a chunk's encryption binds its expiry), or a
 * later `type` that is no longer a set. Throws `KV_ERR_BAD_ENVELOPE`
 * when the bytes are not protobuf, as decoding a whole frame would.
 */
export function checkSetTrailer(
  trailer: Uint8Array,
  dataRest: number,
  setReqRest: number,
): { readonly reply: ReplyKind; readonly reason: string } | undefined {
  try {
    const data = new WireReader(trailer, 0, dataRest);
    while (data.more()) {
      data.tag();
      if ((data.field === 1 || data.field === 2) && data.wire === Wire.bytes) {
        return { reply: "set", reason: "a streamed set repeats its key or value after the value" };
      }
      data.skip();
    }
    const setReq = new WireReader(trailer, dataRest, dataRest + setReqRest);
    while (setReq.more()) {
      setReq.tag();
      if (setReq.field === 1 && setReq.wire === Wire.bytes) {
        return { reply: "set", reason: "a streamed set repeats set_req.req after the value" };
      }
      // The value is written as it arrives, so a condition must be known before it: never ignored.
      if ((setReq.field === 2 || setReq.field === 3) && setReq.wire === Wire.varint) {
        return {
          reply: "set",
          reason: "a streamed set's condition (if_version, if_absent) must come before its value",
        };
      }
      if (setReq.field === 4 && setReq.wire === Wire.varint) {
        return {
          reply: "set",
          reason:
            "a streamed set's ttl_ms must come before its value (set_req's first field, as kvs-client sends it); nothing was written",
        };
      }
      setReq.skip();
    }
    const envelope = new WireReader(trailer, dataRest + setReqRest, trailer.length);
    let type = 1;
    let repeated = false;
    while (envelope.more()) {
      envelope.tag();
      if (envelope.field === 1 && envelope.wire === Wire.varint) type = envelope.int32();
      else if (envelope.field === 2 && envelope.wire === Wire.bytes) {
        repeated = true;
        envelope.skip();
      } else envelope.skip();
    }
    if (type !== 1) {
      return {
        reply: REPLY_OF_TYPE[type] ?? "set",
        reason: `a streamed set's msg_type changed to ${type} after its value`,
      };
    }
    if (repeated) return { reply: "set", reason: "a streamed set repeats set_req after the value" };
    return undefined;
  } catch (err) {
    if (!isKvError(err, ErrorCode.BadEnvelope)) throw err;
    throw new KvError(ErrorCode.BadEnvelope, `malformed req_envelope: ${err.message}`, { cause: err });
  }
}
