import { ErrorCode, isKvError, KvError } from "../errors.js";
import type { WriteCondition } from "../store/kv-store.js";
import { encodeFrame, encodeSmallFrame, type Field } from "./proto-writer.js";
import { varintSize, writeVarint } from "./varint.js";
import { Wire, WireReader } from "./wire-reader.js";

/**
 * Hand-written codec for the hot path of proto/kv.proto. It reads and writes
 * exactly what the generated code does (test/codec.test.ts checks both
 * directions against src/gen), but:
 * - keys and values come out as views of the frame, never JS strings, so
 *   non-UTF-8 bytes from C++ or Java proto2 clients round-trip exactly;
 * - proto2 `required` fields are checked, which `fromBinary` does not do;
 * - a closed-enum value it does not know is reported, not silently defaulted.
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
} as const;
export type MsgType = (typeof MsgType)[keyof typeof MsgType];

/** `set_response.error_t` values. */
export const SetError = { Ok: 1, Internal: 2, Conflict: 3 } as const;
export type SetError = (typeof SetError)[keyof typeof SetError];

/** `get_response.error_t` values. */
export const GetError = { Ok: 1, NotFound: 2, Internal: 3 } as const;
export type GetError = (typeof GetError)[keyof typeof GetError];

/** `delete_response.error_t` and `exists_response.error_t` values. */
export const KeyError = { Ok: 1, NotFound: 2, Internal: 3 } as const;
export type KeyError = (typeof KeyError)[keyof typeof KeyError];

/** `list_response.error_t` values. */
export const ListError = { Ok: 1, Internal: 2, BadCursor: 3 } as const;
export type ListError = (typeof ListError)[keyof typeof ListError];

/** `clear_response.error_t` values. */
export const ClearError = { Ok: 1, Internal: 2 } as const;
export type ClearError = (typeof ClearError)[keyof typeof ClearError];

/** Which response a request is answered with. */
export type ReplyKind = "set" | "get" | "delete" | "exists" | "list" | "clear";

/** Entries per list page when the request names none, and the most it may name. */
export const LIST_PAGE_ENTRIES = 1000;

/** A decoded list request. */
export interface ListRequestFields {
  readonly prefix: Uint8Array | undefined;
  /** 1..{@link LIST_PAGE_ENTRIES}. */
  readonly limit: number;
  readonly cursor: Uint8Array | undefined;
  readonly values: boolean;
}

/** A decoded request. Byte fields are views of the frame. */
export type Request =
  | {
      readonly kind: "set";
      readonly key: Uint8Array;
      readonly value: Uint8Array;
      /** Present on a conditional write. */
      readonly condition?: WriteCondition;
    }
  | { readonly kind: "get"; readonly key: Uint8Array; readonly withVersion?: boolean }
  | { readonly kind: "delete"; readonly key: Uint8Array }
  | { readonly kind: "exists"; readonly key: Uint8Array }
  | ({ readonly kind: "list" } & ListRequestFields)
  | { readonly kind: "clear" }
  /** A well-formed envelope that is not a usable request; answered with `internal`. */
  | { readonly kind: "invalid"; readonly reply: ReplyKind; readonly reason: string };

/** Why a request failed, as a failure response says (`code` 14 and `reason` 15 of every response). */
export interface Failure {
  code?: string;
  reason?: string;
}

/** A decoded response (client side). Byte fields are views of the frame; `failure` is there when the server said why. */
export type Response = { readonly failure?: Failure } & (
  | { readonly kind: "set"; readonly error: SetError; readonly version?: number }
  | {
      readonly kind: "get";
      readonly error: GetError;
      readonly key?: Uint8Array;
      readonly value?: Uint8Array;
      readonly version?: number;
    }
  | { readonly kind: "delete" | "exists"; readonly error: KeyError }
  | {
      readonly kind: "list";
      readonly error: ListError;
      readonly keys: Uint8Array[];
      readonly entries: { key: Uint8Array; value: Uint8Array }[];
      readonly cursor: Uint8Array | undefined;
    }
  | { readonly kind: "clear"; readonly error: ClearError; readonly removed: number }
);

interface DataFields {
  key?: Uint8Array;
  value?: Uint8Array;
}

/** A set_request's conditions, as read (checked after the envelope is read). */
interface SetConditions {
  ifVersion?: number;
  ifAbsent?: boolean;
}

