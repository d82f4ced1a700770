import { describe, expect, test } from "bun:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import * as wire from "../../src/gen/wire/kv_bytes_pb.js";
import { ApiFrames, decodeRequest, encodeClearOk, encodeListOk } from "../../src/protocol/codec.js";
import {
  decodeResponse,
  encodeClearRequest,
  encodeKeyRequest,
  encodeListRequest,
} from "../../src/wire/client-codec.js";
import { KeyError, ListError } from "../../src/wire/envelope.js";
import { body } from "../support/wire.js";

const T = wire.req_envelope_msg_type;

function joined(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function generated(frame: Uint8Array): wire.req_envelope {
  return fromBinary(wire.req_envelopeSchema, body(frame));
}

describe("the codec's delete, exists, list and clear messages, against code generated from proto/kv.proto", () => {
  test("requests the generated code encodes decode to the same fields", () => {
    const env = (e: Parameters<typeof create<typeof wire.req_envelopeSchema>>[1]) =>
      toBinary(wire.req_envelopeSchema, create(wire.req_envelopeSchema, e));
    const key = Uint8Array.of(0xff, 0, 1);
    expect(decodeRequest(env({ type: T.delete_request_t, deleteReq: { key } }))).toEqual({ kind: "delete", key });
    expect(decodeRequest(env({ type: T.exists_request_t, existsReq: { key } }))).toEqual({ kind: "exists", key });
    expect(decodeRequest(env({ type: T.clear_request_t, clearReq: {} }))).toEqual({ kind: "clear" });
    const cursor = Uint8Array.of(9, 8);
    expect(
      decodeRequest(env({ type: T.list_request_t, listReq: { prefix: key, limit: 7, cursor, values: true } })),
    ).toEqual({ kind: "list", prefix: key, limit: 7, cursor, values: true });
    // Absent or 0 is a full page; more than a page is clamped to one.
    expect(decodeRequest(env({ type: T.list_request_t, listReq: {} }))).toMatchObject({ limit: 1000, values: false });
    expect(decodeRequest(env({ type: T.list_request_t, listReq: { limit: 0 } }))).toMatchObject({ limit: 1000 });
    expect(decodeRequest(env({ type: T.list_request_t, listReq: { limit: 4_000_000_000 } }))).toMatchObject({
      limit: 1000,
    });
    // A list or clear with no sub-message is still that request: every field of both is optional.
    expect(decodeRequest(env({ type: T.list_request_t }))).toMatchObject({ kind: "list" });
  });

  test("requests without their required key, or with a response type, are invalid in their own kind", () => {
    const env = (e: Parameters<typeof create<typeof wire.req_envelopeSchema>>[1]) =>
      toBinary(wire.req_envelopeSchema, create(wire.req_envelopeSchema, e));
    expect(decodeRequest(env({ type: T.delete_request_t }))).toMatchObject({ kind: "invalid", reply: "delete" });
    // type = exists_request_t, exists_req = {} (the generated code will not encode a missing required field).
    expect(decodeRequest(Uint8Array.of(0x08, 0x07, 0x42, 0x00))).toMatchObject({
      kind: "invalid",
      reply: "exists",
    });
    expect(decodeRequest(env({ type: T.list_response_t }))).toMatchObject({ kind: "invalid", reply: "list" });
    expect(decodeRequest(env({ type: T.clear_response_t }))).toMatchObject({ kind: "invalid", reply: "clear" });
  });

  test("the client's requests are what the generated code reads", () => {
    const key = Uint8Array.of(1, 2, 3);
    expect(generated(encodeKeyRequest("delete", key))).toMatchObject({ type: T.delete_request_t, deleteReq: { key } });
    expect(generated(encodeKeyRequest("exists", key))).toMatchObject({ type: T.exists_request_t, existsReq: { key } });
    expect(generated(encodeClearRequest()).type).toBe(T.clear_request_t);
    const list = generated(encodeListRequest({ prefix: key, limit: 5, cursor: key, values: true }));
    expect(list.listReq).toMatchObject({ prefix: key, limit: 5, cursor: key, values: true });
  });

  test("status responses are what the generated code reads", () => {
    expect(generated(ApiFrames.deleteOk).deleteResp?.error).toBe(wire.delete_response_error_t.ok);
    expect(generated(ApiFrames.deleteNotFound).deleteResp?.error).toBe(wire.delete_response_error_t.not_found);
    expect(generated(ApiFrames.existsInternal).existsResp?.error).toBe(wire.exists_response_error_t.internal);
    expect(generated(ApiFrames.listBadCursor).listResp?.error).toBe(wire.list_response_error_t.bad_cursor);
    const clear = generated(encodeClearOk(2 ** 40 + 3));
    expect(clear.clearResp).toMatchObject({ error: wire.clear_response_error_t.ok, removed: BigInt(2 ** 40 + 3) });
    expect(decodeResponse(body(encodeClearOk(2 ** 40 + 3)))).toEqual({ kind: "clear", error: 1, removed: 2 ** 40 + 3 });
    expect(decodeResponse(body(ApiFrames.existsNotFound))).toEqual({ kind: "exists", error: KeyError.NotFound });
  });

  test("list responses of any keys, values and cursor read back the same, here and in the generated code", () => {
    const entry = fc.record({ key: fc.uint8Array({ maxLength: 40 }), value: fc.uint8Array({ maxLength: 40_000 }) });
    fc.assert(
      fc.property(
        fc.array(entry, { maxLength: 6 }),
        fc.boolean(),
        fc.option(fc.uint8Array({ maxLength: 30 }), { nil: undefined }),
        (entries, values, cursor) => {
          const frame = joined(encodeListOk(entries, values, cursor));
          const gen = generated(frame).listResp;
          expect(gen?.error).toBe(wire.list_response_error_t.ok);
          const ours = decodeResponse(body(frame));
          if (ours.kind !== "list") throw new Error("not a list response");
          expect(ours.error).toBe(ListError.Ok);
          if (values) {
            expect(gen?.entries.map((e) => [e.key, e.value])).toEqual(entries.map((e) => [e.key, e.value]));
            expect(ours.entries).toEqual(entries);
          } else {
            expect(gen?.keys).toEqual(entries.map((e) => e.key));
            expect(ours.keys).toEqual(entries.map((e) => e.key));
          }
          expect(ours.cursor).toEqual(cursor);
        },
      ),
      { numRuns: 200 },
    );
  });

  test("a large value in a list response is its own part, not copied", () => {
    const value = new Uint8Array(100_000);
    const parts = encodeListOk([{ key: Uint8Array.of(1), value }], true, undefined);
    expect(parts.some((p) => p === value)).toBe(true);
  });
});
