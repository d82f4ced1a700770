import { byteString, fromByteString } from "../bytes.js";
import { Counter, type Counters } from "../metrics.js";
import { ErrorCode, KvError } from "../wire/errors.js";
import { ExpiryQueue, secondOf } from "./expiry-queue.js";
import {
  type Clock,
  conflict,
  expiryOf,
  isExpired,
  type KvStore,
  type ListEntry,
  type ListPage,
  type ListRequest,
  MAX_PAGE_VALUE_BYTES,
  type Versioned,
  versioned,
  type WriteCondition,
} from "./kv-store.js";
import { versions } from "./version-clock.js";

interface Entry {
  value: Uint8Array;
  version: number;
  /** When the value expires, ms since the epoch; undefined: never. */
  expiresAt: number | undefined;
  /** The second this entry's id is filed under in the expiry queue, until that filing comes due; undefined: none. */
  filed: number | undefined;
  /** When the key was inserted: its place in the listing order. */
  readonly seq: number;
}

/** Log slots a page looks at before it answers with what it has: bounds one call's time on a huge store. */
const MAX_SLOTS_PER_PAGE = 100_000;

/** Expired values the background sweep frees per turn: bounds how long one turn holds the event loop. */
const SWEEP_BATCH = 10_000;

/** What a memory store may be given. */
export interface MemoryStoreOptions {
  /** The clock expiry is measured on (see {@link Clock}); default `Date.now`. */
  clock?: Clock;
  /** Where reads that found an expired value are counted. */
  counters?: Counters;
  /** How often a background sweep frees expired values no read touches, in ms (default 1,000; 0: never). */
  sweepIntervalMs?: number;
  /** Told after each background sweep that freed values, how many. */
  onSwept?: (freed: number) => void;
}

/** First byte of a memory-store cursor; the rest is the last sequence number looked at. */
const CURSOR_TAG = 0x4d;

/**
 * A process-local store for tests and benchmarks. Not durable and not shared
 * between processes; values are copied so a stored value never pins a socket chunk.
 *
 * Listing order is insertion order, kept in a log of (seq, key) with
 * ascending seq; a cursor is the last seq a page looked at, found again by
 * binary search. A key keeps its seq while it lives, so a key present for a
 * whole listing is listed exactly once; a key deleted and set again gets a
 * new seq, and its old slot is dead. Dead slots are compacted away once they
 * outnumber live ones, which keeps seqs in order, so cursors stay valid.
 *
 * Expired values (see {@link Clock}) are absent to every call from the
 * moment they expire; the memory they hold is freed by the first call that
 * finds one, or within about two seconds by a background sweep that looks
 * every second and frees at most {@link SWEEP_BATCH} per turn, taking
 * further turns, each after other work, while more are due.
 */
export class MemoryStore implements KvStore {
  #map = new Map<string, Entry>();
  #logKeys: string[] = [];
  #logSeqs: number[] = [];
  #dead = 0;
  #nextSeq = 1;
  /** Entries that have an expiry: when none do, nothing needs the clock. */
  #expiring = 0;
  readonly #expiries = new ExpiryQueue();
  readonly #clock: Clock;
  readonly #counters: Counters | undefined;
  readonly #sweeper: Timer | undefined;
  #sweeping = false;
  readonly appliesInOrder = true;

