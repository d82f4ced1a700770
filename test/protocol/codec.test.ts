import { describe, expect, test } from "bun:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import fc from "fast-check";
import * as seed from "../../src/gen/kv_pb.js";
import * as wire from "../../src/gen/wire/kv_bytes_pb.js";
import { decodeRequest, encodeGetOk, encodeGetOkInto, encodeGetOkScratch, Frames } from "../../src/protocol/codec.js";
import { decodeResponse, encodeGetRequest, encodeSetRequest } from "../../src/wire/client-codec.js";
import { GetError, SetError } from "../../src/wire/envelope.js";
import { ErrorCode, KvError } from "../../src/wire/errors.js";
import { WireReader } from "../../src/wire/wire-reader.js";
import { body, expectKvError, msg } from "../support/wire.js";

function joined(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

const bytesArb = fc.uint8Array({ maxLength: 20_000 });

describe("decodeRequest", () => {
  test("reads a set request encoded by the generated seed-schema code", () => {
    const msg = create(seed.req_envelopeSchema, {
      type: seed.req_envelope_msg_type.set_request_t,
      setReq: { req: { key: "k", value: "v".repeat(5000) } },
    });
    const req = decodeRequest(toBinary(seed.req_envelopeSchema, msg));
    expect(req.kind).toBe("set");
    if (req.kind !== "set") return;
    expect(Buffer.from(req.key).toString()).toBe("k");
    expect(Buffer.from(req.value).toString()).toBe("v".repeat(5000));
  });

  test("returns keys and values as views of the frame, never copies", () => {
    const frame = toBinary(
      wire.req_envelopeSchema,
      create(wire.req_envelopeSchema, { type: 1, setReq: { req: { key: Uint8Array.of(1), value: Uint8Array.of(2) } } }),
    );
    const req = decodeRequest(frame);
    if (req.kind !== "set") throw new Error("expected set");
    expect(req.value.buffer).toBe(frame.buffer);
  });

  test("round-trips arbitrary bytes, including invalid UTF-8, from the bytes twin", () => {
    fc.assert(
      fc.property(bytesArb, bytesArb, (key, value) => {
        const frame = toBinary(
          wire.req_envelopeSchema,
          create(wire.req_envelopeSchema, {
            type: wire.req_envelope_msg_type.set_request_t,
            setReq: { req: { key, value } },
          }),
        );
        const req = decodeRequest(frame);
        expect(req).toEqual({ kind: "set", key, value });
      }),
      { numRuns: 100 },
    );
  });

  test("reads a get request, skipping unknown fields", () => {
    const base = toBinary(
      wire.req_envelopeSchema,
      create(wire.req_envelopeSchema, { type: 3, getReq: { key: Uint8Array.of(0xff, 0) } }),
    );
    // Field 15, varint 1, appended: unknown fields must be skipped.
    const withUnknown = joined([base, Uint8Array.of(0x78, 0x01)]);
    expect(decodeRequest(withUnknown)).toEqual({ kind: "get", key: Uint8Array.of(0xff, 0) });
  });

  test("merges a repeated embedded message as protobuf does: the last key wins", () => {
    const a = msg([4, msg([1, Uint8Array.of(1)])]);
    const b = toBinary(
      wire.req_envelopeSchema,
      create(wire.req_envelopeSchema, { type: 3, getReq: { key: Uint8Array.of(2) } }),
    );
    expect(decodeRequest(joined([a, b]))).toEqual({ kind: "get", key: Uint8Array.of(2) });
  });

  const k = Uint8Array.of(1);
  const invalidCases: [string, Uint8Array, "set" | "get"][] = [
    ["a set request without set_req", msg([1, 1]), "set"],
    ["a set request whose set_req lacks req", msg([1, 1], [2, msg()]), "set"],
    ["a set request whose data lacks key", msg([1, 1], [2, msg([1, msg([2, k])])]), "set"],
    ["a set request whose data lacks value", msg([1, 1], [2, msg([1, msg([1, k])])]), "set"],
    ["a get request without get_req", msg([1, 3]), "get"],
    ["a get request whose get_req lacks key", msg([1, 3], [4, msg()]), "get"],
    ["a set response sent as a request", msg([1, 2], [3, msg([1, 1])]), "set"],
    ["a get response sent as a request", msg([1, 4], [5, msg([1, 1])]), "get"],
    ["an envelope without type but with set_req", msg([2, msg([1, msg([1, k], [2, k])])]), "set"],
    ["an empty envelope", msg(), "get"],
    ["a key sent with the wrong wire type", msg([1, 3], [4, msg([1, 7])]), "get"],
  ];
  for (const [name, frame, reply] of invalidCases) {
    test(`answers ${name} as invalid with a ${reply} response`, () => {
      const req = decodeRequest(frame);
      expect(req.kind).toBe("invalid");
      if (req.kind === "invalid") expect(req.reply).toBe(reply);
    });
  }

  test("reports an unknown message type instead of defaulting it", () => {
    // type = 99 (not in the closed enum) then set_req.
    const req = decodeRequest(Uint8Array.of(0x08, 0x63, 0x12, 0x00));
    expect(req).toMatchObject({ kind: "invalid", reply: "set", reason: "unknown msg_type 99" });
  });

  test("throws KV_ERR_BAD_ENVELOPE for bytes that are not a protobuf message", () => {
    for (const bad of [
      Uint8Array.of(0xff, 0xff),
      Uint8Array.of(0x12, 0x05, 0x01),
      Uint8Array.of(0x0c),
      Uint8Array.of(0x00),
    ]) {
      expectKvError(() => decodeRequest(bad), ErrorCode.BadEnvelope);
    }
  });
});

describe("response encoding", () => {
  test("status frames decode with the generated seed-schema code", () => {
    const decode = (f: Uint8Array) => fromBinary(seed.req_envelopeSchema, body(f));
    expect(decode(Frames.setOk).setResp?.error).toBe(seed.set_response_error_t.ok);
    expect(decode(Frames.setInternal).setResp?.error).toBe(seed.set_response_error_t.internal);
    expect(decode(Frames.getNotFound).getResp?.error).toBe(seed.get_response_error_t.not_found);
    expect(decode(Frames.getInternal).getResp?.error).toBe(seed.get_response_error_t.internal);
    expect(decode(Frames.getInternal).type).toBe(seed.req_envelope_msg_type.get_response_t);
  });

  test("get responses of any size decode with the generated code byte for byte", () => {
    fc.assert(
      fc.property(bytesArb, bytesArb, (key, value) => {
        const frame = joined(encodeGetOk(key, value));
        const msg = fromBinary(wire.req_envelopeSchema, body(frame));
        expect(msg.type).toBe(wire.req_envelope_msg_type.get_response_t);
        expect(msg.getResp?.error).toBe(wire.get_response_error_t.ok);
        expect(msg.getResp?.req?.key).toEqual(key);
        expect(msg.getResp?.req?.value).toEqual(value);
        expect(decodeResponse(body(frame))).toEqual({ kind: "get", error: GetError.Ok, key, value });
      }),
      { numRuns: 100 },
    );
  });

  test("get answers encoded in place into a writer's stage, or into scratch, are the same bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1100 }), fc.uint8Array({ maxLength: 20_000 }), (key, value) => {
        const expected = new Uint8Array(Buffer.concat(encodeGetOk(key, value)));
        const scratch = encodeGetOkScratch(key, value);
        expect(new Uint8Array(Buffer.concat(scratch instanceof Uint8Array ? [scratch] : scratch))).toEqual(expected);
        const stage = new Uint8Array(32 * 1024).fill(0xee);
        let used = 7;
        const target = {
          stage,
          reserve(n: number) {
            if (used + n > stage.length) return -1;
            const at = used;
            used += n;
            return at;
          },
        };
        if (encodeGetOkInto(target, key, value)) {
          expect(stage.subarray(7, used)).toEqual(expected);
          expect(stage[used]).toBe(0xee);
        } else {
          expect(used).toBe(7);
        }
      }),
    );
  });

  test("a large value is returned as its own part rather than copied", () => {
    const value = new Uint8Array(1 << 20);
    const parts = encodeGetOk(Uint8Array.of(1), value);
    expect(parts.length).toBe(2);
    expect(parts[1]).toBe(value);
  });

  test("client requests decode with the generated code", () => {
    fc.assert(
      fc.property(bytesArb, bytesArb, (key, value) => {
        const set = fromBinary(wire.req_envelopeSchema, body(joined(encodeSetRequest(key, value))));
        expect(set.setReq?.req?.key).toEqual(key);
        expect(set.setReq?.req?.value).toEqual(value);
        const get = fromBinary(wire.req_envelopeSchema, body(encodeGetRequest(key)));
        expect(get.type).toBe(wire.req_envelope_msg_type.get_request_t);
        expect(get.getReq?.key).toEqual(key);
      }),
      { numRuns: 50 },
    );
  });

  test("decodeResponse reads set responses and refuses unknown or incomplete ones", () => {
    expect(decodeResponse(body(Frames.setOk))).toEqual({ kind: "set", error: SetError.Ok });
    expect(decodeResponse(body(Frames.getNotFound))).toEqual({ kind: "get", error: GetError.NotFound });
    const okWithoutData = msg([1, 4], [5, msg([1, 1])]);
    expect(() => decodeResponse(okWithoutData)).toThrow(KvError);
    expect(() => decodeResponse(Uint8Array.of(0x08, 0x01))).toThrow(KvError);
  });
});

