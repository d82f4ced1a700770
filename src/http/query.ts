import { ErrorCode, KvError } from "../wire/errors.js";

/**
 * Byte-exact decoding of URLs. `URLSearchParams` decodes percent-escapes as
 * UTF-8 and replaces what is not, so a key sent as `%FF` would be stored as
 * U+FFFD; these keep the bytes the client encoded.
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The value of an ASCII hex digit's code, or -1. */
function hexValue(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/**
 * The bytes a percent-encoded URL component stands for. With `plusIsSpace`
 * (query strings, as HTML forms send them), `+` is a space. A `%` not
 * followed by two hex digits is refused: guessing would store other bytes
 * than the client meant.
 */
export function percentDecode(text: string, plusIsSpace: boolean): Uint8Array {
  const raw = encoder.encode(text);
  if (!text.includes("%") && !(plusIsSpace && text.includes("+"))) return raw;
  const out = new Uint8Array(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i] as number;
    if (c === 0x25) {
      const hi = hexValue(raw[i + 1]);
      const lo = hexValue(raw[i + 2]);
      if (hi < 0 || lo < 0) throw new KvError(ErrorCode.BadRequest, "a % in the URL is not followed by two hex digits");
      out[n++] = hi * 16 + lo;
      i += 2;
    } else out[n++] = plusIsSpace && c === 0x2b ? 0x20 : c;
  }
  return out.slice(0, n);
}

/**
 * Parameters of a query string (without the `?`): names as text, values as
 * bytes. A repeated name is refused: picking one of `k=a&k=b` would act on a
 * key the caller may not have meant.
 */
export function parseQuery(search: string): Map<string, Uint8Array> {
  const params = new Map<string, Uint8Array>();
  for (const part of search.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const rawName = eq < 0 ? part : part.slice(0, eq);
    const name = /[%+]/.test(rawName) ? decoder.decode(percentDecode(rawName, true)) : rawName;
    if (params.has(name)) throw new KvError(ErrorCode.BadRequest, `${name} is given more than once`);
    params.set(name, percentDecode(eq < 0 ? "" : part.slice(eq + 1), true));
  }
  return params;
}
