import { createLogger, type Logger } from "../../src/log.js";

/** A logger that keeps its lines and lets a test wait for one. */
export class CapturingLog {
  readonly lines: string[] = [];
  readonly #waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  readonly log: Logger;
  constructor(level: "warn" | "debug" = "debug") {
    this.log = createLogger(level, (line) => {
      this.lines.push(line);
      for (const w of this.#waiters.filter((w) => w.pattern.test(line))) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(line);
      }
    });
  }
  /** Resolves with the first line matching `pattern`, past or future. */
  next(pattern: RegExp): Promise<string> {
    const seen = this.lines.find((l) => pattern.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => this.#waiters.push({ pattern, resolve }));
  }
  count(pattern: RegExp): number {
    return this.lines.filter((l) => pattern.test(l)).length;
  }
}
