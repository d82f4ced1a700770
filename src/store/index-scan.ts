import { sameBytes } from "../bytes.js";
import { ErrorCode, KvError } from "../wire/errors.js";
import type { AttributeMap } from "./dynamo-json.js";
import { Attr, ItemKind, unpackFmt } from "./item-format.js";
import { isExpired, MAX_KEY_BYTES } from "./kv-store.js";

/**
 * Paging over the keys index (item-format.ts) by parallel scan segments.
 *
 * A scan segment visits its items in a fixed order (by partition key hash,
 * then `fmt`), and resumes after any key given as `ExclusiveStartKey`. So a
 * cursor is, for each segment not yet finished, the last index entry a page
 * consumed in it. An entry present for a whole listing sits at one place in
 * one segment and is listed once. The one way a key can occupy two places
 * is a change of format (a small value replaced by a chunked one, or back),
 * which moves its entry within the same partition key; the two places are
 * adjacent, so a segment skips an entry whose `pk` equals the last one it
 * consumed.
 */

/** Scan segments a listing runs in parallel. */
export const LIST_SEGMENTS = 4;

const CURSOR_TAG = 0x44;
/** Version 2 holds a head's packed `fmt` (format and expiry) in 8 bytes; version 1 held the format in one. */
const CURSOR_VERSION = 2;

/** Where one segment stands: not started, after `start`, or finished (absent from the cursor). */
export interface SegmentPosition {
  readonly segment: number;
  /** The index key (`pk`, `fmt`) last consumed; undefined: from the beginning. */
  readonly start: AttributeMap | undefined;
}

/** The unfinished segments of a listing, in segment order. */
export interface ListPosition {
  readonly totalSegments: number;
  readonly segments: readonly SegmentPosition[];
}

/** Where a fresh listing starts: every segment from its beginning. */
export function freshPosition(totalSegments = LIST_SEGMENTS): ListPosition {
  return {
    totalSegments,
    segments: Array.from({ length: totalSegments }, (_, segment) => ({ segment, start: undefined })),
  };
}

/** Encodes a position: tag, version, total, then per segment: index, flag, and if started u16 pk length, pk, u64 fmt. */
export function encodeCursor(position: ListPosition): Uint8Array {
  let size = 3;
  for (const s of position.segments) size += 2 + (s.start === undefined ? 0 : 10 + startPk(s.start).length);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out[0] = CURSOR_TAG;
  out[1] = CURSOR_VERSION;
  out[2] = position.totalSegments;
  let p = 3;
  for (const s of position.segments) {
    out[p++] = s.segment;
    if (s.start === undefined) {
      out[p++] = 0;
      continue;
    }
    out[p++] = 1;
    const pk = startPk(s.start);
    view.setUint16(p, pk.length);
    out.set(pk, p + 2);
    p += 2 + pk.length;
    view.setBigUint64(p, BigInt(s.start[Attr.fmt]?.N ?? 0));
    p += 8;
  }
  return out;
}

function startPk(start: AttributeMap): Uint8Array {
  return start[Attr.pk]?.B ?? new Uint8Array(0);
}

function badCursor(why: string): KvError {
  return new KvError(ErrorCode.BadCursor, `not a cursor of this store: ${why}`);
}

/**
 * Decodes a cursor, checking everything a peer could forge: a cursor is
 * only ever a position to resume from, so a forged one can list from an
 * arbitrary place, never anything else.
 */
export function decodeCursor(cursor: Uint8Array): ListPosition {
  if (cursor.length < 3 || cursor[0] !== CURSOR_TAG) throw badCursor("wrong tag");
  const version = cursor[1];
  if (version !== CURSOR_VERSION && version !== 1) throw badCursor(`version ${version}`);
  const fmtBytes = version === 1 ? 1 : 8;
  const totalSegments = cursor[2] as number;
  if (totalSegments < 1 || totalSegments > 64) throw badCursor("bad segment count");
  const view = new DataView(cursor.buffer, cursor.byteOffset, cursor.length);
  const segments: SegmentPosition[] = [];
  let p = 3;
  while (p < cursor.length) {
    if (p + 2 > cursor.length) throw badCursor("truncated");
    const segment = cursor[p] as number;
    const started = cursor[p + 1];
    p += 2;
    const previous = segments.at(-1);
    if (segment >= totalSegments || (previous !== undefined && segment <= previous.segment)) {
      throw badCursor("bad segment");
    }
    if (started === 0) {
      segments.push({ segment, start: undefined });
      continue;
    }
    if (started !== 1 || p + 2 > cursor.length) throw badCursor("bad segment state");
    const length = view.getUint16(p);
    p += 2;
    if (length < 1 || length > MAX_KEY_BYTES + 1 || p + length + fmtBytes > cursor.length) throw badCursor("bad key");
    const pk = cursor.slice(p, p + length);
    p += length;
    const fmt = String(version === 1 ? cursor[p] : view.getBigUint64(p));
    p += fmtBytes;
    if (pk[0] !== ItemKind.head || unpackFmt(fmt) === undefined) throw badCursor("bad key");
    segments.push({ segment, start: { [Attr.pk]: { B: pk }, [Attr.fmt]: { N: String(fmt) } } });
  }
  if (segments.length === 0) throw badCursor("no segments");
  return { totalSegments, segments };
}

