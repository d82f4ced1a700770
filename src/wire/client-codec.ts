import {
  AuthError,
  ClearError,
  type DataFields,
  encodeDataHead,
  encodeWithData,
  type Failure,
  GetError,
  KeyError,
  ListError,
  MsgType,
  parts,
  readData,
  SetError,
  TAG_GET_REQ,
  TAG_IF_ABSENT,
  TAG_IF_VERSION,
  TAG_KEY,
  TAG_REQ_DATA,
  TAG_SET_REQ,
  TAG_TTL_MS,
  TAG_TYPE,
  TAG_WITH_VERSION,
  varintBytes,
} from "./envelope.js";
import { ErrorCode, KvError } from "./errors.js";
import { encodeSmallFrame, type Field } from "./proto-writer.js";
import { varintSize, writeVarint } from "./varint.js";
import { Wire, WireReader } from "./wire-reader.js";
import type { WriteCondition } from "./write-condition.js";

/**
 * The client's half of the codec: encodes requests and decodes responses,
 * keys and values as views of the frame, never JS strings. A response that
 * breaks the protocol is `KV_ERR_PROTOCOL`.
 */

/** A decoded response (client side). Byte fields are views of the frame; `failure` is there when the server said why. */
export type Response = { readonly failure?: Failure } & (
  | { readonly kind: "set"; readonly error: SetError; readonly version?: number }
  | {
      readonly kind: "get";
      readonly error: GetError;
      readonly key?: Uint8Array;
      readonly value?: Uint8Array;
      readonly version?: number;
      /** When the value expires, ms since the epoch, when the server said. */
      readonly expiresAt?: number;
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
  | { readonly kind: "auth"; readonly error: AuthError; readonly identity?: string }
);

/** Encodes a framed auth request: a bearer token, or an IAM credential (see iam-credential.ts). */
export function encodeAuthRequest(credential: { token: string } | { iam: string }): Uint8Array {
  const text = "token" in credential ? credential.token : credential.iam;
  return encodeSmallFrame([
    { field: 1, varint: MsgType.AuthRequest },
    { field: 14, message: [{ field: "token" in credential ? 1 : 2, bytes: new TextEncoder().encode(text) }] },
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

/**
 * The start of a framed `set_request` whose value of `valueLength` bytes
 * follows it: a streamed upload. `ttlMs` goes before `req`, where a server
 * streaming the value reads it.
 */
export function encodeSetRequestHead(key: Uint8Array, valueLength: number, ttlMs?: number): Uint8Array {
  return encodeDataHead(MsgType.SetRequest, TAG_SET_REQ, setPrefix(undefined, ttlMs), TAG_REQ_DATA, key, valueLength);
}

/**
 * Encodes a framed `set_request`, conditional when `condition` is given and
 * expiring with `ttlMs` (their fields go before `req`); a large value is its
 * own part, uncopied.
 */
export function encodeSetRequest(
  key: Uint8Array,
  value: Uint8Array,
  condition?: WriteCondition,
  ttlMs?: number,
): Uint8Array[] {
  const prefix = setPrefix(condition, ttlMs);
  return parts(encodeWithData(MsgType.SetRequest, TAG_SET_REQ, prefix, TAG_REQ_DATA, key, value));
}

/** `set_request`'s fields before `req`: `ttl_ms` first (see value-head.ts), then the condition. */
function setPrefix(condition: WriteCondition | undefined, ttlMs: number | undefined): readonly number[] {
  const ttl = ttlMs === undefined ? [] : [TAG_TTL_MS, ...varintBytes(ttlMs)];
  if (condition === undefined) return ttl;
  return condition.ifAbsent
    ? [...ttl, TAG_IF_ABSENT, 1]
    : [...ttl, TAG_IF_VERSION, ...varintBytes(condition.ifVersion)];
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
 * `data` (`2` of get_response), its version (`versionField`: 2 of
 * set_response, 3 of get_response) and its expiry (4 of get_response).
 */
function readStatus(
  r: WireReader,
  failure: Failure,
  data: DataFields | null,
  version?: { field: number; value?: number; expiresAt?: number },
): number | undefined {
  let error: number | undefined;
  while (r.more()) {
    r.tag();
    if (readFailure(r, failure)) continue;
    if (r.field === 1 && r.wire === Wire.varint) error = r.int32();
    else if (data !== null && r.field === 2 && r.wire === Wire.bytes) readData(r.message(), data);
    else if (version !== undefined && r.field === version.field && r.wire === Wire.varint) version.value = r.varint();
    else if (data !== null && version !== undefined && r.field === 4 && r.wire === Wire.varint) {
      version.expiresAt = r.varint();
    } else r.skip();
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
  let auth: { error?: number; identity?: string } | undefined;
  let list: ListResponseFields | undefined;
  const data: DataFields = {};
  let dataSeen = false;
  const setVersion: { field: number; value?: number } = { field: 2 };
  const getVersion: { field: number; value?: number; expiresAt?: number } = { field: 3 };
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
      } else if (r.field === 15 && r.wire === Wire.bytes) {
        auth ??= {};
        readAuthResponse(r.message(), auth, failure);
      } else r.skip();
    }
  } catch (err) {
    throw protocolError("malformed envelope", err);
  }
  if (type === MsgType.DeleteResponse || type === MsgType.ExistsResponse) {
    const error = type === MsgType.DeleteResponse ? deleteError : existsError;
    if (
      error !== KeyError.Ok &&
      error !== KeyError.NotFound &&
      error !== KeyError.Internal &&
      error !== KeyError.Forbidden
    ) {
      throw protocolError(`msg_type ${type} with error ${error}`);
    }
    return { kind: type === MsgType.DeleteResponse ? "delete" : "exists", error };
  }
  if (type === MsgType.ListResponse) {
    const error = list?.error;
    if (
      error !== ListError.Ok &&
      error !== ListError.Internal &&
      error !== ListError.BadCursor &&
      error !== ListError.Forbidden
    ) {
      throw protocolError(`list_response with error ${error}`);
    }
    const l = list as ListResponseFields;
    return { kind: "list", error, keys: l.keys, entries: l.entries, cursor: l.cursor };
  }
  if (type === MsgType.ClearResponse) {
    const error = clear?.error;
    if (error !== ClearError.Ok && error !== ClearError.Internal && error !== ClearError.Forbidden)
      throw protocolError(`clear_response with error ${error}`);
    if (error === ClearError.Ok && clear?.removed === undefined)
      throw protocolError("clear_response ok without removed");
    return { kind: "clear", error, removed: clear?.removed ?? 0 };
  }
  if (type === MsgType.SetResponse) {
    if (
      setError !== SetError.Ok &&
      setError !== SetError.Internal &&
      setError !== SetError.Conflict &&
      setError !== SetError.Forbidden
    ) {
      throw protocolError(`set_response with error ${setError}`);
    }
    return setVersion.value === undefined
      ? { kind: "set", error: setError }
      : { kind: "set", error: setError, version: setVersion.value };
  }
  if (type === MsgType.GetResponse) {
    if (
      getError !== GetError.Ok &&
      getError !== GetError.NotFound &&
      getError !== GetError.Internal &&
      getError !== GetError.Forbidden
    ) {
      throw protocolError(`get_response with error ${getError}`);
    }
    if (getError !== GetError.Ok) return { kind: "get", error: getError };
    if (!dataSeen || data.key === undefined || data.value === undefined) {
      throw protocolError("get_response ok without req{key, value}");
    }
    if (getVersion.value !== undefined) {
      const { value: version, expiresAt } = getVersion;
      return expiresAt === undefined
        ? { kind: "get", error: getError, key: data.key, value: data.value, version }
        : { kind: "get", error: getError, key: data.key, value: data.value, version, expiresAt };
    }
    return { kind: "get", error: getError, key: data.key, value: data.value };
  }
  if (type === MsgType.AuthResponse) {
    const error = auth?.error;
    if (error !== AuthError.Ok && error !== AuthError.Internal && error !== AuthError.Forbidden) {
      throw protocolError(`auth_response with error ${error}`);
    }
    if (error === AuthError.Ok && auth?.identity === undefined)
      throw protocolError("auth_response ok without identity");
    return auth?.identity === undefined ? { kind: "auth", error } : { kind: "auth", error, identity: auth.identity };
  }
  throw protocolError(`unexpected msg_type ${type}`);
}

function readAuthResponse(r: WireReader, into: { error?: number; identity?: string }, failure: Failure): void {
  while (r.more()) {
    r.tag();
    if (readFailure(r, failure)) continue;
    if (r.field === 1 && r.wire === Wire.varint) into.error = r.int32();
    else if (r.field === 2 && r.wire === Wire.bytes) into.identity = utf8Text.decode(r.bytes());
    else r.skip();
  }
}
