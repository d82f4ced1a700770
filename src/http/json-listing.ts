import { fromBase64, toBase64 } from "../bytes.js";
import type { Logger } from "../log.js";
import type { ListPage } from "../store/kv-store.js";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";

/**
 * How keys and values appear in JSON. `utf8`: as JSON strings, except one
 * that is not valid UTF-8, which appears as `{"base64": "..."}` so no byte
 * is lost or replaced. `base64`: every one as a base64 string.
 */
export type Encoding = "utf8" | "base64";

/** What a listing answers: keys, values, or key-value items. */
export type ListShape = "keys" | "values" | "items";

const strict = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/** The JSON text of `bytes` under `encoding`. */
export function jsonBytes(bytes: Uint8Array, encoding: Encoding): string {
  if (encoding === "base64") return `"${toBase64(bytes)}"`;
  try {
    return JSON.stringify(strict.decode(bytes));
  } catch {
    return `{"base64":"${toBase64(bytes)}"}`;
  }
}

/** A cursor as it appears in JSON and URLs: base64url, no padding. */
export function cursorText(cursor: Uint8Array): string {
  return toBase64(cursor).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The bytes of a cursor from a URL; `KV_ERR_BAD_CURSOR` when it is not base64url. */
export function cursorBytes(text: string): Uint8Array {
  try {
    const b64 = text.replaceAll("-", "+").replaceAll("_", "/");
    return fromBase64(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  } catch (err) {
    throw new KvError(ErrorCode.BadCursor, "the cursor is not base64url", { cause: err });
  }
}

/** Fetches the page after `cursor` (undefined: the first), of at most `limit` entries. */
export type PageSource = (cursor: Uint8Array | undefined, limit: number) => Promise<ListPage>;

/** What a listing answer covers. */
export interface ListingOptions {
  shape: ListShape;
  encoding: Encoding;
  /** Most entries to answer; the answer then ends with a cursor if more remain. Undefined: every entry. */
  limit: number | undefined;
  cursor: Uint8Array | undefined;
  /** Entries per store page. */
  pageEntries: number;
}

/**
 * A listing as a streamed JSON object: `{"<shape>": [...], "cursor": "..."}`,
 * the cursor present only when the answer stopped at `limit` with entries
 * left. Pages are fetched as the client reads, one at a time, so memory
 * stays flat whatever the store's size. The first page is fetched before
 * the answer starts, so its failure (a bad cursor, say) gets a proper error
 * status; a later failure can only cut the stream short, which leaves the
 * JSON unterminated for the client to notice.
 */
export async function listingResponse(source: PageSource, o: ListingOptions, log: Logger): Promise<Response> {
  let remaining = o.limit ?? Number.POSITIVE_INFINITY;
  const fetchPage = (cursor: Uint8Array | undefined) => source(cursor, Math.min(o.pageEntries, remaining));
  let page: ListPage | undefined = await fetchPage(o.cursor);
  let first = true;
  const render = (p: ListPage): string => {
    let out = "";
    for (const e of p.entries) {
      out += first ? "" : ",";
      first = false;
      if (o.shape === "keys") out += jsonBytes(e.key, o.encoding);
      else if (o.shape === "values") out += jsonBytes(e.value ?? new Uint8Array(0), o.encoding);
      else
        out += `{"key":${jsonBytes(e.key, o.encoding)},"value":${jsonBytes(e.value ?? new Uint8Array(0), o.encoding)}}`;
    }
    remaining -= p.entries.length;
    return out;
  };
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(encoder.encode(`{"${o.shape}":[`));
    },
    async pull(controller) {
      try {
        if (page === undefined) return;
        let text = render(page);
        const cursor = page.cursor;
        if (cursor === undefined || remaining <= 0) {
          text += cursor === undefined ? "]}\n" : `],"cursor":"${cursorText(cursor)}"}\n`;
          controller.enqueue(encoder.encode(text));
          controller.close();
          page = undefined;
          return;
        }
        if (text !== "") controller.enqueue(encoder.encode(text));
        page = await fetchPage(cursor);
      } catch (err) {
        log.warn("listing failed mid-answer; cutting it short", { reason: errorMessage(err) });
        page = undefined;
        controller.error(err);
      }
    },
  });
  return new Response(stream, { headers: { "content-type": "application/json" } });
}