/** One key found in the keys index, as {@link listKeys} returns it. */
export interface ScannedKey {
  /** The user's key: the head's `pk` without its kind byte. */
  readonly key: Uint8Array;
  readonly format: number;
  /** When its value expires, ms since the epoch; undefined: never. */
  readonly expiresAt: number | undefined;
  /** The index key, to resume after. */
  readonly indexKey: AttributeMap;
}

/** Scans one page of one segment of the keys index. */
export type ScanIndexPage = (
  segment: number,
  totalSegments: number,
  start: AttributeMap | undefined,
  limit: number,
) => Promise<{ items: AttributeMap[]; lastKey: AttributeMap | undefined }>;

/** What {@link listKeys} looks for. */
export interface KeyQuery {
  readonly prefix: Uint8Array | undefined;
  readonly limit: number;
  /** Scan rounds (one call per unfinished segment each) before a page answers with what it has. */
  readonly maxRounds: number;
  /** Leave out keys whose values are expired at this time (ms since the epoch); undefined: keep them. */
  readonly liveAt?: number;
}

interface Consumed {
  readonly indexKey: AttributeMap;
  /** The entry's index in the page, or -1 for an entry skipped (prefix, duplicate, expired). */
  readonly entry: number;
}

interface SegmentRun {
  readonly segment: number;
  readonly initial: AttributeMap | undefined;
  /** Entries consumed this page, in scan order. */
  readonly consumed: Consumed[];
  /** Position after everything consumed; `done` when the segment has no more. */
  start: AttributeMap | undefined;
  done: boolean;
  lastPk: Uint8Array | undefined;
}

/** A page of keys and a function giving the position after its first `n` keys. */
export interface KeyPage {
  readonly keys: ScannedKey[];
  /** Where to resume once the first `n` keys are answered (n ≤ keys.length); undefined when the listing is done. */
  positionAfter(n: number): ListPosition | undefined;
}

/**
 * Collects up to `query.limit` keys from the unfinished segments of
 * `position`, scanning them in parallel rounds. A page can end short (the
 * round budget ran out, say over a prefix that few keys match), and the
 * caller may answer fewer keys than it got ({@link KeyPage.positionAfter}),
 * as a page of values does when it reaches its byte bound.
 */
export async function listKeys(scan: ScanIndexPage, position: ListPosition, query: KeyQuery): Promise<KeyPage> {
  const runs: SegmentRun[] = position.segments.map((s) => ({
    segment: s.segment,
    initial: s.start,
    consumed: [],
    start: s.start,
    done: false,
    lastPk: s.start?.[Attr.pk]?.B,
  }));
  const keys: ScannedKey[] = [];
  const prefixed = query.prefix !== undefined && query.prefix.length > 0;
  for (let round = 0; round < query.maxRounds && keys.length < query.limit; round++) {
    const active = runs.filter((r) => !r.done);
    if (active.length === 0) break;
    const need = query.limit - keys.length;
    // Over a prefix most entries may be skipped, so read whole pages; otherwise only what the page needs.
    const limit = prefixed ? 1000 : Math.max(1, Math.ceil(need / active.length));
    const pages = await Promise.all(active.map((r) => scan(r.segment, position.totalSegments, r.start, limit)));
    for (let i = 0; i < active.length; i++) {
      const run = active[i] as SegmentRun;
      const page = pages[i] as { items: AttributeMap[]; lastKey: AttributeMap | undefined };
      let all = true;
      for (const item of page.items) {
        if (keys.length >= query.limit) {
          all = false;
          break;
        }
        const pk = item[Attr.pk]?.B;
        const fmt = item[Attr.fmt]?.N;
        const packed = unpackFmt(fmt);
        const indexKey = { [Attr.pk]: item[Attr.pk] ?? { B: new Uint8Array(0) }, [Attr.fmt]: { N: fmt ?? "0" } };
        run.start = indexKey;
        if (
          pk === undefined ||
          pk[0] !== ItemKind.head ||
          packed === undefined ||
          (run.lastPk !== undefined && sameBytes(pk, run.lastPk))
        ) {
          run.consumed.push({ indexKey, entry: -1 });
          continue;
        }
        run.lastPk = pk;
        const key = pk.subarray(1);
        const { format, expiresAt } = packed;
        if (
          (prefixed && !startsWith(key, query.prefix as Uint8Array)) ||
          (query.liveAt !== undefined && isExpired(expiresAt, query.liveAt))
        ) {
          run.consumed.push({ indexKey, entry: -1 });
          continue;
        }
        run.consumed.push({ indexKey, entry: keys.length });
        keys.push({ key, format, expiresAt, indexKey });
      }
      if (all) {
        run.start = page.lastKey;
        run.done = page.lastKey === undefined;
      }
    }
  }
  return {
    keys,
    positionAfter(n: number): ListPosition | undefined {
      const segments: SegmentPosition[] = [];
      for (const run of runs) {
        const cut = run.consumed.findIndex((c) => c.entry >= n);
        if (cut >= 0) {
          segments.push({ segment: run.segment, start: cut === 0 ? run.initial : run.consumed[cut - 1]?.indexKey });
        } else if (!run.done) {
          segments.push({ segment: run.segment, start: run.start });
        }
      }
      return segments.length === 0 ? undefined : { totalSegments: position.totalSegments, segments };
    },
  };
}

function startsWith(key: Uint8Array, prefix: Uint8Array): boolean {
  if (key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}
