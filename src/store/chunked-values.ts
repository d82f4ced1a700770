import { randomBytes } from "node:crypto";
import { discard, sameBytes } from "../bytes.js";
import { open, seal, TAG_BYTES } from "../crypto/envelope.js";
import type { ItemKeys, KeyRef } from "../crypto/item-key.js";
import type { Logger } from "../log.js";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";
import type { BatchReader } from "./batch-reader.js";
import type { BatchWriter } from "./batch-writer.js";
import { collectSoon } from "./chunk-buffers.js";
import { ChunkStream, MISSING } from "./chunk-stream.js";
import { ChunkUpload } from "./chunk-upload.js";
import type { AttributeMap } from "./dynamo-json.js";
import { type FairAdmission, INTERNAL_OWNER } from "./fair-admission.js";
import { type TableCalls, writeHead } from "./head-write.js";
import {
  Attr,
  authenticated,
  CHUNK_BYTES,
  chunkAad,
  chunkedHeadItem,
  chunkItem,
  chunkPk,
  type Head,
  ItemFormat,
  parseHead,
  VERSION_BYTES,
} from "./item-format.js";
import type { Cancel, Clock, ValueSink, ValueStream, WriteCondition } from "./kv-store.js";

/** A chunked value's head, parsed. */
export type ChunkedHead = Extract<Head, { format: 2 }>;

/**
 * Chunks encrypted and in flight at once per whole (not streamed) value of
 * a chunked size (3 MiB of plaintext): the window, not the value, sets the
 * transient memory of a set held whole.
 */
const CHUNK_WINDOW = 8;

/**
 * A chunked set that has not committed this long after its first chunk gives
 * up rather than commit: the orphan sweep may delete chunks older than
 * {@link ORPHAN_GRACE_MS}, and a head must never point at swept chunks.
 */
const COMMIT_DEADLINE_MS = 5 * 60_000;

/** Chunks younger than this are never swept: they may belong to a set still in progress. */
export const ORPHAN_GRACE_MS = 15 * 60_000;

/**
 * A replaced value's chunks are deleted this long after the commit, not at
 * once, so a streamed read that started on the old version can finish it.
 * A process that stops deletes what it has retired at once (close); one that
 * dies leaves them to the orphan sweep.
 */
export const RETIRED_CHUNKS_GRACE_MS = 5 * 60_000;

/** Test hooks for injecting failures at the points that matter for atomicity. */
export interface StoreFaults {
  /** Runs after a chunked value's chunks are written and before its head is switched. */
  beforeCommit?(key: Uint8Array): void | Promise<void>;
}

/** What {@link ChunkedValues} works with. */
export interface ChunkedValuesParts {
  readonly table: TableCalls;
  /** The batched writer, for chunk items and their deletes. */
  readonly writer: BatchWriter;
  /** Reads one chunk item per call (maxKeys 1), so no two reads share an item. */
  readonly chunkReader: BatchReader;
  readonly keys: ItemKeys;
  /** The table name bound into every AAD. */
  readonly scope: string;
  /** The store's admission bound: a streamed set holds one slot until its chunks are written. */
  readonly admission: FairAdmission;
  readonly log: Logger;
  /** The clock expiry is measured on. */
  readonly clock: Clock;
  readonly faults?: StoreFaults;
}

/**
 * Values too large for one item: split into chunk items under a fresh
 * version id and committed by switching the key's head to that version
 * with one UpdateItem; the previous version's chunks are deleted after.
 *
 * Invariants:
 * - A get sees the old value or the new one in full: a reader whose version
 *   is replaced mid-read finds chunks missing and the caller re-reads the
 *   head, and every chunk's AAD names its version, index and count.
 * - A set that fails before the switch leaves the old value readable; its
 *   chunks are orphans, deleted here or by the orphan sweep.
 * - A replaced version's chunks stay {@link RETIRED_CHUNKS_GRACE_MS} for
 *   readers still streaming them.
 */
export class ChunkedValues {
  readonly #p: ChunkedValuesParts;
  /** Replaced versions whose chunks are due for deletion, by timer. */
  readonly #retired = new Map<Timer, { ver: Uint8Array; count: number }>();
  /** Streamed sets not yet settled (writing chunks, or deleting an abandoned upload's). */
  readonly #uploads = new Set<Promise<void>>();

  constructor(parts: ChunkedValuesParts) {
    this.#p = parts;
  }

