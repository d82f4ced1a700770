import { ErrorCode, KvError } from "../errors.js";

/**
 * Every version this code writes is at least this. Versions written before
 * (counters started from the writer's clock in microseconds, below 2^51
 * until 2041) are all below it, so a new version never repeats an old one.
 */
export const VERSION_BASE = 2 ** 52;

/** Random low bits of a version: 2,048 values per millisecond. */
const RANDOM_BITS = 11;
const RANDOM_VALUES = 2 ** RANDOM_BITS;

/** Milliseconds count from here: 2^41 of them reach September 2095, where the 53 bits run out. */
const EPOCH_MS = Date.UTC(2026, 0, 1);

/**
 * Chooses versions without reading the item they go to, so a blind write
 * (a batched put) can carry one.
 *
 * A version is `2^52 + ms · 2^11 + r`: the milliseconds since 2026-01-01 by
 * this process's clock and 11 random bits, always a safe integer.
 *
 * Invariants:
 * - One instance never gives the same version twice, and each version it
 *   gives is larger than the one before, whatever its clock does: a clock
 *   that stands still or steps back gets the previous version plus one.
 * - {@link after} is larger than the version it is given, so a conditional
 *   write always raises the key's version.
 */
export class VersionClock {
  #last = 0;
  readonly #now: () => number;
  readonly #random: () => number;

  /** `now` is milliseconds since the Unix epoch; `random` is uniform in [0, 1). */
  constructor(now: () => number = Date.now, random: () => number = Math.random) {
    this.#now = now;
    this.#random = random;
  }

  /** A version for a write that does not know the key's current one. */
  next(): number {
    const ms = Math.max(0, Math.floor(this.#now()) - EPOCH_MS);
    const candidate = VERSION_BASE + ms * RANDOM_VALUES + Math.floor(this.#random() * RANDOM_VALUES);
    const version = candidate > this.#last ? candidate : this.#last + 1;
    if (!Number.isSafeInteger(version)) throw exhausted();
    this.#last = version;
    return version;
  }

  /** A version for a write that replaces version `current`: {@link next}, or `current + 1` if that is larger. */
  after(current: number): number {
    const version = Math.max(this.next(), current + 1);
    if (!Number.isSafeInteger(version)) throw exhausted();
    this.#last = Math.max(this.#last, version);
    return version;
  }
}

function exhausted(): KvError {
  return new KvError(ErrorCode.Storage, "no version is left below 2^53 for this write");
}

/** The process's clock: every store in one process takes its versions from it. */
export const versions = new VersionClock();
