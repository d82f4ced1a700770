import { describe, expect, test } from "bun:test";
import { listingResponse, type PageSource } from "../../src/http/json-listing.js";
import { silentLogger } from "../../src/log.js";
import type { ListEntry } from "../../src/store/kv-store.js";

const enc = new TextEncoder();

/** Every sort of byte string a key or value can be: plain, needing escapes, UTF-8, not UTF-8, empty. */
const SAMPLES: Uint8Array[] = [
  enc.encode("plain-key/with.punctuation~"),
  enc.encode('a "quoted" key'),
  enc.encode("back\\slash"),
  enc.encode("tab\there\nnewline"),
  Uint8Array.of(0x00, 0x1f, 0x7f),
  enc.encode("ünïcødé 🔑"),
  Uint8Array.of(0xff, 0x00),
  Uint8Array.of(0xc3, 0x28),
  new Uint8Array(0),
  enc.encode("x".repeat(5000)),
];

/** What each sample must read as, in JSON, under each encoding. */
function expected(bytes: Uint8Array, encoding: "utf8" | "base64"): unknown {
  const b64 = Buffer.from(bytes).toString("base64");
  if (encoding === "base64") return b64;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return { base64: b64 };
  }
}

/** A store of `entries` served `pageSize` at a time, the cursor being the next index. */
function pages(entries: ListEntry[], pageSize: number): PageSource {
  return (cursor, limit) => {
    const from = cursor === undefined ? 0 : (cursor[0] as number);
    const to = Math.min(entries.length, from + Math.min(limit, pageSize));
    return Promise.resolve({
      entries: entries.slice(from, to),
      cursor: to < entries.length ? Uint8Array.of(to) : undefined,
    });
  };
}

describe("JSON listings", () => {
  const entries: ListEntry[] = SAMPLES.map((key, i) => ({ key, value: SAMPLES[(i + 3) % SAMPLES.length] }));

  for (const encoding of ["utf8", "base64"] as const) {
    test(`every kind of key and value reads back exactly, in ${encoding}, across page boundaries`, async () => {
      for (const pageSize of [1, 3, 100]) {
        for (const shape of ["keys", "values", "items"] as const) {
          const o = { shape, encoding, limit: undefined, cursor: undefined, pageEntries: 1000 };
          const text = await (await listingResponse(pages(entries, pageSize), o, silentLogger)).text();
          const want = entries.map((e) => {
            if (shape === "keys") return expected(e.key, encoding);
            if (shape === "values") return expected(e.value as Uint8Array, encoding);
            return { key: expected(e.key, encoding), value: expected(e.value as Uint8Array, encoding) };
          });
          expect(JSON.parse(text)).toEqual({ [shape]: want });
          expect(text.endsWith("]}\n")).toBe(true);
        }
      }
    });
  }

  test("a limit that ends inside the listing answers a cursor that resumes after the last entry given", async () => {
    for (const limit of [1, 4, 5]) {
      const o = { shape: "keys" as const, encoding: "utf8" as const, limit, cursor: undefined, pageEntries: 1000 };
      const body = (await (await listingResponse(pages(entries, 2), o, silentLogger)).json()) as {
        keys: unknown[];
        cursor: string;
      };
      expect(body.keys).toEqual(entries.slice(0, limit).map((e) => expected(e.key, "utf8")));
      expect(Buffer.from(body.cursor, "base64url")).toEqual(Buffer.of(limit));
    }
    const all = {
      shape: "keys" as const,
      encoding: "utf8" as const,
      limit: entries.length,
      cursor: undefined,
      pageEntries: 1000,
    };
    const body = await (await listingResponse(pages(entries, 3), all, silentLogger)).json();
    expect(body).toEqual({ keys: entries.map((e) => expected(e.key, "utf8")) });
  });
});
