import {
  AuthError,
  ClearError,
  type DataFields,
  encodeDataHead,
  encodeWithData,
  GetError,
  INLINE_VALUE_BYTES,
  KeyError,
  LIST_PAGE_ENTRIES,
  ListError,
  MsgType,
  parts,
  type ReplyKind,
  readData,
  SetError,
  TAG_AUTH_RESP,
  TAG_CLEAR_RESP,
  TAG_DELETE_RESP,
  TAG_ERROR,
  TAG_EXISTS_RESP,
  TAG_FAILURE_CODE,
  TAG_FAILURE_REASON,
  TAG_GET_EXPIRES,
  TAG_GET_RESP,
  TAG_GET_VERSION,
  TAG_KEY,
  TAG_LIST_RESP,
  TAG_RESP_DATA,
  TAG_SET_RESP,
  TAG_SET_VERSION,
  TAG_TYPE,
  TAG_VALUE,
  varintBytes,
} from "../wire/envelope.js";
import { ErrorCode, isKvError, KvError } from "../wire/errors.js";
import { encodeFrame, encodeSmallFrame, type Field } from "../wire/proto-writer.js";
import { varintSize, writeVarint } from "../wire/varint.js";
import { Wire, WireReader } from "../wire/wire-reader.js";
import { type WriteCondition, writeCondition } from "../wire/write-condition.js";

/**
 * The server's half of the hand-written codec for proto/kv.proto (the
 * client's is src/wire/client-codec.ts; what both share, src/wire/envelope.ts). It reads and writes
 * exactly what the generated code does (test/protocol/codec.test.ts checks both
 * directions against src/gen), but:
 * - keys and values come out as views of the frame, never JS strings, so
 *   non-UTF-8 bytes from C++ or Java proto2 clients round-trip exactly;
 * - proto2 `required` fields are checked, which `fromBinary` does not do;
 * - a closed-enum value it does not know is reported, not silently defaulted.
 */

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
      /** `ttl_ms` as sent, unchecked (the dispatcher refuses what is out of range); absent: no expiry. */
      readonly ttlMs?: number;
    }
  | { readonly kind: "get"; readonly key: Uint8Array; readonly withVersion?: boolean }
  | { readonly kind: "delete"; readonly key: Uint8Array }
  | { readonly kind: "exists"; readonly key: Uint8Array }
  | ({ readonly kind: "list" } & ListRequestFields)
  | { readonly kind: "clear" }
  /** An auth_request: exactly one of `token` and `iam` is checked by the session, not here. */
  | { readonly kind: "auth"; readonly token?: string; readonly iam?: string }
  /** A well-formed envelope that is not a usable request; answered with `internal`. */
  | { readonly kind: "invalid"; readonly reply: ReplyKind; readonly reason: string };

/** A set_request's conditions, as read (checked after the envelope is read). */
interface SetConditions {
  ifVersion?: number;
  ifAbsent?: boolean;
  ttlMs?: number;
}

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

/**
 * Reads a set_request: `1: data req`, `2: uint64 if_version`, `3: bool
 * if_absent`, `4: uint64 ttl_ms`. Returns whether `req` was present.
 */
function readSetRequest(r: WireReader, into: DataFields, conditions: SetConditions): boolean {
  let present = false;
  while (r.more()) {
    r.tag();
    if (r.field === 1 && r.wire === Wire.bytes) {
      readData(r.message(), into);
      present = true;
    } else if (r.field === 2 && r.wire === Wire.varint) conditions.ifVersion = r.varint();
    else if (r.field === 3 && r.wire === Wire.varint) conditions.ifAbsent = r.varint() !== 0;
    else if (r.field === 4 && r.wire === Wire.varint) conditions.ttlMs = r.varint();
    else r.skip();
  }
  return present;
}