  /**
   * Writes `value`, held whole, as chunks and commits it, expiring at
   * `expiresAt` (ms since the epoch; undefined: never); resolves the version written.
   */
  async set(
    key: Uint8Array,
    value: Uint8Array,
    condition: WriteCondition | undefined,
    expiresAt: number | undefined,
  ): Promise<number> {
    const { scope, keys, writer } = this.#p;
    const size = value.length;
    const count = Math.max(1, Math.ceil(size / CHUNK_BYTES));
    const ver = new Uint8Array(randomBytes(VERSION_BYTES));
    const started = Date.now();
    const dataKey = await keys.encryptionKey(count, size);

    for (let first = 0; first < count; first += CHUNK_WINDOW) {
      const puts: Promise<void>[] = [];
      for (let i = first; i < Math.min(count, first + CHUNK_WINDOW); i++) {
        const plain = value.subarray(i * CHUNK_BYTES, Math.min(size, (i + 1) * CHUNK_BYTES));
        const sealed = seal(dataKey.plaintext, plain, chunkAad(scope, key, ver, i, count, size, expiresAt));
        puts.push(writer.put(chunkItem(key, ver, i, { ...sealed, ts: started, expiresAt })));
      }
      await Promise.all(puts);
      collectSoon();
    }
    try {
      return await this.#commit(key, ver, dataKey.ref, { count, size, started, expiresAt }, condition);
    } catch (err) {
      // Not committed (a conflict, or a commit that failed): the chunks are nobody's.
      if (err instanceof KvError && err.code === ErrorCode.Conflict) {
        await this.#deleteChunksOrLeave(ver, count, "a conflicting write's");
      }
      throw err;
    }
  }

  /**
   * A sink that writes a large value's chunks as its bytes arrive (see
   * {@link ChunkUpload}). The upload holds one admission slot until its
   * chunks are written; the commit, a single UpdateItem, needs none, so a
   * commit waiting its turn behind another write of the key never holds one.
   */
  setStream(key: Uint8Array, size: number, cancel: Cancel | undefined, expiresAt: number | undefined): ValueSink {
    const { admission, keys, writer, scope } = this.#p;
    const count = Math.max(1, Math.ceil(size / CHUNK_BYTES));
    const ver = new Uint8Array(randomBytes(VERSION_BYTES));
    const admitted = Promise.withResolvers<void>();
    const settled = Promise.withResolvers<void>();
    this.#uploads.add(settled.promise);
    settled.promise.then(() => this.#uploads.delete(settled.promise));
    admission
      .run(cancel ?? INTERNAL_OWNER, () => {
        admitted.resolve();
        return settled.promise;
      })
      .catch(() => {});
    return new ChunkUpload({
      key,
      size,
      ver,
      scope,
      expiresAt,
      dataKey: admitted.promise.then(() => keys.encryptionKey(count, size)),
      put: (item) => writer.put(item).finally(collectSoon),
      commit: (keyRef, n, started) => this.#commit(key, ver, keyRef, { count: n, size, started, expiresAt }),
      discard: (n) => this.#deleteChunksOrLeave(ver, n, "an abandoned upload's"),
      settled: () => settled.resolve(),
      deadlineMs: COMMIT_DEADLINE_MS,
    });
  }

  /**
   * Reads the value `head` names: whole when it is smaller than
   * `streamFrom` bytes, else as a stream whose first chunk has been read.
   * MISSING when a chunk is gone (the version was replaced, or the data
   * is damaged: the caller tells which).
   */
  async read(
    key: Uint8Array,
    head: ChunkedHead,
    dataKey: Uint8Array,
    streamFrom: number,
  ): Promise<Uint8Array | ValueStream | typeof MISSING> {
    if (head.size < streamFrom) return this.#readWhole(key, head, dataKey);
    const stream = new ChunkStream(head.count, head.size, (i, into) => this.#readChunk(key, head, dataKey, i, into));
    // The first chunk is read before answering, so a version replaced before the read began is retried by the caller.
    return (await stream.ready()) ? stream : MISSING;
  }

  /** Deletes the chunks of a deleted head, if it was chunked; what cannot be deleted is left to the orphan sweep. */
  async deletedHead(old: AttributeMap): Promise<void> {
    const head = safeHead(old);
    if (head?.format !== ItemFormat.chunked) return;
    try {
      await this.#deleteChunks(head.ver, head.count);
    } catch (err) {
      // The head is gone, so the value is; its chunks are orphans the sweep removes.
      this.#p.log.warn("could not delete a deleted value's chunks; the orphan sweep will", {
        reason: errorMessage(err),
      });
    }
  }

