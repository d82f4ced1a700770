import { varintSize, writeVarint } from "./varint.js";
import { Wire, type WireReader } from "./wire-reader.js";

/**
 * What both halves of the protocol share: the envelope's types, enums and
 * field tags of proto/kv.proto, and the encoding of a `data{key, value}`
 * message, which requests and responses both carry. The server's codec
 * (src/protocol/codec.ts) and the client's (client-codec.ts) build on it.
 */

/** `req_envelope.msg_type` values. */
export const MsgType = {
  SetRequest: 1,
  SetResponse: 2,
  GetRequest: 3,
  GetResponse: 4,
  DeleteRequest: 5,
  DeleteResponse: 6,
  ExistsRequest: 7,
  ExistsResponse: 8,
  ListRequest: 9,
  ListResponse: 10,
  ClearRequest: 11,
  ClearResponse: 12,
  AuthRequest: 13,
  AuthResponse: 14,
} as const;

export type MsgType = (typeof MsgType)[keyof typeof MsgType];

/** `set_response.error_t` values. */
export const SetError = { Ok: 1, Internal: 2, Conflict: 3, Forbidden: 10 } as const;

export type SetError = (typeof SetError)[keyof typeof SetError];

/** `get_response.error_t` values. */
export const GetError = { Ok: 1, NotFound: 2, Internal: 3, Forbidden: 10 } as const;

export type GetError = (typeof GetError)[keyof typeof GetError];

/** `delete_response.error_t` and `exists_response.error_t` values. */
export const KeyError = { Ok: 1, NotFound: 2, Internal: 3, Forbidden: 10 } as const;

export type KeyError = (typeof KeyError)[keyof typeof KeyError];

/** `list_response.error_t` values. */
export const ListError = { Ok: 1, Internal: 2, BadCursor: 3, Forbidden: 10 } as const;

export type ListError = (typeof ListError)[keyof typeof ListError];

/** `clear_response.error_t` values. */
export const ClearError = { Ok: 1, Internal: 2, Forbidden: 10 } as const;

export type ClearError = (typeof ClearError)[keyof typeof ClearError];

/** `auth_response.error_t` values. */
export const AuthError = { Ok: 1, Internal: 2, Forbidden: 10 } as const;

export type AuthError = (typeof AuthError)[keyof typeof AuthError];

/** The `forbidden` status, the same number in every response's enum. */
export const FORBIDDEN = 10;

/** Which response a request is answered with. */
export type ReplyKind = "set" | "get" | "delete" | "exists" | "list" | "clear" | "auth";

/** Entries per list page when the request names none, and the most it may name. */
export const LIST_PAGE_ENTRIES = 1000;

/** Why a request failed, as a failure response says (`code` 14 and `reason` 15 of every response). */
export interface Failure {
  code?: string;
  reason?: string;
}

export interface DataFields {
  key?: Uint8Array;
  value?: Uint8Array;
}

// Field tags, precomputed as (field << 3) | wire type.
export const TAG_TYPE = 0x08; // req_envelope.type = 1, varint

export const TAG_SET_REQ = 0x12; // req_envelope.set_req = 2

export const TAG_SET_RESP = 0x1a; // req_envelope.set_resp = 3

export const TAG_GET_REQ = 0x22; // req_envelope.get_req = 4

export const TAG_GET_RESP = 0x2a; // req_envelope.get_resp = 5

export const TAG_DELETE_RESP = 0x3a; // req_envelope.delete_resp = 7

export const TAG_EXISTS_RESP = 0x4a; // req_envelope.exists_resp = 9

export const TAG_LIST_RESP = 0x5a; // req_envelope.list_resp = 11

export const TAG_CLEAR_RESP = 0x6a; // req_envelope.clear_resp = 13

export const TAG_AUTH_REQ = 0x72; // req_envelope.auth_req = 14

export const TAG_AUTH_RESP = 0x7a; // req_envelope.auth_resp = 15

export const TAG_ERROR = 0x08; // *_response.error = 1

export const TAG_RESP_DATA = 0x12; // get_response.req = 2

export const TAG_KEY = 0x0a; // data.key = 1, get_request.key = 1

export const TAG_VALUE = 0x12; // data.value = 2

export const TAG_REQ_DATA = 0x0a; // set_request.req = 1