  constructor(options: MemoryStoreOptions = {}) {
    this.#clock = options.clock ?? Date.now;
    this.#counters = options.counters;
    const every = options.sweepIntervalMs ?? 1_000;
    if (every > 0) {
      this.#sweeper = setInterval(async () => {
        const freed = await this.sweepExpired();
        if (freed > 0) options.onSwept?.(freed);
      }, every);
      this.#sweeper.unref();
    }
  }

  /** Ids filed in the expiry queue, stale filings included: at most one live filing per expiring value. */
  get expiryFilings(): number {
    return this.#expiries.size;
  }

  readonly getSync = (key: Uint8Array): Uint8Array | undefined => this.#live(byteString(key))?.value;

  readonly setSync = (key: Uint8Array, value: Uint8Array, ttlMs?: number): number => {
    const id = byteString(key);
    return this.#write(id, this.#map.get(id), value, versions.next(), expiryOf(this.#clock, ttlMs));
  };

  /**
   * Frees values that have expired, at most {@link SWEEP_BATCH} per turn,
   * taking further turns (each after other work) while more are due.
   * Resolves once none is due; the background sweep calls it every second.
   */
  async sweepExpired(): Promise<number> {
    if (this.#sweeping) return 0;
    this.#sweeping = true;
    let freed = 0;
    try {
      for (;;) {
        const now = this.#clock();
        const current = secondOf(now);
        const ids = this.#expiries.due(now, SWEEP_BATCH);
        for (const id of ids) {
          const entry = this.#map.get(id);
          // A filing that is not the entry's current one (the key was written again since) is stale.
          if (entry === undefined || entry.filed === undefined || entry.filed >= current) continue;
          entry.filed = undefined;
          if (isExpired(entry.expiresAt, now)) {
            this.#remove(id, entry);
            freed++;
          } else if (entry.expiresAt !== undefined) {
            // Written again with a later expiry since it was filed: filed now under that one.
            entry.filed = this.#expiries.add(id, entry.expiresAt);
          }
        }
        if (ids.length < SWEEP_BATCH) return freed;
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      this.#sweeping = false;
    }
  }

  /** The entry of `id` if it has a value that has not expired; an expired one is freed and counted. */
  #live(id: string): Entry | undefined {
    const entry = this.#map.get(id);
    if (entry === undefined || entry.expiresAt === undefined || this.#clock() < entry.expiresAt) return entry;
    this.#remove(id, entry);
    this.#counters?.add(Counter.expiredReads);
    return undefined;
  }

  /** Removes `id`, whose entry is `entry`. */
  #remove(id: string, entry: Entry): void {
    this.#map.delete(id);
    if (entry.expiresAt !== undefined) this.#expiring--;
    if (++this.#dead > Math.max(1024, this.#map.size)) this.#compact();
  }

  /** Stores a copy of `value` under `id` (whose entry is `entry`) at `version`; returns it. */
  #write(id: string, entry: Entry | undefined, value: Uint8Array, version: number, expiresAt?: number): number {
    // The one copy the store keeps (new Uint8Array(view) copies; Buffer#slice would not):
    // the frame's bytes belong to the socket's read buffer.
    const copy = new Uint8Array(value);
    if (entry !== undefined) {
      if (entry.expiresAt !== undefined) this.#expiring--;
      if (expiresAt !== undefined) {
        this.#expiring++;
        // A filing at or before the new expiry stands: when it comes due, the sweep files the value again.
        if (entry.filed === undefined || entry.filed > secondOf(expiresAt)) {
          entry.filed = this.#expiries.add(id, expiresAt);
        }
      }
      entry.value = copy;
      entry.version = version;
      entry.expiresAt = expiresAt;
      return version;
    }
    let filed: number | undefined;
    if (expiresAt !== undefined) {
      this.#expiring++;
      filed = this.#expiries.add(id, expiresAt);
    }
    const seq = this.#nextSeq++;
    this.#map.set(id, { value: copy, seq, version, expiresAt, filed });
    this.#logKeys.push(id);
    this.#logSeqs.push(seq);
    return version;
  }

  getVersioned(key: Uint8Array): Promise<Versioned | undefined> {
    const entry = this.#live(byteString(key));
    return Promise.resolve(entry && versioned(entry.value, entry.version, entry.expiresAt));
  }

  setIf(
    key: Uint8Array,
    value: Uint8Array,
    condition: WriteCondition,
    _cancel?: unknown,
    ttlMs?: number,
  ): Promise<number> {
    const id = byteString(key);
    const entry = this.#live(id);
    const holds = condition.ifAbsent ? entry === undefined : entry?.version === condition.ifVersion;
    if (!holds) return Promise.reject(conflict(key, condition));
    const version = versions.next();
    return Promise.resolve(this.#write(id, entry, value, version, expiryOf(this.#clock, ttlMs)));
  }

  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return Promise.resolve(this.getSync(key));
  }

  set(key: Uint8Array, value: Uint8Array, _cancel?: unknown, ttlMs?: number): Promise<number> {
    return Promise.resolve(this.setSync(key, value, ttlMs));
  }

  delete(key: Uint8Array): Promise<boolean> {
    const id = byteString(key);
    const entry = this.#live(id);
    if (entry !== undefined) this.#remove(id, entry);
    return Promise.resolve(entry !== undefined);
  }

  exists(key: Uint8Array): Promise<boolean> {
    return Promise.resolve(this.#live(byteString(key)) !== undefined);
  }

  list(request: ListRequest): Promise<ListPage> {
    try {
      return Promise.resolve(this.#page(request));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** O(1) when no value has an expiry (the old maps are dropped whole); else one pass to leave expired ones uncounted. */
  clear(): Promise<number> {
    let removed = this.#map.size;
    if (this.#expiring > 0) {
      const now = this.#clock();
      for (const entry of this.#map.values()) if (isExpired(entry.expiresAt, now)) removed--;
    }
    this.#map = new Map();
    this.#logKeys = [];
    this.#logSeqs = [];
    this.#dead = 0;
    this.#expiring = 0;
    this.#expiries.clear();
    return Promise.resolve(removed);
  }

  close(): Promise<void> {
    clearInterval(this.#sweeper);
    return Promise.resolve();
  }

  #page(request: ListRequest): ListPage {
    const after = request.cursor === undefined ? 0 : cursorSeq(request.cursor);
    const prefix = request.prefix === undefined ? "" : byteString(request.prefix);
    const keys = this.#logKeys;
    const seqs = this.#logSeqs;
    const entries: ListEntry[] = [];
    let bytes = 0;
    let i = firstAfter(seqs, after);
    const stop = Math.min(keys.length, i + MAX_SLOTS_PER_PAGE);
    const now = this.#expiring > 0 ? this.#clock() : 0;
    for (; i < stop && entries.length < request.limit && bytes < MAX_PAGE_VALUE_BYTES; i++) {
      const id = keys[i] as string;
      const entry = this.#map.get(id);
      if (entry === undefined || entry.seq !== seqs[i] || !id.startsWith(prefix)) continue;
      if (isExpired(entry.expiresAt, now)) continue;
      const key = fromByteString(id);
      if (request.values) {
        entries.push({ key, value: entry.value });
        bytes += entry.value.length;
      } else entries.push({ key });
    }
    if (i >= keys.length) return { entries, cursor: undefined };
    return { entries, cursor: makeCursor(seqs[i - 1] ?? after) };
  }

  #compact(): void {
    const keys: string[] = [];
    const seqs: number[] = [];
    for (let i = 0; i < this.#logKeys.length; i++) {
      const id = this.#logKeys[i] as string;
      const seq = this.#logSeqs[i] as number;
      if (this.#map.get(id)?.seq === seq) {
        keys.push(id);
        seqs.push(seq);
      }
    }
    this.#logKeys = keys;
    this.#logSeqs = seqs;
    this.#dead = 0;
  }
}

/** Index of the first seq greater than `after` in ascending `seqs`. */
function firstAfter(seqs: readonly number[], after: number): number {
  let lo = 0;
  let hi = seqs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((seqs[mid] as number) <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function makeCursor(seq: number): Uint8Array {
  const out = new Uint8Array(9);
  out[0] = CURSOR_TAG;
  new DataView(out.buffer).setFloat64(1, seq);
  return out;
}

function cursorSeq(cursor: Uint8Array): number {
  if (cursor.length !== 9 || cursor[0] !== CURSOR_TAG) {
    throw new KvError(ErrorCode.BadCursor, "not a cursor of this store");
  }
  const seq = new DataView(cursor.buffer, cursor.byteOffset, 9).getFloat64(1);
  if (!Number.isSafeInteger(seq) || seq < 0) throw new KvError(ErrorCode.BadCursor, "not a cursor of this store");
  return seq;
}