  /** Deletes retired chunks now, and waits for every streamed set to settle. */
  async close(): Promise<void> {
    const retired = [...this.#retired];
    this.#retired.clear();
    await Promise.all(
      retired.map(([timer, { ver, count }]) => {
        clearTimeout(timer);
        return this.#deleteChunksOrLeave(ver, count, "a replaced value's");
      }),
    );
    await Promise.all(this.#uploads);
  }

  /**
   * Switches `key`'s head to version `ver`, whose `count` chunks are written:
   * the commit point of a chunked set, conditional when `condition` is
   * given. Refused once the chunks are older than {@link COMMIT_DEADLINE_MS}.
   */
  async #commit(
    key: Uint8Array,
    ver: Uint8Array,
    keyRef: KeyRef,
    chunks: { count: number; size: number; started: number; expiresAt: number | undefined },
    condition?: WriteCondition,
  ): Promise<number> {
    const { count, size, started, expiresAt } = chunks;
    if (Date.now() - started > COMMIT_DEADLINE_MS) {
      throw new KvError(ErrorCode.Storage, "chunks took too long to write; the set was not committed");
    }
    await this.#p.faults?.beforeCommit?.(key);
    const head = chunkedHeadItem(key, { keyRef, ver, count, size, ts: Date.now(), expiresAt });
    const identity = { attr: Attr.ver, bytes: ver };
    const { version, old } = await writeHead(this.#p.table, key, head, identity, condition, true, this.#p.clock());
    // A retried commit that had landed returns our own head as the old one: nothing to retire then.
    const previous = old === undefined ? undefined : safeHead(old);
    if (previous?.format === ItemFormat.chunked && !sameBytes(previous.ver, ver)) {
      // Not at once: a streamed read of the old version may still be going.
      this.#retire(previous.ver, previous.count);
    }
    return version;
  }

  /** Reads and decrypts every chunk of `head`, or returns MISSING if one is gone. */
  async #readWhole(key: Uint8Array, head: ChunkedHead, dataKey: Uint8Array): Promise<Uint8Array | typeof MISSING> {
    const out = new Uint8Array(head.size);
    for (let first = 0; first < head.count; first += CHUNK_WINDOW) {
      const last = Math.min(head.count, first + CHUNK_WINDOW);
      const reads: Promise<Uint8Array | typeof MISSING>[] = [];
      for (let i = first; i < last; i++) {
        reads.push(this.#readChunk(key, head, dataKey, i, out.subarray(i * CHUNK_BYTES)));
      }
      const plains = await Promise.all(reads);
      if (plains.includes(MISSING)) return MISSING;
    }
    return out;
  }

  /**
   * Reads and decrypts chunk `i` of `head` into `into`, checking its AAD and
   * length; MISSING if the item is gone. Resolves a view of `into`. The
   * ciphertext is freed as soon as it is decrypted (see `discard`).
   */
  async #readChunk(
    key: Uint8Array,
    head: ChunkedHead,
    dataKey: Uint8Array,
    i: number,
    into: Uint8Array,
  ): Promise<Uint8Array | typeof MISSING> {
    const item = await this.#p.chunkReader.get(chunkPk(head.ver, i));
    if (item === undefined) return MISSING;
    const iv = item[Attr.iv]?.B;
    const ciphertext = item[Attr.ct]?.B;
    if (!iv || !ciphertext) throw new KvError(ErrorCode.Integrity, `chunk ${i} lacks iv or ct`);
    const expected = Math.min(CHUNK_BYTES, head.size - i * CHUNK_BYTES);
    if (ciphertext.length !== expected + TAG_BYTES) {
      throw new KvError(ErrorCode.Integrity, `chunk ${i} has the wrong length`);
    }
    const aad = chunkAad(this.#p.scope, key, head.ver, i, head.count, head.size, head.expiresAt);
    try {
      return authenticated(() => open(dataKey, { iv, ciphertext }, aad, into), `chunk ${i} of a stored value`);
    } finally {
      // The chunk reader (maxKeys 1) never shares an item, so this ciphertext has no other reader.
      discard(ciphertext);
    }
  }

  /** Deletes a replaced version's chunks after {@link RETIRED_CHUNKS_GRACE_MS}, or at close. */
  #retire(ver: Uint8Array, count: number): void {
    const timer = setTimeout(() => {
      this.#retired.delete(timer);
      this.#deleteChunksOrLeave(ver, count, "a replaced value's");
    }, RETIRED_CHUNKS_GRACE_MS);
    timer.unref();
    this.#retired.set(timer, { ver, count });
  }

  #deleteChunks(ver: Uint8Array, count: number): Promise<unknown> {
    const deletes: Promise<void>[] = [];
    for (let i = 0; i < count; i++) deletes.push(this.#p.writer.delete({ [Attr.pk]: { B: chunkPk(ver, i) } }));
    return Promise.all(deletes);
  }

  /** Deletes chunks `0..count-1` of `ver`; what cannot be deleted is logged and left to the orphan sweep. Never rejects. */
  #deleteChunksOrLeave(ver: Uint8Array, count: number, whose: string): Promise<void> {
    return this.#deleteChunks(ver, count).then(
      () => {},
      (err: unknown) => {
        this.#p.log.warn(`could not delete ${whose} chunks; the orphan sweep will`, { reason: errorMessage(err) });
      },
    );
  }
}

/** A head parsed, or undefined if it cannot be (a damaged item is no reason to fail the write that replaced it). */
export function safeHead(item: AttributeMap): Head | undefined {
  try {
    return parseHead(item);
  } catch {
    return undefined;
  }
}