describe("WireReader", () => {
  test("reads int32 as protobuf does, including negative values sent as 10-byte varints", () => {
    for (const v of [0, 1, 127, 128, 2 ** 31 - 1, -1, -(2 ** 31), -12345]) {
      const bytes = new BinaryWriter().int32(v).finish();
      expect(new WireReader(bytes).int32()).toBe(v);
    }
  });

  test("skips unknown fields of every wire type, nested groups included", () => {
    const w = new BinaryWriter();
    w.tag(20, WireType.Varint).uint64(2n ** 63n);
    w.tag(21, WireType.Bit64).fixed64(7n);
    w.tag(22, WireType.Bit32).fixed32(7);
    w.tag(23, WireType.StartGroup).tag(1, WireType.Varint).int32(5);
    w.tag(24, WireType.StartGroup).tag(2, WireType.LengthDelimited).bytes(Uint8Array.of(1));
    w.tag(24, WireType.EndGroup).tag(23, WireType.EndGroup);
    w.tag(1, WireType.Varint)
      .int32(3)
      .tag(4, WireType.LengthDelimited)
      .bytes(msg([1, Uint8Array.of(9)]));
    expect(decodeRequest(w.finish())).toEqual({ kind: "get", key: Uint8Array.of(9) });
  });

  test("refuses truncated fields, mismatched or unterminated groups, and overlong varints", () => {
    const bad = [
      Uint8Array.of(0x08, 0x80),
      Uint8Array.of(0x22, 0x05, 0x0a),
      Uint8Array.of(0x09, 1, 2, 3),
      Uint8Array.of(0x1b, 0x08, 0x01),
      Uint8Array.of(0x1b, 0x24),
      Uint8Array.of(0x08, ...new Array(10).fill(0xff), 0x01),
    ];
    for (const bytes of bad) expectKvError(() => decodeRequest(bytes), ErrorCode.BadEnvelope);
  });
});
