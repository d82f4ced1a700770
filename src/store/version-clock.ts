/**
 * Every version this code writes is at least this. Versions written before
 * (counters started from the writer's clock in microseconds, below 2^51
 * until 2041) are all below it, so a new version never repeats an old one.
 */
export const VERSION_BASE = 2 ** 52;

const HALF = 2 ** 26;
const HALF_MASK = HALF - 1;
const SPACE = 2 ** 52;

/** A 32-bit mix (murmur3's finaliser): the round function of the permutation. */
function mix(x: number): number {
  let h = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Chooses versions without reading the item they go to, so a blind write
 * (a batched put) can carry one. Versions are unique, like S3 version ids
 * or ETags, not ordered: `2^52 + P(n)`, where `n` counts the versions this
 * instance gave from a random start and `P` is a permutation of the 52-bit
 * numbers (a four-round Feistel network) keyed with random bits drawn when
 * the instance is made.
 *
 * Invariants:
 * - One instance never gives the same version twice (P is a bijection and
 *   `n` does not repeat within 2^52 calls), whatever the clock does: no
 *   clock is read.
 * - Two instances (two servers, or one restarted) draw independent keys and
 *   starts, so any one version of one equals any one of the other's with a
 *   chance of about 2^-52.
 * - Every version is a safe integer of at least 2^52.
 */
export class VersionClock {
  #n: number;
  readonly #keys: Uint32Array;

  /** `seed` fills the permutation's keys and start (tests pass fixed bytes); by default crypto.getRandomValues. */
  constructor(seed: (into: Uint32Array) => void = (into) => crypto.getRandomValues(into)) {
    const bits = new Uint32Array(6);
    seed(bits);
    this.#keys = bits.subarray(0, 4);
    this.#n = ((bits[4] as number) & HALF_MASK) * HALF + ((bits[5] as number) & HALF_MASK);
  }

  /** A version no write of this instance had. */
  next(): number {
    const n = this.#n;
    this.#n = (n + 1) % SPACE;
    let left = Math.floor(n / HALF);
    let right = n % HALF;
    for (const key of this.#keys) {
      const f = mix((right ^ key) >>> 0) & HALF_MASK;
      [left, right] = [right, (left ^ f) & HALF_MASK];
    }
    return VERSION_BASE + left * HALF + right;
  }
}

/** The process's clock: every store in one process takes its versions from it. */
export const versions = new VersionClock();