export const TAG_IF_VERSION = 0x10; // set_request.if_version = 2, varint

export const TAG_IF_ABSENT = 0x18; // set_request.if_absent = 3, varint
export const TAG_TTL_MS = 0x20; // set_request.ttl_ms = 4, varint

export const TAG_WITH_VERSION = 0x10; // get_request.with_version = 2, varint

export const TAG_SET_VERSION = 0x10; // set_response.version = 2, varint

export const TAG_GET_VERSION = 0x18; // get_response.version = 3, varint
export const TAG_GET_EXPIRES = 0x20; // get_response.expires_at_ms = 4, varint

export const TAG_FAILURE_CODE = 0x72; // *_response.code = 14

export const TAG_FAILURE_REASON = 0x7a; // *_response.reason = 15

/**
 * Reads a `data` message. Repeated occurrences of a field keep the last one,
 * and repeated occurrences of an embedded message merge, as protobuf requires.
 */
export function readData(r: WireReader, into: DataFields): void {
  while (r.more()) {
    r.tag();
    if (r.field === 1 && r.wire === Wire.bytes) into.key = r.bytes();
    else if (r.field === 2 && r.wire === Wire.bytes) into.value = r.bytes();
    else r.skip();
  }
}

export function varintBytes(n: number): number[] {
  const out = new Uint8Array(varintSize(n));
  writeVarint(out, 0, n);
  return [...out];
}

/** Values up to this size are copied into the header buffer; larger ones go out as their own part. */
export const INLINE_VALUE_BYTES = 16 * 1024;

/**
 * Encodes a framed `req_envelope{type, <outerTag>: {...innerPrefix, <dataTag>: data{key, value}}}`.
 * Returns one buffer, or, for a large value, a header and the value itself so
 * the value is never copied.
 */
export function encodeWithData(
  type: MsgType,
  outerTag: number,
  innerPrefix: readonly number[],
  dataTag: number,
  key: Uint8Array,
  value: Uint8Array,
  alloc: (n: number) => Uint8Array = fresh,
): Uint8Array | Uint8Array[] {
  if (value.length > INLINE_VALUE_BYTES) {
    return [encodeDataHead(type, outerTag, innerPrefix, dataTag, key, value.length, alloc), value];
  }
  const head = encodeDataHead(type, outerTag, innerPrefix, dataTag, key, value.length, alloc, value.length);
  head.set(value, head.length - value.length);
  return head;
}

/**
 * A framed envelope carrying `data{key, value}` up to the value's first byte:
 * length prefix, type, the outer message's tag and length, `innerPrefix`,
 * the data tag and length, the key, and the value's tag and length. The
 * value's `valueLength` bytes follow it on the wire; `room` extra bytes are
 * allocated at the end for a caller that copies the value in.
 */
export function encodeDataHead(
  type: MsgType,
  outerTag: number,
  innerPrefix: readonly number[],
  dataTag: number,
  key: Uint8Array,
  valueLength: number,
  alloc: (n: number) => Uint8Array = fresh,
  room = 0,
): Uint8Array {
  const dataLen = 1 + varintSize(key.length) + key.length + 1 + varintSize(valueLength) + valueLength;
  const innerLen = innerPrefix.length + 1 + varintSize(dataLen) + dataLen;
  const envLen = 2 + 1 + varintSize(innerLen) + innerLen;
  const total = varintSize(envLen) + envLen;
  const head = alloc(total - valueLength + room);
  let p = writeVarint(head, 0, envLen);
  head[p++] = TAG_TYPE;
  head[p++] = type;
  head[p++] = outerTag;
  p = writeVarint(head, p, innerLen);
  for (const b of innerPrefix) head[p++] = b;
  head[p++] = dataTag;
  p = writeVarint(head, p, dataLen);
  head[p++] = TAG_KEY;
  p = writeVarint(head, p, key.length);
  head.set(key, p);
  p += key.length;
  head[p++] = TAG_VALUE;
  writeVarint(head, p, valueLength);
  return head;
}

export function parts(frame: Uint8Array | Uint8Array[]): Uint8Array[] {
  return frame instanceof Uint8Array ? [frame] : frame;
}

export function fresh(n: number): Uint8Array {
  return new Uint8Array(n);
}