// Field tags, precomputed as (field << 3) | wire type.
const TAG_TYPE = 0x08; // req_envelope.type = 1, varint
const TAG_SET_REQ = 0x12; // req_envelope.set_req = 2
const TAG_SET_RESP = 0x1a; // req_envelope.set_resp = 3
const TAG_GET_REQ = 0x22; // req_envelope.get_req = 4
const TAG_GET_RESP = 0x2a; // req_envelope.get_resp = 5
const TAG_DELETE_RESP = 0x3a; // req_envelope.delete_resp = 7
const TAG_EXISTS_RESP = 0x4a; // req_envelope.exists_resp = 9
const TAG_LIST_RESP = 0x5a; // req_envelope.list_resp = 11
const TAG_CLEAR_RESP = 0x6a; // req_envelope.clear_resp = 13
const TAG_ERROR = 0x08; // *_response.error = 1
const TAG_RESP_DATA = 0x12; // get_response.req = 2
const TAG_KEY = 0x0a; // data.key = 1, get_request.key = 1
const TAG_VALUE = 0x12; // data.value = 2
const TAG_REQ_DATA = 0x0a; // set_request.req = 1
const TAG_IF_VERSION = 0x10; // set_request.if_version = 2, varint
const TAG_IF_ABSENT = 0x18; // set_request.if_absent = 3, varint
const TAG_WITH_VERSION = 0x10; // get_request.with_version = 2, varint
const TAG_SET_VERSION = 0x10; // set_response.version = 2, varint
const TAG_GET_VERSION = 0x18; // get_response.version = 3, varint
const TAG_FAILURE_CODE = 0x72; // *_response.code = 14
const TAG_FAILURE_REASON = 0x7a; // *_response.reason = 15

/**
 * The reader's own reason, in context: it says what is wrong, this says
 * where. Only the reader's KvErrors are the peer's fault; anything else thrown
 * while decoding is a bug here and goes up as it is, not as a bad envelope.
 */
function wireError(err: unknown): unknown {
  if (!isKvError(err, ErrorCode.BadEnvelope)) return err;
  return new KvError(ErrorCode.BadEnvelope, `malformed req_envelope: ${err.message}`, { cause: err });
}

/**
 * Reads a `data` message. Repeated occurrences of a field keep the last one,
 * and repeated occurrences of an embedded message merge, as protobuf requires.
 */
function readData(r: WireReader, into: DataFields): void {
  while (r.more()) {
    r.tag();
    if (r.field === 1 && r.wire === Wire.bytes) into.key = r.bytes();
    else if (r.field === 2 && r.wire === Wire.bytes) into.value = r.bytes();
    else r.skip();
  }
}

/**
 * Reads a message whose only known field is `1: bytes key` (delete and
 * exists requests), or a get_request, whose `2: bool with_version` goes to `flag`.
 */
function readKeyOnly(r: WireReader, into: DataFields, flag?: { withVersion?: boolean }): void {
  while (r.more()) {
    r.tag();
    if (r.field === 1 && r.wire === Wire.bytes) into.key = r.bytes();
    else if (flag !== undefined && r.field === 2 && r.wire === Wire.varint) flag.withVersion = r.varint() !== 0;
    else r.skip();
  }
}

/** Reads a set_request: `1: data req`, `2: uint64 if_version`, `3: bool if_absent`. Returns whether `req` was present. */
function readSetRequest(r: WireReader, into: DataFields, conditions: SetConditions): boolean {
  let present = false;
  while (r.more()) {
    r.tag();
    if (r.field === 1 && r.wire === Wire.bytes) {
      readData(r.message(), into);
      present = true;
    } else if (r.field === 2 && r.wire === Wire.varint) conditions.ifVersion = r.varint();
    else if (r.field === 3 && r.wire === Wire.varint) conditions.ifAbsent = r.varint() !== 0;
    else r.skip();
  }
  return present;
}

/** The write condition of a set, or why its conditions are unusable. */
function conditionOf(c: SetConditions): WriteCondition | string | undefined {
  if (c.ifVersion !== undefined && c.ifAbsent) return "set_req has both if_version and if_absent";
  if (c.ifAbsent) return { ifAbsent: true };
  if (c.ifVersion === undefined) return undefined;
  if (!Number.isSafeInteger(c.ifVersion)) return `if_version ${c.ifVersion} is above 2^53, which no version reaches`;
  return { ifVersion: c.ifVersion };
}

/**
 * Decodes one frame body as a `req_envelope`.
 *
 * Throws `KV_ERR_BAD_ENVELOPE` when the bytes are not a protobuf message at
 * all; the connection cannot be trusted after that. A message that parses but
 * is not a usable request comes back as `{ kind: "invalid" }`, to be answered
 * with `internal` on a connection that stays open.
 */
