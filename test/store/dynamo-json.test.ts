import { describe, expect, test } from "bun:test";
import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { base64FromBytes, base64Into, base64Length, discard } from "../../src/bytes.js";
import { type AttributeMap, parseAttributeMap, parseResponse, writeAttributeMap } from "../../src/store/dynamo-json.js";
import { JsonBytes } from "../../src/store/json-bytes.js";

const ascii = new TextEncoder();
/** The DynamoDB JSON text the client would send for `map`. */
function attributeMapJson(map: AttributeMap): string {
  const out = new JsonBytes();
  writeAttributeMap(out, map);
  const text = new TextDecoder().decode(out.bytes);
  out.release();
  return text;
}

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");
const random = (n: number) => new Uint8Array(Buffer.from(crypto.getRandomValues(new Uint8Array(n))));

describe("DynamoDB JSON", () => {
  test("every attribute type survives text and back, binary byte for byte", () => {
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const item: Record<string, AttributeValue> = {
      pk: { B: bytes },
      empty: { B: new Uint8Array(0) },
      s: { S: 'quote " backslash \\ newline \n ünï' },
      n: { N: "-12.5e3" },
      t: { BOOL: true },
      f: { BOOL: false },
      z: { NULL: true },
      m: { M: { inner: { B: Uint8Array.of(0xff) }, l: { L: [{ N: "1" }, { S: "x" }] } } },
      ss: { SS: ["a", "b"] },
      ns: { NS: ["1", "2"] },
      bs: { BS: [Uint8Array.of(1), Uint8Array.of(2, 3)] },
      'name with "quotes"': { S: "" },
    };
    const text = attributeMapJson(item);
    expect(JSON.parse(text).pk).toEqual({ B: Buffer.from(bytes).toString("base64") });
    expect(parseAttributeMap(JSON.parse(text))).toEqual(item);
  });

  test("values this codec does not know are refused, not sent or taken as empty", () => {
    expect(() => attributeMapJson({ x: {} as AttributeValue })).toThrow(TypeError);
    expect(() => parseAttributeMap({ x: { Q: "?" } })).toThrow(TypeError);
    expect(() => parseAttributeMap({ x: { B: 5 } })).toThrow(TypeError);
    expect(() => parseAttributeMap([])).toThrow(TypeError);
    expect(() => parseAttributeMap({ x: { B: "not base64!" } })).toThrow();
  });

  test("base64 written into bytes matches the native encoder at every length mod 3, and decodes back", () => {
    for (const n of [0, 1, 2, 3, 4, 5, 2047, 2048, 2049, 65_536, 389_120, 389_121, 389_122]) {
      const bytes = random(n);
      const out = new Uint8Array(base64Length(n) + 3).fill(0x2a);
      const end = base64Into(bytes, out, 3);
      expect(end).toBe(3 + base64Length(n));
      expect(new TextDecoder().decode(out.subarray(3, end))).toBe(b64(bytes));
      expect(base64FromBytes(out, 3, end)).toEqual(bytes);
    }
  });

  test("discarding frees a buffer held whole, and leaves a view of part of a buffer alone", () => {
    const whole = new Uint8Array(100_000).fill(7);
    discard(whole);
    expect(whole.length).toBe(0);
    expect(whole.buffer.byteLength).toBe(0);
    discard(whole); // a second discard is harmless

    const shared = new Uint8Array(1000).fill(9);
    const part = shared.subarray(10, 20);
    discard(part);
    expect(part.length).toBe(10);
    expect(shared[0]).toBe(9);
  });

  test("a parsed answer keeps its binary values when the answer's bytes are discarded", () => {
    const blob = random(200_000);
    const bytes = new TextEncoder().encode(JSON.stringify({ Item: { ct: { B: b64(blob) } } }));
    const parsed = parseResponse(bytes) as { Item: Record<string, unknown> };
    discard(bytes);
    expect(parseAttributeMap(parsed.Item).ct?.B).toEqual(blob);
  });

  test("base64 decoding from bytes refuses what is not padded base64", () => {
    for (const bad of ["QUJD?", "QUJ", "QU=D", "Q===", "QUJD QUJD", "QUJ\u00e9"]) {
      const text = ascii.encode(bad);
      expect(() => base64FromBytes(text, 0, text.length)).toThrow(SyntaxError);
    }
  });

  test("text and string literals written as bytes are the UTF-8 of what JSON.stringify makes, ASCII or not, short or long", () => {
    const samples = [
      "",
      "plain",
      'quote " and backslash \\',
      "control \u0001 \n \t",
      "é and 🎉",
      "DEL \u007f",
      "x".repeat(256),
      `${"y".repeat(255)}é`,
      "z".repeat(5000),
    ];
    for (const text of samples) {
      const out = new JsonBytes().string(text).raw(",").raw(text);
      expect(new TextDecoder().decode(out.bytes)).toBe(`${JSON.stringify(text)},${text}`);
      out.release();
    }
  });

  test("a request body holds the same JSON whether a binary value goes through a string or straight into bytes", () => {
    for (const n of [10, 2047, 2048, 100_000]) {
      const value = random(n);
      const item = { pk: { B: value }, s: { S: 'é"' } };
      const parsed = JSON.parse(attributeMapJson(item));
      expect(parsed).toEqual({ pk: { B: b64(value) }, s: { S: 'é"' } });
    }
    const body = new JsonBytes().raw("{").string("k").raw(":").raw("1}");
    expect(new TextDecoder().decode(body.bytes)).toBe('{"k":1}');
    body.release();
    expect(body.length).toBe(0);
  });

  test("a large response's binary values are decoded from its bytes, and the rest parses as JSON would", () => {
    const big = random(300_000);
    const small = random(100);
    const text = JSON.stringify({
      Item: {
        ct: { B: b64(big) },
        iv: { B: b64(small) },
        name: { S: '"B":"not binary' },
        odd: { S: "\u0001" },
      },
    });
    const parsed = parseResponse(ascii.encode(text)) as { Item: unknown };
    expect(parseAttributeMap(parsed.Item)).toEqual({
      ct: { B: big },
      iv: { B: small },
      name: { S: '"B":"not binary' },
      odd: { S: "\u0001" },
    });
    // Spaces around the colon (moto's json.dumps) are found too; the result is the same.
    const spaced = text.replace('"B":', '"B" : ');
    expect(parseAttributeMap((parseResponse(ascii.encode(spaced)) as { Item: unknown }).Item).ct).toEqual({ B: big });
  });

  test("a batch answer of many items decodes each large binary value and parses the rest, in order", () => {
    const items = Array.from({ length: 60 }, (_, i) => ({
      pk: { B: random(20) },
      iv: { B: random(12) },
      c: { B: random(i % 20 === 0 ? 5000 : 1040) },
      // A string that reads like a large binary key only through its escaped quotes.
      s: { S: i === 7 ? `"B":"${"A".repeat(5000)}"` : "x" },
    }));
    const json = {
      Responses: {
        t: items.map((it) => ({ ...it, pk: { B: b64(it.pk.B) }, iv: { B: b64(it.iv.B) }, c: { B: b64(it.c.B) } })),
      },
    };
    const bytes = new TextEncoder().encode(JSON.stringify(json));
    expect(bytes.length).toBeGreaterThan(64 * 1024);
    const parsed = parseResponse(bytes) as { Responses: { t: unknown[] } };
    expect(parsed.Responses.t.map(parseAttributeMap)).toEqual(items);
    // A key that ends in `"B"` only through an escaped quote is not a binary value's key.
    const long = b64(random(70_000));
    const odd = `{"x":{"\\"B":"${long}"}}`;
    expect(parseResponse(ascii.encode(odd))).toEqual(JSON.parse(odd));
  });

  test("a large response whose binary value is escaped, or that is not JSON, is never read wrongly", () => {
    const big = b64(random(90_000));
    // JSON may escape "/" as "\/": such a value is left to JSON.parse, which unescapes it.
    const escaped = `{"Item":{"ct":{"B":"${big.replaceAll("/", "\\/")}"}}}`;
    const parsed = parseResponse(ascii.encode(escaped)) as { Item: unknown };
    expect(b64(parseAttributeMap(parsed.Item).ct?.B as Uint8Array)).toBe(big);
    expect(() => parseResponse(ascii.encode(`{"Item":{"ct":{"B":"${big}`))).toThrow();
    expect(() => parseResponse(ascii.encode(`{"Item":{"ct":{"B":"${big}!"}}}`))).toThrow();
  });
});
