import { TAG_BYTES } from "../crypto/envelope.js";
import { BufferPool } from "../wire/buffer-pool.js";
import { CHUNK_BYTES } from "./item-format.js";

/** Length of every pooled buffer: one chunk's plaintext, or its ciphertext with the tag. */
export const CHUNK_BUFFER_BYTES = CHUNK_BYTES + TAG_BYTES;

/**
 * Chunk-sized buffers reused from upload to upload, at most 16 kept (about
 * 6 MiB: two uploads' windows). A deliberate pool, shared by every store in
 * the process: the memory it bounds is the process's.
 *
 * Why: a chunk's plaintext and ciphertext live as long as its DynamoDB write,
 * hundreds of milliseconds, long enough for JSC's frequent young-generation
 * collections to promote them. Promoted garbage waits for a full collection,
 * so fresh buffers per chunk let a 64 MiB set pile up tens of megabytes of
 * it (docs/performance.md, *Large values*). Reused buffers never become
 * garbage.
 *
 * Who gives back: a buffer goes back only when nothing reads or writes it
 * any more; a buffer whose last reader is unknown (a write that failed and
 * may still be retried) is not given back but dropped.
 */
export const chunkBuffers = new BufferPool(CHUNK_BUFFER_BYTES, 16);

/** Least time between two {@link collectSoon} requests. */
const COLLECT_EVERY_MS = 20;
/** Process-wide on purpose: the collector it paces is the process's. */
let lastCollect = 0;

/**
 * Large-value traffic allocates about a megabyte of short-lived buffers per
 * chunk (socket reads, DynamoDB answers, cipher output). This asks JSC for a
 * young-generation collection without waiting for it: `Bun.gc(false)`
 * schedules one and returns, where `Bun.gc(true)` would run a full
 * collection on the request path and pause every connection. Without it a
 * large get peaks higher (docs/performance.md, *Large values*). Buffers that live across such a collection (a chunk's plaintext
 * and ciphertext while its write or send is in flight) come from
 * {@link chunkBuffers} instead, since promoted garbage waits for a full
 * collection.
 */
export function collectSoon(): void {
  const now = performance.now();
  if (now - lastCollect < COLLECT_EVERY_MS) return;
  lastCollect = now;
  Bun.gc(false);
}
