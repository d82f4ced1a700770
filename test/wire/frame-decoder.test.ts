import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { ErrorCode } from "../../src/wire/errors.js";
import { FrameDecoder, FrameMode } from "../../src/wire/frame-decoder.js";
import { varintSize, writeVarint } from "../../src/wire/varint.js";
import { expectKvError } from "../support/wire.js";

function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(varintSize(body.length) + body.length);
  out.set(body, writeVarint(out, 0, body.length));
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function decodeAll(decoder: FrameDecoder, chunks: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const c of chunks)
    decoder.push(c, (f) => {
      out.push(f.slice());
    });
  return out;
}

function split(bytes: Uint8Array, size: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.slice(i, i + size));
  return chunks;
}

const bodies = [
  new Uint8Array(0),
  Uint8Array.of(1),
  new Uint8Array(127).fill(7),
  new Uint8Array(128).fill(8),
  new Uint8Array(70_000).fill(9),
];
const stream = concat(bodies.map(frame));

describe("FrameDecoder", () => {
  test("frames that arrive whole in one chunk come out as views of that chunk, without copying", () => {
    const decoder = new FrameDecoder(1 << 20);
    const seen: Uint8Array[] = [];
    decoder.push(stream, (f) => {
      seen.push(f);
    });
    expect(seen.length).toBe(bodies.length);
    for (const [i, f] of seen.entries()) {
      expect(f.buffer).toBe(stream.buffer);
      expect(Buffer.from(f).equals(Buffer.from(bodies[i] as Uint8Array))).toBe(true);
    }
    expect(decoder.idle).toBe(true);
  });

  test("a frame callback that returns true stops the decoder right after that frame until resume", () => {
    const decoder = new FrameDecoder(1 << 20);
    const seen: Uint8Array[] = [];
    const pauseEach = (f: Uint8Array) => {
      seen.push(f.slice());
      return true;
    };
    expect(decoder.push(stream, pauseEach)).toBe(true);
    expect(seen.length).toBe(1);
    expect(decoder.heldBytes).toBe(stream.length - frame(bodies[0] as Uint8Array).length);
    // A chunk arriving while paused waits behind the held rest, unparsed.
    const extra = frame(Uint8Array.of(42));
    expect(decoder.push(extra, pauseEach)).toBe(true);
    expect(seen.length).toBe(1);
    while (decoder.resume(pauseEach)) {}
    expect(seen).toEqual([...bodies, Uint8Array.of(42)]);
    expect(decoder.heldBytes).toBe(0);
    expect(decoder.idle).toBe(true);
  });

  test("resume parses everything held when the callback no longer pauses, and discard drops it", () => {
    const decoder = new FrameDecoder(1 << 20);
    const seen: Uint8Array[] = [];
    decoder.push(stream, () => true);
    expect(decoder.resume((f) => void seen.push(f.slice()))).toBe(false);
    expect(seen).toEqual(bodies.slice(1));
    decoder.push(stream, () => true);
    decoder.discard();
    expect(decoder.heldBytes).toBe(0);
    expect(decoder.resume(() => true)).toBe(false);
  });

  test("a stream fed one byte at a time yields the same frames", () => {
    expect(decodeAll(new FrameDecoder(1 << 20), split(stream, 1))).toEqual(bodies);
  });

  test("a stream fed in chunks of two bytes yields the same frames", () => {
    expect(decodeAll(new FrameDecoder(1 << 20), split(stream, 2))).toEqual(bodies);
  });

  test("a split frame is copied out so it does not pin the chunk it started in", () => {
    const decoder = new FrameDecoder(1 << 20);
    const whole = frame(new Uint8Array(10).fill(3));
    const first = whole.slice(0, 5);
    const seen: Uint8Array[] = [];
    decoder.push(first, (f) => {
      seen.push(f);
    });
    expect(decoder.bufferedBytes).toBe(4);
    first.fill(0xee);
    decoder.push(whole.slice(5), (f) => {
      seen.push(f);
    });
    expect(seen).toEqual([new Uint8Array(10).fill(3)]);
  });

  test("a frame of exactly the maximum size is accepted", () => {
    const decoder = new FrameDecoder(1000);
    expect(decodeAll(decoder, [frame(new Uint8Array(1000))])).toEqual([new Uint8Array(1000)]);
  });

  test("a frame one byte over the maximum is refused from its length prefix alone", () => {
    const decoder = new FrameDecoder(1000);
    const prefix = new Uint8Array(2);
    writeVarint(prefix, 0, 1001);
    expectKvError(() => decoder.push(prefix, () => {}), ErrorCode.FrameTooLarge);
  });

  test("an oversized length is refused before its prefix is even complete", () => {
    const decoder = new FrameDecoder(100);
    // 0xff 0x7f declares 16383; the first byte alone already means at least 127.
    expectKvError(() => decoder.push(Uint8Array.of(0xff), () => {}), ErrorCode.FrameTooLarge);
  });

  test("a length prefix longer than five bytes is a bad frame", () => {
    const decoder = new FrameDecoder(0xffff_ffff);
    expectKvError(() => decoder.push(Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x01), () => {}), ErrorCode.BadFrame);
  });

  test("a non-minimal length prefix is accepted as protobuf allows", () => {
    const decoder = new FrameDecoder(100);
    expect(decodeAll(decoder, [Uint8Array.of(0x82, 0x00, 5, 6)])).toEqual([Uint8Array.of(5, 6)]);
  });

  test("a large frame arriving in 64 KiB chunks is assembled exactly", () => {
    const body = new Uint8Array(5 * 1024 * 1024 + 3);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
    const out = decodeAll(new FrameDecoder(8 * 1024 * 1024), split(frame(body), 64 * 1024));
    expect(out.length).toBe(1);
    expect(Buffer.from(out[0] as Uint8Array).equals(Buffer.from(body))).toBe(true);
  });

  test("a peer that declares a large frame and sends little makes the decoder hold little", () => {
    const decoder = new FrameDecoder(64 * 1024 * 1024);
    const prefix = new Uint8Array(5);
    const end = writeVarint(prefix, 0, 64 * 1024 * 1024);
    decoder.push(concat([prefix.subarray(0, end), new Uint8Array(10)]), () => {});
    expect(decoder.bufferedBytes).toBe(10);
  });

  test("frames cut at random points come out the same as from one chunk", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (framesIn, cutsRaw) => {
          const bytes = concat(framesIn.map(frame));
          const cuts = [...new Set(cutsRaw.map((c) => (bytes.length === 0 ? 0 : c % bytes.length)))].sort(
            (a, b) => a - b,
          );
          const chunks: Uint8Array[] = [];
          let last = 0;
          for (const c of [...cuts, bytes.length]) {
            chunks.push(bytes.slice(last, c));
            last = c;
          }
          const out = decodeAll(new FrameDecoder(1 << 20), chunks);
          expect(out).toEqual(framesIn);
        },
      ),
      { numRuns: 300 },
    );
  });

  test("a decoder refuses a maximum it cannot represent", () => {
    expect(() => new FrameDecoder(-1)).toThrow(RangeError);
    expect(() => new FrameDecoder(2 ** 32)).toThrow(RangeError);
  });

  test("a streamed frame's body comes out in order as views of the chunks, whatever the cuts, with frames around it whole", () => {
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 30 }), (cutsRaw) => {
        const big = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff);
        const [first, second] = [Uint8Array.of(1, 2, 3), Uint8Array.of(4)];
        const small = [first, second];
        const bytes = concat([frame(first), frame(big), frame(second)]);
        const cuts = [...new Set(cutsRaw.map((c) => c % bytes.length))].sort((a, b) => a - b);
        const frames: Uint8Array[] = [];
        const pieces: Uint8Array[] = [];
        let lasts = 0;
        const asked: number[] = [];
        const decoder = new FrameDecoder(1 << 20);
        const consumer = {
          frame: (f: Uint8Array) => {
            frames.push(f.slice());
          },
          begin: (length: number) => {
            asked.push(length);
            return length >= 1000 ? FrameMode.stream : FrameMode.buffer;
          },
          piece: (p: Uint8Array, last: boolean) => {
            pieces.push(p.slice());
            if (last) lasts++;
          },
        };
        let at = 0;
        for (const c of [...cuts, bytes.length]) {
          decoder.push(bytes.slice(at, c), consumer);
          at = c;
        }
        const streamed = concat(pieces);
        if (asked.includes(5000)) {
          // The big frame spanned chunks: streamed, never assembled.
          expect(streamed).toEqual(big);
          expect(lasts).toBe(1);
          expect(frames).toEqual(small);
        } else {
          // It lay whole in one chunk: handed out whole, as any frame.
          expect(pieces).toEqual([]);
          expect(frames).toEqual([first, big, second]);
        }
        expect(decoder.idle).toBe(true);
        expect(decoder.assemblyBytes).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  test("a piece callback that returns true pauses the decoder right after that piece until resume", () => {
    const body = new Uint8Array(3000).fill(5);
    const bytes = concat([frame(body), frame(Uint8Array.of(9))]);
    const decoder = new FrameDecoder(1 << 20);
    const got: number[] = [];
    const frames: Uint8Array[] = [];
    const consumer = {
      frame: (f: Uint8Array) => {
        frames.push(f.slice());
      },
      begin: () => FrameMode.stream,
      piece: (p: Uint8Array) => {
        got.push(p.length);
        return true;
      },
    };
    // Each chunk's share of the body is one piece, and each pause holds what follows it.
    expect(decoder.push(bytes.subarray(0, 1000), consumer)).toBe(true);
    expect(decoder.heldBytes).toBe(0);
    expect(decoder.push(bytes.subarray(1000), consumer)).toBe(true);
    expect(got).toEqual([998, 2002]);
    // Paused after the last piece: the small frame behind it waits.
    expect(frames).toEqual([]);
    expect(decoder.heldBytes).toBe(2);
    expect(decoder.resume(consumer)).toBe(false);
    expect(frames).toEqual([Uint8Array.of(9)]);
  });

  test("begin is asked only about frames that span chunks, and buffer assembles them as before", () => {
    const asked: number[] = [];
    const frames: Uint8Array[] = [];
    const decoder = new FrameDecoder(1 << 20);
    const consumer = {
      frame: (f: Uint8Array) => {
        frames.push(f.slice());
      },
      begin: (length: number) => {
        asked.push(length);
        return FrameMode.buffer;
      },
    };
    const whole = new Uint8Array(100).fill(1);
    const split = new Uint8Array(200).fill(2);
    const bytes = concat([frame(whole), frame(split)]);
    decoder.push(bytes.subarray(0, 150), consumer);
    decoder.push(bytes.subarray(150), consumer);
    expect(asked).toEqual([200]);
    expect(frames).toEqual([whole, split]);
  });
});
