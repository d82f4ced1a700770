import type { Logger } from "../log.js";
import { errorMessage } from "../wire/errors.js";
import { type DynamoDbLocal, type DynamoDbLocalOptions, startDynamoDbLocal } from "./dynamodb-local.js";

/** Backoff between restarts: 1 s, doubling to 30 s. */
const FIRST_RESTART_MS = 1_000;
const MAX_RESTART_MS = 30_000;
/** A process that ran this long resets the backoff. */
const HEALTHY_AFTER_MS = 60_000;

/**
 * Keeps an embedded DynamoDB Local running: when the Java process dies
 * without being asked to (a crash, the OOM killer, a stray SIGKILL), it is
 * started again on the same port and data directory, with a log line and
 * exponential backoff, so requests recover by themselves once it is back.
 * Between its death and its return, requests fail and are answered
 * `internal` within their deadline.
 */
export class SupervisedDynamoDbLocal implements AsyncDisposable {
  readonly #options: DynamoDbLocalOptions & { port: number };
  readonly #log: Logger;
  #current: DynamoDbLocal;
  #stopping = false;
  #restarts = 0;
  #timer: Timer | undefined;

  private constructor(first: DynamoDbLocal, options: DynamoDbLocalOptions, log: Logger) {
    this.#current = first;
    this.#options = { ...options, port: first.port };
    this.#log = log;
    this.#watch(first, Date.now());
  }

  /** Starts DynamoDB Local and supervises it. */
  static async start(options: DynamoDbLocalOptions, log: Logger): Promise<SupervisedDynamoDbLocal> {
    return new SupervisedDynamoDbLocal(await startDynamoDbLocal(options), options, log);
  }

  /** The endpoint; it does not change across restarts. */
  get endpoint(): string {
    return this.#current.endpoint;
  }

  /** Times it was restarted. */
  get restarts(): number {
    return this.#restarts;
  }

  /** Stops supervising and stops the process. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    await this.#current.stop();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  #watch(ddb: DynamoDbLocal, startedAt: number, delayMs = FIRST_RESTART_MS): void {
    void ddb.exited.then((code) => {
      if (this.#stopping) return;
      const next = Date.now() - startedAt > HEALTHY_AFTER_MS ? FIRST_RESTART_MS : delayMs;
      this.#log.warn("DynamoDB Local exited; restarting", { code, inMs: next, endpoint: ddb.endpoint });
      this.#scheduleRestart(next);
    });
  }

  #scheduleRestart(delayMs: number): void {
    this.#timer = setTimeout(async () => {
      if (this.#stopping) return;
      try {
        const ddb = await startDynamoDbLocal(this.#options);
        if (this.#stopping) {
          await ddb.stop();
          return;
        }
        this.#current = ddb;
        this.#restarts++;
        this.#log.warn("DynamoDB Local restarted", { endpoint: ddb.endpoint, restarts: this.#restarts });
        this.#watch(ddb, Date.now(), Math.min(MAX_RESTART_MS, delayMs * 2));
      } catch (err) {
        const next = Math.min(MAX_RESTART_MS, delayMs * 2);
        this.#log.error("DynamoDB Local could not be restarted; trying again", {
          reason: errorMessage(err),
          inMs: next,
        });
        this.#scheduleRestart(next);
      }
    }, delayMs);
    this.#timer.unref();
  }
}