export function decodeRequest(frame: Uint8Array): Request {
  let type: number | undefined;
  let setReqSeen = false;
  let setReqHasData = false;
  let getReqSeen = false;
  let deleteReqSeen = false;
  let existsReqSeen = false;
  let list: ListFields | undefined;
  let clearReqSeen = false;
  const data: DataFields = {};
  const getKey: DataFields = {};
  const getFlags: { withVersion?: boolean } = {};
  const conditions: SetConditions = {};
  const deleteKey: DataFields = {};
  const existsKey: DataFields = {};
  try {
    const r = new WireReader(frame);
    while (r.more()) {
      r.tag();
      if (r.field === 1 && r.wire === Wire.varint) {
        type = r.int32();
      } else if (r.wire !== Wire.bytes) {
        r.skip();
      } else if (r.field === 2) {
        setReqSeen = true;
        if (readSetRequest(r.message(), data, conditions)) setReqHasData = true;
      } else if (r.field === 4) {
        getReqSeen = true;
        readKeyOnly(r.message(), getKey, getFlags);
      } else if (r.field === 6) {
        deleteReqSeen = true;
        readKeyOnly(r.message(), deleteKey);
      } else if (r.field === 8) {
        existsReqSeen = true;
        readKeyOnly(r.message(), existsKey);
      } else if (r.field === 10) {
        list ??= {};
        readListRequest(r.message(), list);
      } else if (r.field === 12) {
        clearReqSeen = true;
        r.message();
      } else {
        r.skip();
      }
    }
  } catch (err) {
    throw wireError(err);
  }
  const seen: ReplyKind = setReqSeen
    ? "set"
    : deleteReqSeen
      ? "delete"
      : existsReqSeen
        ? "exists"
        : list !== undefined
          ? "list"
          : clearReqSeen
            ? "clear"
            : "get";

  switch (type) {
    case MsgType.SetRequest:
      if (!setReqSeen) return invalid("set", "set_request_t without set_req");
      if (!setReqHasData) return invalid("set", "set_req without its required field req");
      if (data.key === undefined) return invalid("set", "set_req.req without its required field key");
      if (data.value === undefined) return invalid("set", "set_req.req without its required field value");
      {
        const condition = conditionOf(conditions);
        if (typeof condition === "string") return invalid("set", condition);
        if (condition === undefined) return { kind: "set", key: data.key, value: data.value };
        return { kind: "set", key: data.key, value: data.value, condition };
      }
    case MsgType.GetRequest:
      if (!getReqSeen) return invalid("get", "get_request_t without get_req");
      if (getKey.key === undefined) return invalid("get", "get_req without its required field key");
      return getFlags.withVersion
        ? { kind: "get", key: getKey.key, withVersion: true }
        : { kind: "get", key: getKey.key };
    case MsgType.DeleteRequest:
      if (!deleteReqSeen) return invalid("delete", "delete_request_t without delete_req");
      if (deleteKey.key === undefined) return invalid("delete", "delete_req without its required field key");
      return { kind: "delete", key: deleteKey.key };
    case MsgType.ExistsRequest:
      if (!existsReqSeen) return invalid("exists", "exists_request_t without exists_req");
      if (existsKey.key === undefined) return invalid("exists", "exists_req without its required field key");
      return { kind: "exists", key: existsKey.key };
    case MsgType.ListRequest: {
      const l = list ?? {};
      const limit = l.limit === undefined || l.limit === 0 ? LIST_PAGE_ENTRIES : Math.min(l.limit, LIST_PAGE_ENTRIES);
      return { kind: "list", prefix: l.prefix, limit, cursor: l.cursor, values: l.values ?? false };
    }
    case MsgType.ClearRequest:
      return { kind: "clear" };
    case MsgType.SetResponse:
    case MsgType.GetResponse:
    case MsgType.DeleteResponse:
    case MsgType.ExistsResponse:
    case MsgType.ListResponse:
    case MsgType.ClearResponse:
      return invalid(RESPONSE_KIND[type] as ReplyKind, `msg_type ${type} is a response, not a request`);
    case undefined:
      return invalid(seen, "req_envelope without its required field type");
    default:
      return invalid(seen, `unknown msg_type ${type}`);
  }
}

/** The kind of each response type, so one sent as a request is refused in its own type. */
const RESPONSE_KIND: Record<number, ReplyKind> = {
  [MsgType.SetResponse]: "set",
  [MsgType.GetResponse]: "get",
  [MsgType.DeleteResponse]: "delete",
  [MsgType.ExistsResponse]: "exists",
  [MsgType.ListResponse]: "list",
  [MsgType.ClearResponse]: "clear",
};

interface ListFields {
  prefix?: Uint8Array;
  limit?: number;
  cursor?: Uint8Array;
  values?: boolean;
}

