import { describe, expect, test } from "bun:test";
import { decodeRequest } from "../../src/protocol/codec.js";
import { encodeSetRequest } from "../../src/wire/client-codec.js";
import { ErrorCode } from "../../src/wire/errors.js";
import { checkSetTrailer, MAX_SET_TRAILER_BYTES, scanValueHead } from "../../src/wire/value-head.js";
import { body, expectKvError, msg } from "../support/wire.js";

const enc = new TextEncoder();
const value = new Uint8Array(5000).fill(7);

describe("scanValueHead", () => {
  test("an encoder's set shows its key and where its value lies, from as few bytes as carry them", () => {
    const frame = body(new Uint8Array(Buffer.concat(encodeSetRequest(enc.encode("the-key"), value))));
    let firstFound = -1;
    for (let n = 0; n <= 40; n++) {
      const head = scanValueHead(frame.subarray(0, n), frame.length);
      if (head.kind === "stream") {
        if (firstFound < 0) firstFound = n;
        expect(new TextDecoder().decode(head.key)).toBe("the-key");
        expect(frame.subarray(head.valueStart, head.valueStart + head.valueLength)).toEqual(value);
        expect(head.dataEnd).toBe(frame.length);
        expect(head.setReqEnd).toBe(frame.length);
      } else {
        expect(head.kind).toBe("more");
      }
    }
    // type (2) + set_req tag and length (3) + req tag and length (3) + key with tag and length (9) + value tag and length (3).
    expect(firstFound).toBe(20);
  });

  test("the value before the key is buffered, as is every shape an encoder does not write", () => {
    const key = enc.encode("k");
    const shapes = {
      valueFirst: msg([1, 1], [2, msg([1, msg([2, value], [1, key])])]),
      typeLast: msg([2, msg([1, msg([1, key], [2, value])])], [1, 1]),
      notASet: msg([1, 3], [2, msg([1, msg([1, key], [2, value])])]),
      unknownFirst: msg([99, 5], [1, 1], [2, msg([1, msg([1, key], [2, value])])]),
      unknownInData: msg([1, 1], [2, msg([1, msg([3, 1], [1, key], [2, value])])]),
      trailerTooLong: msg(
        [1, 1],
        [2, msg([1, msg([1, key], [2, value])])],
        [15, new Uint8Array(MAX_SET_TRAILER_BYTES)],
      ),
    };
    for (const [name, frame] of Object.entries(shapes)) {
      expect({ name, kind: scanValueHead(frame, frame.length).kind }).toEqual({ name, kind: "buffer" });
    }
  });

  test("lengths that do not nest are left to the whole-frame decoder", () => {
    const key = enc.encode("k");
    const good = msg([1, 1], [2, msg([1, msg([1, key], [2, value])])]);
    // Claims more bytes than the frame has.
    expect(scanValueHead(good, good.length - 1).kind).toBe("buffer");
    const tooLong = good.slice();
    tooLong[tooLong.length - value.length - 2] = 0xff; // the value's length prefix, made longer than data
    expect(scanValueHead(tooLong, tooLong.length).kind).toBe("buffer");
  });
});

describe("checkSetTrailer", () => {
  const key = enc.encode("k");
  /** The trailer of `frame` after its value, and the rests of data and set_req, as the streamer computes them. */
  function trailerOf(frame: Uint8Array) {
    const head = scanValueHead(frame, frame.length);
    if (head.kind !== "stream") throw new Error(`not streamed: ${head.kind}`);
    const valueEnd = head.valueStart + head.valueLength;
    return [frame.subarray(valueEnd), head.dataEnd - valueEnd, head.setReqEnd - head.dataEnd] as const;
  }

  test("unknown fields after the value are skipped, as a whole frame skips them", () => {
    const frame = msg([1, 1], [2, msg([1, msg([1, key], [2, value], [7, 3])], [9, key])], [20, key], [21, 4]);
    expect(decodeRequest(frame).kind).toBe("set");
    expect(checkSetTrailer(...trailerOf(frame))).toBeUndefined();
  });

  test("a repeated key, value, req or set_req is refused: the last occurrence would have to win", () => {
    const frames = [
      msg([1, 1], [2, msg([1, msg([1, key], [2, value], [1, key])])]),
      msg([1, 1], [2, msg([1, msg([1, key], [2, value], [2, value])])]),
      msg([1, 1], [2, msg([1, msg([1, key], [2, value])], [1, msg([1, key])])]),
      msg([1, 1], [2, msg([1, msg([1, key], [2, value])])], [2, msg()]),
    ];
    for (const frame of frames) expect(checkSetTrailer(...trailerOf(frame))?.reply).toBe("set");
  });

  test("a msg_type that changes after the value is refused in the new type's kind", () => {
    const frame = msg([1, 1], [2, msg([1, msg([1, key], [2, value])])], [1, 3], [4, msg([1, key])]);
    expect(checkSetTrailer(...trailerOf(frame))).toMatchObject({ reply: "get" });
    const unknown = msg([1, 1], [2, msg([1, msg([1, key], [2, value])])], [1, 77]);
    expect(checkSetTrailer(...trailerOf(unknown))).toMatchObject({ reply: "set" });
  });

  test("bytes after the value that are not protobuf are a bad envelope, as in a whole frame", () => {
    const frame = msg([1, 1], [2, msg([1, msg([1, key], [2, value], [7, 3])])]);
    const broken = frame.slice();
    broken[broken.length - 2] = (7 << 3) | 2; // field 7 as length-delimited, its length running past data
    broken[broken.length - 1] = 9;
    expect(() => decodeRequest(broken)).toThrow();
    expectKvError(() => checkSetTrailer(...trailerOf(broken)), ErrorCode.BadEnvelope);
  });
});
