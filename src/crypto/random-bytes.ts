/**
 * Random bytes for IVs and salts, drawn from a pooled buffer of the system
 * CSPRNG's output (`crypto.getRandomValues`), because a call per 12-byte IV
 * costs more than the AES-GCM pass over a small value.
 *
 * Invariant: every pooled byte is handed out once, as a copy; the pool is
 * refilled only after all of it was handed out, so no two callers ever see
 * the same bytes and no caller's bytes change after it got them.
 */
const POOL_BYTES = 4096;
/** Larger requests than this go to the CSPRNG directly, not through the pool. */
const POOLED_MAX = 256;

let pool = new Uint8Array(POOL_BYTES);
let next = POOL_BYTES;

/** `n` fresh random bytes in an array of their own. */
export function randomBytes(n: number): Uint8Array {
  if (n > POOLED_MAX) return crypto.getRandomValues(new Uint8Array(n));
  if (next + n > POOL_BYTES) {
    pool = crypto.getRandomValues(new Uint8Array(POOL_BYTES));
    next = 0;
  }
  const out = pool.slice(next, next + n);
  next += n;
  return out;
}