/** Reads a list_request; repeated occurrences merge, the last value of a field winning. */
function readListRequest(r: WireReader, into: ListFields): void {
  while (r.more()) {
    r.tag();
    if (r.field === 1 && r.wire === Wire.bytes) into.prefix = r.bytes();
    else if (r.field === 2 && r.wire === Wire.varint) into.limit = r.int32() >>> 0;
    else if (r.field === 3 && r.wire === Wire.bytes) into.cursor = r.bytes();
    else if (r.field === 4 && r.wire === Wire.varint) into.values = r.varint() !== 0;
    else r.skip();
  }
}

function invalid(reply: ReplyKind, reason: string): Request {
  return { kind: "invalid", reply, reason };
}

/** A frame: length prefix and envelope, ready for the socket. */
function frameOf(envelope: readonly number[]): Uint8Array {
  const out = new Uint8Array(varintSize(envelope.length) + envelope.length);
  out.set(envelope, writeVarint(out, 0, envelope.length));
  return out;
}

function statusFrame(type: MsgType, tag: number, error: number): Uint8Array {
  return frameOf([TAG_TYPE, type, tag, 2, TAG_ERROR, error]);
}

/** Complete frames for the responses that carry no data; shared, never mutated. */
export const Frames = {
  setOk: statusFrame(MsgType.SetResponse, TAG_SET_RESP, SetError.Ok),
  setInternal: statusFrame(MsgType.SetResponse, TAG_SET_RESP, SetError.Internal),
  setConflict: statusFrame(MsgType.SetResponse, TAG_SET_RESP, SetError.Conflict),
  getNotFound: statusFrame(MsgType.GetResponse, TAG_GET_RESP, GetError.NotFound),
  getInternal: statusFrame(MsgType.GetResponse, TAG_GET_RESP, GetError.Internal),
} as const;

/** Frames of the responses added after the seed's schema; shared, never mutated. */
export const ApiFrames = {
  deleteOk: statusFrame(MsgType.DeleteResponse, TAG_DELETE_RESP, KeyError.Ok),
  deleteNotFound: statusFrame(MsgType.DeleteResponse, TAG_DELETE_RESP, KeyError.NotFound),
  deleteInternal: statusFrame(MsgType.DeleteResponse, TAG_DELETE_RESP, KeyError.Internal),
  existsOk: statusFrame(MsgType.ExistsResponse, TAG_EXISTS_RESP, KeyError.Ok),
  existsNotFound: statusFrame(MsgType.ExistsResponse, TAG_EXISTS_RESP, KeyError.NotFound),
  existsInternal: statusFrame(MsgType.ExistsResponse, TAG_EXISTS_RESP, KeyError.Internal),
  listInternal: statusFrame(MsgType.ListResponse, TAG_LIST_RESP, ListError.Internal),
  listBadCursor: statusFrame(MsgType.ListResponse, TAG_LIST_RESP, ListError.BadCursor),
  clearInternal: statusFrame(MsgType.ClearResponse, TAG_CLEAR_RESP, ClearError.Internal),
} as const;

/** Bytes of a framed `set_response{ok, version}`. */
function setOkLength(version: number): number {
  // Envelope: type (2), set_resp tag and length (2), then error (2) and the version field.
  return 1 + 2 + 2 + 2 + 1 + varintSize(version);
}

/** Writes a framed `set_response{ok, version}` at `at`; the frame is {@link setOkLength} bytes. */
function writeSetOk(out: Uint8Array, at: number, version: number): void {
  const inner = 3 + varintSize(version);
  let p = at;
  out[p++] = 2 + 2 + inner;
  out[p++] = TAG_TYPE;
  out[p++] = MsgType.SetResponse;
  out[p++] = TAG_SET_RESP;
  out[p++] = inner;
  out[p++] = TAG_ERROR;
  out[p++] = SetError.Ok;
  out[p++] = TAG_SET_VERSION;
  writeVarint(out, p, version);
}

/** Encodes a framed `set_response{ok, version}`: the answer to every set that was written. */
export function encodeSetOk(version: number): Uint8Array {
  const out = new Uint8Array(setOkLength(version));
  writeSetOk(out, 0, version);
  return out;
}

/** {@link encodeSetOk} into room reserved in `target`; false, having written nothing, if it cannot take it. */
export function encodeSetOkInto(target: EncodeTarget, version: number): boolean {
  const at = target.reserve(setOkLength(version));
  if (at < 0) return false;
  writeSetOk(target.stage, at, version);
  return true;
}

function varintBytes(n: number): number[] {
  const out = new Uint8Array(varintSize(n));
  writeVarint(out, 0, n);
  return [...out];
}

