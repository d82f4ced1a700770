import { asKvError, ErrorCode, KvError } from "../errors.js";
import type { Logger } from "../log.js";
import { type KvStore, MAX_KEY_BYTES } from "../store/kv-store.js";
import { encodeGetOk, Frames, type ReplyKind, type Request } from "./codec.js";
import { errorFrame } from "./error-response.js";

/** Limits a dispatcher enforces before touching the store. */
export interface DispatchLimits {
  maxKeyBytes: number;
  maxValueBytes: number;
}

/**
 * Runs decoded requests against a store and returns response frames. It
 * never rejects: every failure becomes an `internal` response and one log line
 * with its code and reason (never the value).
 */
export class Dispatcher {
  readonly #store: KvStore;
  readonly #log: Logger;
  readonly #limits: DispatchLimits;

  constructor(store: KvStore, log: Logger, limits: Partial<DispatchLimits> = {}) {
    this.#store = store;
    this.#log = log;
    this.#limits = { maxKeyBytes: MAX_KEY_BYTES, maxValueBytes: Number.MAX_SAFE_INTEGER, ...limits };
  }

  /** Answers `req`. The returned parts form one response frame. */
  handle(req: Request): Promise<Uint8Array[]> {
    switch (req.kind) {
      case "set":
        return this.#set(req.key, req.value);
      case "get":
        return this.#get(req.key);
      case "invalid":
        return Promise.resolve([this.#fail(req.reply, new KvError(ErrorCode.BadRequest, req.reason))]);
    }
  }

  async #set(key: Uint8Array, value: Uint8Array): Promise<Uint8Array[]> {
    const limitError = this.#checkKey(key) ?? this.#checkValue(value);
    if (limitError) return [this.#fail("set", limitError)];
    try {
      await this.#store.set(key, value);
      return [Frames.setOk];
    } catch (err) {
      return [this.#fail("set", asKvError(err, ErrorCode.Storage, "set failed"))];
    }
  }

  async #get(key: Uint8Array): Promise<Uint8Array[]> {
    const limitError = this.#checkKey(key);
    if (limitError) return [this.#fail("get", limitError)];
    try {
      const value = await this.#store.get(key);
      return value === undefined ? [Frames.getNotFound] : encodeGetOk(key, value);
    } catch (err) {
      return [this.#fail("get", asKvError(err, ErrorCode.Storage, "get failed"))];
    }
  }

  #checkKey(key: Uint8Array): KvError | undefined {
    if (key.length <= this.#limits.maxKeyBytes) return undefined;
    return new KvError(
      ErrorCode.KeyTooLarge,
      `key of ${key.length} bytes exceeds the maximum of ${this.#limits.maxKeyBytes}`,
    );
  }

  #checkValue(value: Uint8Array): KvError | undefined {
    if (value.length <= this.#limits.maxValueBytes) return undefined;
    return new KvError(
      ErrorCode.ValueTooLarge,
      `value of ${value.length} bytes exceeds the maximum of ${this.#limits.maxValueBytes}`,
    );
  }

  #fail(reply: ReplyKind, err: KvError): Uint8Array {
    this.#log.warn("request failed", { code: err.code, op: reply, reason: err.message });
    return errorFrame(reply, err);
  }
}
