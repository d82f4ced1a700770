import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { base64FromBytes, fromBase64 } from "../bytes.js";
import type { JsonBytes } from "./json-bytes.js";

/** An item or key: attribute name to value, as the SDK types it (binary as bytes). */
export type AttributeMap = Record<string, AttributeValue>;

function binary(text: unknown): Uint8Array {
  if (text instanceof Uint8Array) return text; // decoded by parseResponse
  if (typeof text !== "string") throw new TypeError("a B value is not a string");
  return fromBase64(text);
}

/**
 * Writes the DynamoDB JSON of one attribute value: binary as base64, numbers
 * as strings, exactly what the JSON 1.0 protocol carries. Written as bytes
 * rather than built as an object for JSON.stringify, so a batch costs one
 * pass and a large binary value no string copies.
 */
export function writeAttribute(out: JsonBytes, value: AttributeValue): void {
  if (value.B !== undefined) out.raw(`{"B":"`).base64(value.B).raw(`"}`);
  else if (value.S !== undefined) out.raw(`{"S":`).string(value.S).raw("}");
  else if (value.N !== undefined) out.raw(`{"N":`).string(value.N).raw("}");
  else if (value.BOOL !== undefined) out.raw(value.BOOL ? `{"BOOL":true}` : `{"BOOL":false}`);
  else if (value.NULL !== undefined) out.raw(`{"NULL":true}`);
  else if (value.M !== undefined) {
    out.raw(`{"M":`);
    writeAttributeMap(out, value.M);
    out.raw("}");
  } else if (value.L !== undefined) {
    out.raw(`{"L":[`);
    value.L.forEach((v, i) => {
      if (i > 0) out.raw(",");
      writeAttribute(out, v);
    });
    out.raw("]}");
  } else if (value.SS !== undefined) out.raw(`{"SS":${JSON.stringify(value.SS)}}`);
  else if (value.NS !== undefined) out.raw(`{"NS":${JSON.stringify(value.NS)}}`);
  else if (value.BS !== undefined) {
    out.raw(`{"BS":[`);
    value.BS.forEach((b, i) => {
      out
        .raw(i > 0 ? `,"` : `"`)
        .base64(b)
        .raw(`"`);
    });
    out.raw("]}");
  } else throw new TypeError("an attribute value has no type this codec knows");
}

/** Writes the DynamoDB JSON of an item or key. */
export function writeAttributeMap(out: JsonBytes, map: AttributeMap): void {
  out.raw("{");
  let first = true;
  for (const name in map) {
    const value = map[name];
    if (value === undefined) continue;
    if (!first) out.raw(",");
    out.string(name).raw(":");
    writeAttribute(out, value);
    first = false;
  }
  out.raw("}");
}

/** Parses one attribute value of a DynamoDB JSON response back into the SDK's shape. */
export function parseAttribute(raw: unknown): AttributeValue {
  if (typeof raw !== "object" || raw === null) throw new TypeError("an attribute value is not an object");
  const v = raw as Record<string, unknown>;
  if ("B" in v) return { B: binary(v.B) };
  if ("S" in v && typeof v.S === "string") return { S: v.S };
  if ("N" in v && typeof v.N === "string") return { N: v.N };
  if ("BOOL" in v && typeof v.BOOL === "boolean") return { BOOL: v.BOOL };
  if ("NULL" in v) return { NULL: true };
  if ("M" in v) return { M: parseAttributeMap(v.M) };
  if ("L" in v && Array.isArray(v.L)) return { L: v.L.map(parseAttribute) };
  if ("SS" in v && Array.isArray(v.SS)) return { SS: v.SS.map(String) };
  if ("NS" in v && Array.isArray(v.NS)) return { NS: v.NS.map(String) };
  if ("BS" in v && Array.isArray(v.BS)) return { BS: v.BS.map(binary) };
  throw new TypeError("an attribute value has no type this codec knows");
}

/** Parses an item or key of a DynamoDB JSON response. */
export function parseAttributeMap(raw: unknown): AttributeMap {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new TypeError("an item is not an object");
  const out: AttributeMap = {};
  for (const name in raw) out[name] = parseAttribute((raw as Record<string, unknown>)[name]);
  return out;
}

const utf8 = new TextDecoder();

/** Responses at least this long are searched for large binary values before parsing. */
const SEARCHED_BYTES = 64 * 1024;
/** Base64 runs at least this long are decoded straight from the response bytes. */
const DIRECT_BASE64_CHARS = 4096;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const B = 0x42;
/** Marks a placeholder string; base64 text never holds it. */
const PLACEHOLDER = "\\u0001";

function skipSpace(bytes: Uint8Array, i: number): number {
  while (bytes[i] === 0x20 || bytes[i] === 0x0a || bytes[i] === 0x0d || bytes[i] === 0x09) i++;
  return i;
}

/**
 * Parses a DynamoDB JSON response body. Values of `"B"` keys longer than a
 * few KiB (chunks of large values) are decoded straight from the bytes into
 * Uint8Arrays, which {@link parseAttribute} takes as they are; the rest is
 * parsed as usual.
 *
 * Why: as text, a 2 MB answer of four chunks became a 2 MB string and four
 * 500 KB base64 strings, alive at once; young-generation collections that
 * fall in that moment promote them, and promoted garbage waits for a full
 * collection, so a large get peaked far over its window.
 *
 * Only a `"B"` that is a key (its quotes unescaped) whose value is a string
 * with no escapes is taken; anything else is left to JSON.parse, so an
 * unusual but valid body parses the slow way, never wrongly.
 */
export function parseResponse(bytes: Uint8Array): unknown {
  if (bytes.length < SEARCHED_BYTES) return JSON.parse(utf8.decode(bytes));
  const blobs: Uint8Array[] = [];
  const kept: string[] = [];
  let from = 0;
  for (let i = bytes.indexOf(B); i !== -1; i = bytes.indexOf(B, i + 1)) {
    if (bytes[i - 1] !== QUOTE || bytes[i + 1] !== QUOTE || bytes[i - 2] === BACKSLASH) continue;
    let v = skipSpace(bytes, i + 2);
    if (bytes[v] !== COLON) continue;
    v = skipSpace(bytes, v + 1);
    if (bytes[v] !== QUOTE) continue;
    const start = v + 1;
    const end = bytes.indexOf(QUOTE, start);
    if (end === -1) break;
    i = end;
    if (end - start < DIRECT_BASE64_CHARS || bytes.subarray(start, end).includes(BACKSLASH)) continue;
    blobs.push(base64FromBytes(bytes, start, end));
    kept.push(utf8.decode(bytes.subarray(from, start)), `${PLACEHOLDER}${blobs.length - 1}`);
    from = end;
  }
  if (blobs.length === 0) return JSON.parse(utf8.decode(bytes));
  kept.push(utf8.decode(bytes.subarray(from)));
  // Only a "B" value can be a placeholder: base64 never starts with U+0001.
  return JSON.parse(kept.join(""), (key, value: unknown) =>
    key === "B" && typeof value === "string" && value.charCodeAt(0) === 1 ? blobs[Number(value.slice(1))] : value,
  );
}