/** Envelope type and field of each kind of response. */
const RESPONSE_OF: Record<ReplyKind, { type: number; tag: number }> = {
  set: { type: MsgType.SetResponse, tag: TAG_SET_RESP },
  get: { type: MsgType.GetResponse, tag: TAG_GET_RESP },
  delete: { type: MsgType.DeleteResponse, tag: TAG_DELETE_RESP },
  exists: { type: MsgType.ExistsResponse, tag: TAG_EXISTS_RESP },
  list: { type: MsgType.ListResponse, tag: TAG_LIST_RESP },
  clear: { type: MsgType.ClearResponse, tag: TAG_CLEAR_RESP },
};

const utf8 = new TextEncoder();

/** A reason longer than this is cut: a response says why, it does not carry logs. */
const MAX_REASON_BYTES = 512;

/**
 * Encodes a framed failure: `reply`'s response with `error: status` (its
 * `internal`, `conflict` or `bad_cursor`), the stable `code` and a `reason`.
 */
export function encodeFailure(reply: ReplyKind, status: number, code: string, reason: string): Uint8Array {
  const { type, tag } = RESPONSE_OF[reply];
  const codeBytes = utf8.encode(code);
  let reasonBytes = utf8.encode(reason);
  if (reasonBytes.length > MAX_REASON_BYTES) {
    // Cut on a character boundary: a continuation byte (10xxxxxx) never starts a character.
    let end = MAX_REASON_BYTES;
    while (end > 0 && ((reasonBytes[end] as number) & 0xc0) === 0x80) end--;
    reasonBytes = reasonBytes.subarray(0, end);
  }
  const inner = [
    TAG_ERROR,
    status,
    TAG_FAILURE_CODE,
    ...varintBytes(codeBytes.length),
    ...codeBytes,
    TAG_FAILURE_REASON,
    ...varintBytes(reasonBytes.length),
    ...reasonBytes,
  ];
  return frameOf([TAG_TYPE, type, tag, ...varintBytes(inner.length), ...inner]);
}

/** Encodes a framed `list_response{ok, ...}`: entries with values, or keys alone. Large values are their own parts. */
export function encodeListOk(
  entries: readonly { key: Uint8Array; value?: Uint8Array }[],
  values: boolean,
  cursor: Uint8Array | undefined,
): Uint8Array[] {
  const fields: Field[] = [{ field: 1, varint: ListError.Ok }];
  for (const e of entries) {
    if (values) {
      const value = e.value ?? new Uint8Array(0);
      fields.push({
        field: 2,
        message: [
          { field: 1, bytes: e.key },
          { field: 2, bytes: value },
        ],
      });
    } else fields.push({ field: 3, bytes: e.key });
  }
  if (cursor !== undefined) fields.push({ field: 4, bytes: cursor });
  return encodeFrame([
    { field: 1, varint: MsgType.ListResponse },
    { field: 11, message: fields },
  ]);
}

/** Encodes a framed `clear_response{ok, removed}`. */
export function encodeClearOk(removed: number): Uint8Array {
  return encodeSmallFrame([
    { field: 1, varint: MsgType.ClearResponse },
    {
      field: 13,
      message: [
        { field: 1, varint: ClearError.Ok },
        { field: 2, varint: removed },
      ],
    },
  ]);
}

/** Encodes a framed delete or exists request. */
export function encodeKeyRequest(kind: "delete" | "exists", key: Uint8Array): Uint8Array {
  const type = kind === "delete" ? MsgType.DeleteRequest : MsgType.ExistsRequest;
  return encodeSmallFrame([
    { field: 1, varint: type },
    { field: kind === "delete" ? 6 : 8, message: [{ field: 1, bytes: key }] },
  ]);
}

/** Encodes a framed list request. */
export function encodeListRequest(request: {
  prefix?: Uint8Array;
  limit?: number;
  cursor?: Uint8Array;
  values?: boolean;
}): Uint8Array {
  const fields: Field[] = [];
  if (request.prefix !== undefined) fields.push({ field: 1, bytes: request.prefix });
  if (request.limit !== undefined) fields.push({ field: 2, varint: request.limit });
  if (request.cursor !== undefined) fields.push({ field: 3, bytes: request.cursor });
  if (request.values) fields.push({ field: 4, varint: 1 });
  return encodeSmallFrame([
    { field: 1, varint: MsgType.ListRequest },
    { field: 10, message: fields },
  ]);
}

/** Encodes a framed clear request. */
export function encodeClearRequest(): Uint8Array {
  return encodeSmallFrame([
    { field: 1, varint: MsgType.ClearRequest },
    { field: 12, message: [] },
  ]);
}

