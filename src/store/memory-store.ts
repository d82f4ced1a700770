import { byteString, fromByteString } from "../bytes.js";
import { ErrorCode, KvError } from "../wire/errors.js";
import {
  conflict,
  type KvStore,
  type ListEntry,
  type ListPage,
  type ListRequest,
  MAX_PAGE_VALUE_BYTES,
  type Versioned,
  type WriteCondition,
} from "./kv-store.js";
import { versions } from "./version-clock.js";

interface Entry {
  value: Uint8Array;
  version: number;
  /** When the key was inserted: its place in the listing order. */
  readonly seq: number;
}

/** Log slots a page looks at before it answers with what it has: bounds one call's time on a huge store. */
const MAX_SLOTS_PER_PAGE = 100_000;

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
 */
export class MemoryStore implements KvStore {
  #map = new Map<string, Entry>();
  #logKeys: string[] = [];
  #logSeqs: number[] = [];
  #dead = 0;
  #nextSeq = 1;
  readonly appliesInOrder = true;

  readonly getSync = (key: Uint8Array): Uint8Array | undefined => this.#map.get(byteString(key))?.value;

  readonly setSync = (key: Uint8Array, value: Uint8Array): number => {
    const id = byteString(key);
    return this.#write(id, this.#map.get(id), value, versions.next());
  };

  /** Stores a copy of `value` under `id` (whose entry is `entry`) at `version`; returns it. */
  #write(id: string, entry: Entry | undefined, value: Uint8Array, version: number): number {
    // The one copy the store keeps (new Uint8Array(view) copies; Buffer#slice would not):
    // the frame's bytes belong to the socket's read buffer.
    const copy = new Uint8Array(value);
    if (entry !== undefined) {
      entry.value = copy;
      entry.version = version;
      return version;
    }
    const seq = this.#nextSeq++;
    this.#map.set(id, { value: copy, seq, version });
    this.#logKeys.push(id);
    this.#logSeqs.push(seq);
    return version;
  }

  getVersioned(key: Uint8Array): Promise<Versioned | undefined> {
    const entry = this.#map.get(byteString(key));
    return Promise.resolve(entry && { value: entry.value, version: entry.version });
  }

  setIf(key: Uint8Array, value: Uint8Array, condition: WriteCondition): Promise<number> {
    const id = byteString(key);
    const entry = this.#map.get(id);
    const holds = condition.ifAbsent ? entry === undefined : entry?.version === condition.ifVersion;
    if (!holds) return Promise.reject(conflict(key, condition));
    const version = versions.next();
    return Promise.resolve(this.#write(id, entry, value, version));
  }

  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return Promise.resolve(this.getSync(key));
  }

  set(key: Uint8Array, value: Uint8Array): Promise<number> {
    return Promise.resolve(this.setSync(key, value));
  }

  delete(key: Uint8Array): Promise<boolean> {
    const removed = this.#map.delete(byteString(key));
    if (removed && ++this.#dead > Math.max(1024, this.#map.size)) this.#compact();
    return Promise.resolve(removed);
  }

  exists(key: Uint8Array): Promise<boolean> {
    return Promise.resolve(this.#map.has(byteString(key)));
  }

  list(request: ListRequest): Promise<ListPage> {
    try {
      return Promise.resolve(this.#page(request));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** O(1): the old maps are dropped whole. */
  clear(): Promise<number> {
    const removed = this.#map.size;
    this.#map = new Map();
    this.#logKeys = [];
    this.#logSeqs = [];
    this.#dead = 0;
    return Promise.resolve(removed);
  }

  close(): Promise<void> {
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
    for (; i < stop && entries.length < request.limit && bytes < MAX_PAGE_VALUE_BYTES; i++) {
      const id = keys[i] as string;
      const entry = this.#map.get(id);
      if (entry === undefined || entry.seq !== seqs[i] || !id.startsWith(prefix)) continue;
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
