import { BufferPool } from "../buffer-pool.js";
import { TAG_BYTES } from "../crypto/envelope.js";
import { CHUNK_BYTES } from "./item-format.js";

/** Length of every pooled buffer: one chunk's plaintext, or its ciphertext with the tag. */
export const CHUNK_BUFFER_BYTES = CHUNK_BYTES + TAG_BYTES;

/**
 * Chunk-sized buffers reused from upload to upload, at most 16 kept (about
 * 6 MiB: two uploads' windows).
 *
 * Why: a chunk's plaintext and ciphertext live as long as its DynamoDB write,
 * hundreds of milliseconds, long enough for JSC's frequent young-generation
 * collections to promote them. Promoted garbage waits for a full collection,
 * so fresh buffers per chunk let a 64 MiB set pile up tens of megabytes
 * (measured: the heap grew by ~60 MiB between two full collections).
 * Reused buffers never become garbage.
 *
 * Who gives back: a buffer goes back only when nothing reads or writes it
 * any more; a buffer whose last reader is unknown (a write that failed and
 * may still be retried) is not given back but dropped.
 */
export const chunkBuffers = new BufferPool(CHUNK_BUFFER_BYTES, 16);
