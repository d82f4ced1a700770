import { describe, expect, test } from "bun:test";
import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { attributeMapJson, parseAttributeMap } from "../src/store/dynamo-json.js";

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
});
