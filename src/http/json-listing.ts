import { base64Into, base64Length, fromBase64, toBase64 } from "../bytes.js";
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
 * Builds one page of a JSON listing as bytes. Keys and values are copied
 * straight into the page when they need no escaping (printable ASCII other
 * than `"` and `\\`) and base64 is written in place, so a page costs one
 * allocation instead of several strings per entry. What it writes for each
 * is as {@link Encoding} says.
 */
class JsonPageWriter {
  #buf: Uint8Array;
  #at = 0;

  constructor(sizeHint: number) {
    this.#buf = new Uint8Array(Math.max(256, sizeHint));
  }

  /** Appends ASCII `text` (JSON punctuation, field names). */
  ascii(text: string): void {
    this.#reserve(text.length);
    const buf = this.#buf;
    for (let i = 0; i < text.length; i++) buf[this.#at++] = text.charCodeAt(i);
  }

  /** Appends `bytes` as JSON under `encoding`. */
  bytes(bytes: Uint8Array, encoding: Encoding): void {
    if (encoding === "base64") {
      this.#base64(bytes, false);
      return;
    }
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i] as number;
      if (b < 0x20 || b > 0x7e || b === 0x22 || b === 0x5c) {
        this.#escaped(bytes);
        return;
      }
    }
    this.#reserve(bytes.length + 2);
    const buf = this.#buf;
    buf[this.#at++] = 0x22;
    buf.set(bytes, this.#at);
    this.#at += bytes.length;
    buf[this.#at++] = 0x22;
  }

  /** The page so far; the writer must not be used after. */
  done(): Uint8Array {
    return this.#buf.subarray(0, this.#at);
  }

  get length(): number {
    return this.#at;
  }

  #escaped(bytes: Uint8Array): void {
    let text: string;
    try {
      text = JSON.stringify(strict.decode(bytes));
    } catch {
      this.#base64(bytes, true);
      return;
    }
    this.#reserve(text.length * 3);
    this.#at += encoder.encodeInto(text, this.#buf.subarray(this.#at)).written;
  }

  #base64(bytes: Uint8Array, wrapped: boolean): void {
    if (wrapped) this.ascii('{"base64":');
    this.#reserve(base64Length(bytes.length) + 2);
    this.#buf[this.#at++] = 0x22;
    this.#at = base64Into(bytes, this.#buf, this.#at);
    this.#buf[this.#at++] = 0x22;
    if (wrapped) this.ascii("}");
  }

  #reserve(n: number): void {
    if (this.#at + n <= this.#buf.length) return;
    const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#at + n));
    grown.set(this.#buf.subarray(0, this.#at));
    this.#buf = grown;
  }
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
  const empty = new Uint8Array(0);
  /** Writes `p`'s entries, and `tail` after them. */
  const render = (p: ListPage, tail: string): Uint8Array => {
    let hint = tail.length;
    for (const e of p.entries) hint += e.key.length + (e.value?.length ?? 0) + 24;
    const out = new JsonPageWriter(hint);
    for (const e of p.entries) {
      if (!first) out.ascii(",");
      first = false;
      if (o.shape === "keys") out.bytes(e.key, o.encoding);
      else if (o.shape === "values") out.bytes(e.value ?? empty, o.encoding);
      else {
        out.ascii('{"key":');
        out.bytes(e.key, o.encoding);
        out.ascii(',"value":');
        out.bytes(e.value ?? empty, o.encoding);
        out.ascii("}");
      }
    }
    remaining -= p.entries.length;
    if (tail !== "") out.ascii(tail);
    return out.done();
  };
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(encoder.encode(`{"${o.shape}":[`));
    },
    async pull(controller) {
      try {
        if (page === undefined) return;
        const cursor = page.cursor;
        if (cursor === undefined || remaining <= page.entries.length) {
          controller.enqueue(render(page, cursor === undefined ? "]}\n" : `],"cursor":"${cursorText(cursor)}"}\n`));
          controller.close();
          page = undefined;
          return;
        }
        const bytes = render(page, "");
        if (bytes.length > 0) controller.enqueue(bytes);
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
