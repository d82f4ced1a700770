import type { Logger } from "../log.js";
import { Counter } from "../metrics.js";
import { type BatchWriter, MAX_BATCH_WRITE_ITEMS } from "./batch-writer.js";
import type { TableCalls } from "./head-write.js";
import {
  decodeCursor,
  encodeCursor,
  freshPosition,
  type ListPosition,
  listKeys,
  type ScanIndexPage,
} from "./index-scan.js";
import { Attr, ItemFormat, KEYS_INDEX } from "./item-format.js";
import {
  type Cancel,
  type Clock,
  isExpired,
  type ListEntry,
  type ListPage,
  type ListRequest,
  MAX_PAGE_VALUE_BYTES,
} from "./kv-store.js";
import { retryingCall } from "./retry.js";

/** Scan rounds a page of a listing makes before it answers with what it found. */
const LIST_ROUNDS = 8;

/** Values a page of a listing reads at once. */
const LIST_VALUE_READS = 16;

/** Scan segments a clear works through at once, each one page at a time. */
const CLEAR_SEGMENTS = 8;

/**
 * Deletes one clear segment has in flight: two BatchWriteItems, so at most
 * 16 over the clear. Unbounded, a segment's whole 1,000-key page would be
 * queued at once, and on a slow or throttled table the queued calls outlive
 * their retry budget and fail the clear (as they did on DynamoDB Local).
 */
const CLEAR_DELETES_IN_FLIGHT = 2 * MAX_BATCH_WRITE_ITEMS;

/**
 * How long after a clear starts its second pass over the keys index may
 * begin: the index is updated asynchronously, so a key set just before the
 * clear may reach it late.
 */
const INDEX_SETTLE_MS = 1_000;

/** A clear logs its progress this often. */
const CLEAR_PROGRESS_MS = 5_000;

/** What listing and clearing need from the store. */
export interface KeyListingParts {
  readonly table: TableCalls;
  readonly writer: BatchWriter;
  readonly log: Logger;
  /** The clock expiry is measured on. */
  readonly clock: Clock;
  /** Reads one value like a get. */
  get(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | undefined>;
  /** Deletes a chunked head and its chunks; resolves whether there was one. */
  deleteHead(pk: Uint8Array): Promise<boolean>;
}

/**
 * Listing and clearing over the keys index (see item-format.ts), which holds
 * one small entry per key, so both cost what the number of keys costs, not
 * the values' bytes.
 */
export class KeyListing {
  readonly #p: KeyListingParts;

  constructor(parts: KeyListingParts) {
    this.#p = parts;
  }

  /**
   * A page of keys from the keys index, which is eventually consistent: a
   * key set or deleted within about a second before the page may be missing
   * or still listed. Values are read like gets (strongly consistent,
   * decrypted through the data-key cache), and a key whose value is gone by
   * then is left out.
   */
  async list(request: ListRequest, cancel?: Cancel): Promise<ListPage> {
    const position = request.cursor === undefined ? freshPosition() : decodeCursor(request.cursor);
    const page = await listKeys(this.#scanIndex, position, {
      prefix: request.prefix,
      limit: request.limit,
      maxRounds: LIST_ROUNDS,
      liveAt: this.#p.clock(),
    });
    if (!request.values) {
      const after = page.positionAfter(page.keys.length);
      return { entries: page.keys.map((k) => ({ key: k.key })), cursor: after && encodeCursor(after) };
    }
    const entries: ListEntry[] = [];
    let bytes = 0;
    let answered = 0;
    while (answered < page.keys.length && bytes < MAX_PAGE_VALUE_BYTES) {
      const window = page.keys.slice(answered, answered + LIST_VALUE_READS);
      const values = await Promise.all(window.map((k) => this.#p.get(k.key, cancel)));
      for (const [i, { key }] of window.entries()) {
        if (bytes >= MAX_PAGE_VALUE_BYTES) break;
        const value = values[i];
        answered++;
        if (value === undefined) continue;
        entries.push({ key, value });
        bytes += value.length;
      }
    }
    const after = page.positionAfter(answered);
    return { entries, cursor: after && encodeCursor(after) };
  }

  /**
   * Deletes every key the keys index lists, segments in parallel, small
   * heads in batches and chunked ones with their chunks; then, once the
   * index has had time to settle, makes a second pass for keys set just
   * before the clear that reached the index late. Keys set while it runs
   * may or may not be removed. Expired values are removed and not counted.
   */
  async clear(): Promise<number> {
    const started = Date.now();
    const progress = { removed: 0, logged: started };
    await this.#clearPass(progress);
    const settle = started + INDEX_SETTLE_MS - Date.now();
    if (settle > 0) await Bun.sleep(settle);
    await this.#clearPass(progress);
    this.#p.log.info("clear done", { removed: progress.removed, ms: Date.now() - started });
    return progress.removed;
  }

  /** One pass of a clear over every segment of the keys index. */
  async #clearPass(progress: { removed: number; logged: number }): Promise<void> {
    const { log, writer } = this.#p;
    const segment = async (position: ListPosition | undefined): Promise<void> => {
      while (position !== undefined) {
        const page = await listKeys(this.#scanIndex, position, { prefix: undefined, limit: 1000, maxRounds: 1 });
        // Counted as the page was read: a key that expires while its delete is in flight still counts.
        const now = this.#p.clock();
        for (let first = 0; first < page.keys.length; first += CLEAR_DELETES_IN_FLIGHT) {
          const removed = await Promise.all(
            page.keys.slice(first, first + CLEAR_DELETES_IN_FLIGHT).map(async (k) => {
              const pk = k.indexKey[Attr.pk]?.B as Uint8Array;
              if (k.format === ItemFormat.chunked) return this.#p.deleteHead(pk);
              await writer.delete({ [Attr.pk]: { B: pk } });
              return !isExpired(k.expiresAt, now);
            }),
          );
          for (const r of removed) if (r) progress.removed++;
        }
        if (Date.now() - progress.logged >= CLEAR_PROGRESS_MS) {
          progress.logged = Date.now();
          log.info("clear in progress", { removed: progress.removed });
        }
        position = page.positionAfter(page.keys.length);
      }
    };
    const all = freshPosition(CLEAR_SEGMENTS);
    await Promise.all(all.segments.map((s) => segment({ totalSegments: CLEAR_SEGMENTS, segments: [s] })));
  }

  readonly #scanIndex: ScanIndexPage = (segment, totalSegments, start, limit) => {
    const t = this.#p.table;
    return retryingCall(t.retry, "scan of the keys index", (budgetMs) => {
      t.counters.add(Counter.dynamoScan);
      return t.calls.run(() =>
        t.data.scan({ table: t.table, index: KEYS_INDEX, segment, totalSegments, startKey: start, limit }, budgetMs),
      );
    });
  };
}