/** The write condition of a set, or why its conditions are unusable. */
function conditionOf(c: SetConditions): WriteCondition | string | undefined {
  return writeCondition(c.ifVersion, c.ifAbsent, { version: "if_version", absent: "if_absent" });
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
  let auth: { token?: string; iam?: string } | undefined;
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
      } else if (r.field === 14) {
        auth ??= {};
        readAuthRequest(r.message(), auth);
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
        const set: { kind: "set"; key: Uint8Array; value: Uint8Array; condition?: WriteCondition; ttlMs?: number } = {
          kind: "set",
          key: data.key,
          value: data.value,
        };
        // Only what was sent is present: a plain set keeps the one shape every plain set has.
        if (condition !== undefined) set.condition = condition;
        if (conditions.ttlMs !== undefined) set.ttlMs = conditions.ttlMs;
        return set;
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
    case MsgType.AuthRequest: {
      if (auth === undefined) return invalid("auth", "auth_request_t without auth_req");
      const { token, iam } = auth;
      if ((token === undefined) === (iam === undefined)) {
        return invalid("auth", "auth_req takes exactly one of token and iam");
      }
      return token !== undefined ? { kind: "auth", token } : { kind: "auth", iam: iam as string };
    }
    case MsgType.SetResponse:
    case MsgType.GetResponse:
    case MsgType.DeleteResponse:
    case MsgType.ExistsResponse:
    case MsgType.ListResponse:
    case MsgType.ClearResponse:
    case MsgType.AuthResponse:
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
  [MsgType.AuthResponse]: "auth",
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

/** Credentials are text: bytes that are not UTF-8 are no credential (a fatal decoder says so, not U+FFFD). */
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Reads an auth_request: `1: string token`, `2: string iam`. */
function readAuthRequest(r: WireReader, into: { token?: string; iam?: string }): void {
  while (r.more()) {
    r.tag();
    if (r.wire === Wire.bytes && (r.field === 1 || r.field === 2)) {
      let text: string;
      try {
        text = strictUtf8.decode(r.bytes());
      } catch {
        text = "\ufffd";
      }
      if (r.field === 1) into.token = text;
      else into.iam = text;
    } else r.skip();
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

/** Envelope type and field of each kind of response. */
const RESPONSE_OF: Record<ReplyKind, { type: number; tag: number }> = {
  set: { type: MsgType.SetResponse, tag: TAG_SET_RESP },
  get: { type: MsgType.GetResponse, tag: TAG_GET_RESP },
  delete: { type: MsgType.DeleteResponse, tag: TAG_DELETE_RESP },
  exists: { type: MsgType.ExistsResponse, tag: TAG_EXISTS_RESP },
  list: { type: MsgType.ListResponse, tag: TAG_LIST_RESP },
  clear: { type: MsgType.ClearResponse, tag: TAG_CLEAR_RESP },
  auth: { type: MsgType.AuthResponse, tag: TAG_AUTH_RESP },
};

/** Encodes a framed `auth_response{ok, identity}`. */
export function encodeAuthOk(identity: string): Uint8Array {
  return encodeSmallFrame([
    { field: 1, varint: MsgType.AuthResponse },
    {
      field: 15,
      message: [
        { field: 1, varint: AuthError.Ok },
        { field: 2, bytes: utf8.encode(identity) },
      ],
    },
  ]);
}

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

const GET_OK_PREFIX = [TAG_ERROR, GetError.Ok] as const;

/**
 * `get_response`'s fields before `req`: `error: ok`, and the version and
 * expiry when they are answered (before req, so a streamed value can follow).
 */
function getOkPrefix(version: number | undefined, expiresAt: number | undefined): readonly number[] {
  if (version === undefined) return GET_OK_PREFIX;
  const prefix = [...GET_OK_PREFIX, TAG_GET_VERSION, ...varintBytes(version)];
  if (expiresAt !== undefined) prefix.push(TAG_GET_EXPIRES, ...varintBytes(expiresAt));
  return prefix;
}

/**
 * The start of a framed `get_response{ok, [version, [expires_at_ms]], req{key, value}}`
 * whose value of `valueLength` bytes is sent after it, piece by piece: a streamed get.
 */
export function encodeGetOkHead(
  key: Uint8Array,
  valueLength: number,
  version?: number,
  expiresAt?: number,
): Uint8Array {
  const prefix = getOkPrefix(version, expiresAt);
  return encodeDataHead(MsgType.GetResponse, TAG_GET_RESP, prefix, TAG_RESP_DATA, key, valueLength);
}

/**
 * Encodes a framed `get_response{ok, [version, [expires_at_ms]], req{key, value}}`;
 * a large value is its own part, uncopied.
 */
export function encodeGetOk(key: Uint8Array, value: Uint8Array, version?: number, expiresAt?: number): Uint8Array[] {
  const prefix = getOkPrefix(version, expiresAt);
  return parts(encodeWithData(MsgType.GetResponse, TAG_GET_RESP, prefix, TAG_RESP_DATA, key, value));
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

/**
 * Process-wide on purpose: an answer encoded here is written or copied
 * before the next is encoded (one thread, and the FrameHandler contract), so
 * every connection of every server can share one buffer.
 */
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
