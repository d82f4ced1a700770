import type { LogFields, Logger } from "./log.js";

interface Window {
  start: number;
  suppressed: number;
  timer: Timer | undefined;
}

/**
 * Keeps a flood of identical warnings (one per failed request during an
 * outage, one per bad request from a noisy client) from flooding the log:
 * the first line of a key in each window is written; the rest are counted,
 * and one line at the end of the window says how many were left out.
 */
export class RepeatLimiter {
  readonly #log: Logger;
  readonly #windowMs: number;
  readonly #windows = new Map<string, Window>();
  readonly #now: () => number;

  constructor(log: Logger, windowMs = 1_000, now: () => number = Date.now) {
    this.#log = log;
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /** Writes `msg` at warn level, unless a line of `key` was written less than a window ago. */
  warn(key: string, msg: string, fields: LogFields = {}): void {
    const now = this.#now();
    const w = this.#windows.get(key);
    if (w !== undefined && now - w.start < this.#windowMs) {
      w.suppressed++;
      w.timer ??= setTimeout(() => this.#report(key, msg), Math.max(0, w.start + this.#windowMs - now)).unref();
      return;
    }
    this.#windows.set(key, { start: now, suppressed: 0, timer: undefined });
    this.#log.warn(msg, fields);
  }

  #report(key: string, msg: string): void {
    const w = this.#windows.get(key);
    if (w === undefined) return;
    this.#windows.delete(key);
    if (w.suppressed > 0) this.#log.warn(`${msg} (repeated)`, { key, suppressed: w.suppressed });
  }
}
