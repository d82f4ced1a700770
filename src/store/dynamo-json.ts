import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { fromBase64, toBase64 } from "../bytes.js";

/** An item or key: attribute name to value, as the SDK types it (binary as bytes). */
export type AttributeMap = Record<string, AttributeValue>;

function binary(text: unknown): Uint8Array {
  if (typeof text !== "string") throw new TypeError("a B value is not a string");
  return fromBase64(text);
}

/**
 * DynamoDB JSON text of one attribute value: binary as base64, numbers as
 * strings, exactly what the JSON 1.0 protocol carries. Built as text rather
 * than as an object for JSON.stringify, so a batch costs one string build.
 */
export function attributeJson(value: AttributeValue): string {
  if (value.B !== undefined) return `{"B":"${toBase64(value.B)}"}`;
  if (value.S !== undefined) return `{"S":${JSON.stringify(value.S)}}`;
  if (value.N !== undefined) return `{"N":${JSON.stringify(value.N)}}`;
  if (value.BOOL !== undefined) return `{"BOOL":${value.BOOL ? "true" : "false"}}`;
  if (value.NULL !== undefined) return `{"NULL":true}`;
  if (value.M !== undefined) return `{"M":${attributeMapJson(value.M)}}`;
  if (value.L !== undefined) return `{"L":[${value.L.map(attributeJson).join(",")}]}`;
  if (value.SS !== undefined) return `{"SS":${JSON.stringify(value.SS)}}`;
  if (value.NS !== undefined) return `{"NS":${JSON.stringify(value.NS)}}`;
  if (value.BS !== undefined) return `{"BS":[${value.BS.map((b) => `"${toBase64(b)}"`).join(",")}]}`;
  throw new TypeError("an attribute value has no type this codec knows");
}

/** DynamoDB JSON text of an item or key. */
export function attributeMapJson(map: AttributeMap): string {
  let out = "{";
  let first = true;
  for (const name in map) {
    const value = map[name];
    if (value === undefined) continue;
    out += `${first ? "" : ","}${JSON.stringify(name)}:${attributeJson(value)}`;
    first = false;
  }
  return `${out}}`;
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