/** Values up to this size are copied into the header buffer; larger ones go out as their own part. */
const INLINE_VALUE_BYTES = 16 * 1024;

/**
 * Encodes a framed `req_envelope{type, <outerTag>: {...innerPrefix, <dataTag>: data{key, value}}}`.
 * Returns one buffer, or, for a large value, a header and the value itself so
 * the value is never copied.
 */
function encodeWithData(
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
function encodeDataHead(
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

function parts(frame: Uint8Array | Uint8Array[]): Uint8Array[] {
  return frame instanceof Uint8Array ? [frame] : frame;
}

const GET_OK_PREFIX = [TAG_ERROR, GetError.Ok] as const;

function fresh(n: number): Uint8Array {
  return new Uint8Array(n);
}

/** `get_response`'s fields before `req`: `error: ok`, and the version when one is answered (before req, so a streamed value can follow). */
function getOkPrefix(version: number | undefined): readonly number[] {
  return version === undefined ? GET_OK_PREFIX : [...GET_OK_PREFIX, TAG_GET_VERSION, ...varintBytes(version)];
}

/**
 * The start of a framed `get_response{ok, [version], req{key, value}}` whose
 * value of `valueLength` bytes is sent after it, piece by piece: a streamed get.
 */
export function encodeGetOkHead(key: Uint8Array, valueLength: number, version?: number): Uint8Array {
  return encodeDataHead(MsgType.GetResponse, TAG_GET_RESP, getOkPrefix(version), TAG_RESP_DATA, key, valueLength);
}

/** The start of a framed `set_request` whose value of `valueLength` bytes follows it: a streamed upload. */
export function encodeSetRequestHead(key: Uint8Array, valueLength: number): Uint8Array {
  return encodeDataHead(MsgType.SetRequest, TAG_SET_REQ, [], TAG_REQ_DATA, key, valueLength);
}

/** Encodes a framed `get_response{ok, [version], req{key, value}}`; a large value is its own part, uncopied. */
export function encodeGetOk(key: Uint8Array, value: Uint8Array, version?: number): Uint8Array[] {
  return parts(encodeWithData(MsgType.GetResponse, TAG_GET_RESP, getOkPrefix(version), TAG_RESP_DATA, key, value));
}

/** Where {@link encodeGetOkInto} writes: room reserved in an output buffer. */
export interface EncodeTarget {
  /** Reserves `n` bytes in `stage`, returning their offset, or -1 if it cannot. */
  reserve(n: number): number;
  readonly stage: Uint8Array;
}

/** Copies `src` into `out` at `p`; a byte loop beats TypedArray#set for the short keys and values of the hot path. */
function copyInto(out: Uint8Array, p: number, src: Uint8Array): number {
  const n = src.length;
  if (n < 64) for (let i = 0; i < n; i++) out[p + i] = src[i] as number;
  else out.set(src, p);
  return p + n;
}

/**
 * Encodes a framed `get_response{ok, req{key, value}}` straight into room
 * reserved in `target`: no allocation, one copy of key and value. Returns
 * false, having written nothing, when `target` cannot take it.
 */
export function encodeGetOkInto(target: EncodeTarget, key: Uint8Array, value: Uint8Array): boolean {
  const kl = key.length;
  const vl = value.length;
  const dataLen = 1 + varintSize(kl) + kl + 1 + varintSize(vl) + vl;
  const innerLen = GET_OK_PREFIX.length + 1 + varintSize(dataLen) + dataLen;
  const envLen = 2 + 1 + varintSize(innerLen) + innerLen;
  const at = target.reserve(varintSize(envLen) + envLen);
  if (at < 0) return false;
  const out = target.stage;
  let p = writeVarint(out, at, envLen);
  out[p++] = TAG_TYPE;
  out[p++] = MsgType.GetResponse;
  out[p++] = TAG_GET_RESP;
  p = writeVarint(out, p, innerLen);
  out[p++] = TAG_ERROR;
  out[p++] = GetError.Ok;
  out[p++] = TAG_RESP_DATA;
  p = writeVarint(out, p, dataLen);
  out[p++] = TAG_KEY;
  p = copyInto(out, writeVarint(out, p, kl), key);
  out[p++] = TAG_VALUE;
  copyInto(out, writeVarint(out, p, vl), value);
  return true;
}

/** Copies a ready frame (one of {@link Frames}) into room reserved in `target`; false if it cannot. */
export function writeFrameInto(target: EncodeTarget, frame: Uint8Array): boolean {
  const at = target.reserve(frame.length);
  if (at < 0) return false;
  copyInto(target.stage, at, frame);
  return true;
}

let scratch = new Uint8Array(INLINE_VALUE_BYTES * 2);

function fromScratch(n: number): Uint8Array {
  if (n > scratch.length) scratch = new Uint8Array(2 ** Math.ceil(Math.log2(n)));
  return scratch.subarray(0, n);
}

/**
 * {@link encodeGetOk} into a reused scratch buffer: no allocation per answer.
 * The result is valid only until the next call; write or copy it at once.
 */
export function encodeGetOkScratch(key: Uint8Array, value: Uint8Array): Uint8Array | Uint8Array[] {
  return encodeWithData(MsgType.GetResponse, TAG_GET_RESP, GET_OK_PREFIX, TAG_RESP_DATA, key, value, fromScratch);
}

/**
 * Encodes a framed `set_request`, conditional when `condition` is given (its
 * field goes before `req`); a large value is its own part, uncopied.
 */
export function encodeSetRequest(key: Uint8Array, value: Uint8Array, condition?: WriteCondition): Uint8Array[] {
  return parts(encodeWithData(MsgType.SetRequest, TAG_SET_REQ, conditionPrefix(condition), TAG_REQ_DATA, key, value));
}

function conditionPrefix(condition: WriteCondition | undefined): readonly number[] {
  if (condition === undefined) return [];
  return condition.ifAbsent ? [TAG_IF_ABSENT, 1] : [TAG_IF_VERSION, ...varintBytes(condition.ifVersion)];
}

/** Encodes a framed `get_request`, asking for the version too with `withVersion`. */
export function encodeGetRequest(key: Uint8Array, withVersion = false): Uint8Array {
  const getLen = 1 + varintSize(key.length) + key.length + (withVersion ? 2 : 0);
  const envLen = 2 + 1 + varintSize(getLen) + getLen;
  const out = new Uint8Array(varintSize(envLen) + envLen);
  let p = writeVarint(out, 0, envLen);
  out[p++] = TAG_TYPE;
  out[p++] = MsgType.GetRequest;
  out[p++] = TAG_GET_REQ;
  p = writeVarint(out, p, getLen);
  out[p++] = TAG_KEY;
  p = writeVarint(out, p, key.length);
  out.set(key, p);
  if (withVersion) {
    out[p + key.length] = TAG_WITH_VERSION;
    out[p + key.length + 1] = 1;
  }
  return out;
}

function protocolError(reason: string, cause?: unknown): KvError {
  return new KvError(ErrorCode.Protocol, `bad response: ${reason}`, { cause });
}

interface ListResponseFields {
  error?: number;
  keys: Uint8Array[];
  entries: { key: Uint8Array; value: Uint8Array }[];
  cursor?: Uint8Array;
}

const utf8Text = new TextDecoder();

/** Reads field 14 or 15 of a response (what `r` is at) into `failure`; false for any other field. */
function readFailure(r: WireReader, failure: Failure): boolean {
  if (r.wire !== Wire.bytes || (r.field !== 14 && r.field !== 15)) return false;
  const text = utf8Text.decode(r.bytes());
  if (r.field === 14) failure.code = text;
  else failure.reason = text;
  return true;
}

function readListResponse(r: WireReader, into: ListResponseFields, failure: Failure): void {
  while (r.more()) {
    r.tag();
    if (readFailure(r, failure)) continue;
    if (r.field === 1 && r.wire === Wire.varint) into.error = r.int32();
    else if (r.field === 2 && r.wire === Wire.bytes) {
      const entry: DataFields = {};
      readData(r.message(), entry);
      if (entry.key === undefined || entry.value === undefined) throw protocolError("list entry without key or value");
      into.entries.push({ key: entry.key, value: entry.value });
    } else if (r.field === 3 && r.wire === Wire.bytes) into.keys.push(r.bytes());
    else if (r.field === 4 && r.wire === Wire.bytes) into.cursor = r.bytes();
    else r.skip();
  }
}

function readClearResponse(r: WireReader, into: { error?: number; removed?: number }, failure: Failure): void {
  while (r.more()) {
    r.tag();
    if (readFailure(r, failure)) continue;
    if (r.field === 1 && r.wire === Wire.varint) into.error = r.int32();
    else if (r.field === 2 && r.wire === Wire.varint) into.removed = r.varint();
    else r.skip();
  }
}

/**
 * Reads a response's `1: error`, and, where the response has them, its
 * `data` (`2` of get_response) and its version (`versionField`: 2 of
 * set_response, 3 of get_response).
 */
function readStatus(
  r: WireReader,
  failure: Failure,
  data: DataFields | null,
  version?: { field: number; value?: number },
): number | undefined {
  let error: number | undefined;
  while (r.more()) {
    r.tag();
    if (readFailure(r, failure)) continue;
    if (r.field === 1 && r.wire === Wire.varint) error = r.int32();
    else if (data !== null && r.field === 2 && r.wire === Wire.bytes) readData(r.message(), data);
    else if (version !== undefined && r.field === version.field && r.wire === Wire.varint) version.value = r.varint();
    else r.skip();
  }
  return error;
}

/**
 * Decodes one frame body as a response envelope (client side). Throws
 * `KV_ERR_PROTOCOL` for anything that is not a complete, known response.
 */
export function decodeResponse(frame: Uint8Array): Response {
  const failure: Failure = {};
  const response = decodeEnvelope(frame, failure);
  return failure.code === undefined && failure.reason === undefined ? response : { ...response, failure };
}

function decodeEnvelope(frame: Uint8Array, failure: Failure): Response {
  let type: number | undefined;
  let setError: number | undefined;
  let getError: number | undefined;
  let deleteError: number | undefined;
  let existsError: number | undefined;
  let clear: { error?: number; removed?: number } | undefined;
  let list: ListResponseFields | undefined;
  const data: DataFields = {};
  let dataSeen = false;
  const setVersion: { field: number; value?: number } = { field: 2 };
  const getVersion: { field: number; value?: number } = { field: 3 };
  try {
    const r = new WireReader(frame);
    while (r.more()) {
      r.tag();
      if (r.field === 1 && r.wire === Wire.varint) type = r.int32();
      else if (r.field === 3 && r.wire === Wire.bytes) setError = readStatus(r.message(), failure, null, setVersion);
      else if (r.field === 5 && r.wire === Wire.bytes) {
        const before = data.key !== undefined || data.value !== undefined;
        getError = readStatus(r.message(), failure, data, getVersion) ?? getError;
        dataSeen = before || data.key !== undefined || data.value !== undefined;
      } else if (r.field === 7 && r.wire === Wire.bytes) deleteError = readStatus(r.message(), failure, null);
      else if (r.field === 9 && r.wire === Wire.bytes) existsError = readStatus(r.message(), failure, null);
      else if (r.field === 11 && r.wire === Wire.bytes) {
        list ??= { keys: [], entries: [] };
        readListResponse(r.message(), list, failure);
      } else if (r.field === 13 && r.wire === Wire.bytes) {
        clear ??= {};
        readClearResponse(r.message(), clear, failure);
      } else r.skip();
    }
  } catch (err) {
    throw protocolError("malformed envelope", err);
  }
  if (type === MsgType.DeleteResponse || type === MsgType.ExistsResponse) {
    const error = type === MsgType.DeleteResponse ? deleteError : existsError;
    if (error !== KeyError.Ok && error !== KeyError.NotFound && error !== KeyError.Internal) {
      throw protocolError(`msg_type ${type} with error ${error}`);
    }
    return { kind: type === MsgType.DeleteResponse ? "delete" : "exists", error };
  }
  if (type === MsgType.ListResponse) {
    const error = list?.error;
    if (error !== ListError.Ok && error !== ListError.Internal && error !== ListError.BadCursor) {
      throw protocolError(`list_response with error ${error}`);
    }
    const l = list as ListResponseFields;
    return { kind: "list", error, keys: l.keys, entries: l.entries, cursor: l.cursor };
  }
  if (type === MsgType.ClearResponse) {
    const error = clear?.error;
    if (error !== ClearError.Ok && error !== ClearError.Internal)
      throw protocolError(`clear_response with error ${error}`);
    if (error === ClearError.Ok && clear?.removed === undefined)
      throw protocolError("clear_response ok without removed");
    return { kind: "clear", error, removed: clear?.removed ?? 0 };
  }
  if (type === MsgType.SetResponse) {
    if (setError !== SetError.Ok && setError !== SetError.Internal && setError !== SetError.Conflict) {
      throw protocolError(`set_response with error ${setError}`);
    }
    return setVersion.value === undefined
      ? { kind: "set", error: setError }
      : { kind: "set", error: setError, version: setVersion.value };
  }
  if (type === MsgType.GetResponse) {
    if (getError !== GetError.Ok && getError !== GetError.NotFound && getError !== GetError.Internal) {
      throw protocolError(`get_response with error ${getError}`);
    }
    if (getError !== GetError.Ok) return { kind: "get", error: getError };
    if (!dataSeen || data.key === undefined || data.value === undefined) {
      throw protocolError("get_response ok without req{key, value}");
    }
    if (getVersion.value !== undefined) {
      return { kind: "get", error: getError, key: data.key, value: data.value, version: getVersion.value };
    }
    return { kind: "get", error: getError, key: data.key, value: data.value };
  }
  throw protocolError(`unexpected msg_type ${type}`);
}
