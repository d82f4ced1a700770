import { Grant } from "../auth/access-policy.js";
import type { Logger } from "../log.js";
import {
  type Answer,
  type AnswerSink,
  Deferred,
  type FrameHandler,
  type FrameStream,
  StreamedAnswer,
  WRITTEN,
} from "../net/frame-handler.js";
import { type Op, RequestStats } from "../ops/request-stats.js";
import { type RequestLimits, RequestPolicy } from "../service/request-policy.js";
import {
  type Cancel,
  isValueStream,
  type KvStore,
  readValue,
  type ValueStream,
  type WriteCondition,
} from "../store/kv-store.js";
import type { ReplyKind } from "../wire/envelope.js";
import { ErrorCode, KvError } from "../wire/errors.js";
import {
  ApiFrames,
  decodeRequest,
  encodeClearOk,
  encodeGetOk,
  encodeGetOkHead,
  encodeGetOkInto,
  encodeGetOkScratch,
  encodeListOk,
  encodeSetOk,
  encodeSetOkInto,
  Frames,
  type ListRequestFields,
  type Request,
  writeFrameInto,
} from "./codec.js";
import { errorFrame } from "./error-response.js";
import { StreamedSet, type StreamedSetHost } from "./streamed-set.js";

/** Limits a dispatcher enforces before touching the store: the request policy's, and when to stream. */
export interface DispatchLimits extends RequestLimits {
  /** Frames at least this long that span reads are read as they arrive (see {@link StreamedSet}). */
  streamFromBytes: number;
}

/** Frames from this length up are streamed unless the dispatcher is told otherwise. */
export const STREAM_SETS_FROM_BYTES = 4 * 1024 * 1024;

/**
 * Answers frames: decodes each as a request, runs it against the store and
 * encodes the answer. It is the connection's {@link FrameHandler}.
 *
 * Invariants:
 * - Only decoding throws: bytes that are not an envelope, or a bug in the
 *   decoder, and either closes the connection. Every failure after decoding,
 *   a bug included, becomes an `internal` answer and a log line with its code
 *   and reason (never a value). A promised answer never rejects.
 * - With a store that answers synchronously (the memory store), gets and
 *   sets are answered synchronously: no Promise or closure per request.
 * - A list or clear is answered {@link Deferred}: after every earlier
 *   request on its connection, and before any later one starts.
 * - What is refused, and how each request is counted, timed and logged, is
 *   the {@link RequestPolicy}'s, which the HTTP gateway shares.
 */
/**
 * Who a frame is answered for: what it may do, and how its whole frames are
 * answered (a large frame that is not a streamable set is kept whole and
 * handed back). The dispatcher is the caller of every connection served
 * without authentication; a connection's session (session.ts) is its own.
 */
export interface Caller {
  readonly grant: Grant;
  handle(frame: Uint8Array): Answer | Promise<Answer> | Deferred;
}

export class Dispatcher implements FrameHandler, Caller {
  readonly #store: KvStore;
  readonly #log: Logger;
  readonly #streamFromBytes: number;
  readonly #policy: RequestPolicy;
  /** Requests by op and result, and store latency, for /metrics. */
  readonly stats: RequestStats;
  /** The dispatcher's side of a streamed set. */
  readonly #streamHost: StreamedSetHost;
  /** The grant of a connection served without authentication: everything. */
  readonly #everyone = Grant.everything("anonymous");

  constructor(store: KvStore, log: Logger, limits: Partial<DispatchLimits> = {}, stats = new RequestStats()) {
    this.#store = store;
    this.#log = log;
    this.#streamFromBytes = limits.streamFromBytes ?? STREAM_SETS_FROM_BYTES;
    this.#policy = new RequestPolicy(limits, stats, log);
    this.stats = stats;
    const policy = this.#policy;
    this.#streamHost = {
      store,
      refuseSet: (key, valueLength, ttlMs, grant) => policy.refuseSet(grant, key, valueLength, ttlMs),
      answerSet: (work, started) => this.#answerSet(work, started),
      fail: (reply, err) => this.#fail(reply, err),
    };
  }

  /**
   * Decodes and answers one frame; throws only while decoding. With `sink`,
   * a get answered at once is encoded straight into it.
   */
  handle(frame: Uint8Array, sink?: AnswerSink, cancel?: Cancel): Answer | Promise<Answer> | Deferred {
    // decodeRequest throws KV_ERR_BAD_ENVELOPE for the peer's bytes, or, for a bug, whatever the bug
    // threw; either closes the connection, which logs each for what it is (warn, or error).
    return this.dispatch(decodeRequest(frame), sink, cancel, this.#everyone);
  }

  /**
   * Takes a frame of at least `streamFromBytes` as it arrives: a set's value
   * goes to the store as it comes, any other frame is kept whole. `ready` is
   * called when the stream, having asked to pause, can take more.
   */
  stream(length: number, ready: () => void, cancel?: Cancel, caller: Caller = this): FrameStream | undefined {
    if (length < this.#streamFromBytes) return undefined;
    return new StreamedSet(this.#streamHost, caller, length, ready, cancel);
  }

  /** The dispatcher as a {@link Caller}: a connection served without authentication may do everything. */
  get grant(): Grant {
    return this.#everyone;
  }

  /**
   * Answers a decoded request made under `grant` (what its connection may
   * do). An auth_request is answered by a connection's session
   * (session.ts); one that reaches here has no authentication to answer it.
   */
  dispatch(
    req: Request,
    sink?: AnswerSink,
    cancel?: Cancel,
    grant: Grant = this.#everyone,
  ): Answer | Promise<Answer> | Deferred {
    switch (req.kind) {
      case "set":
        if (req.condition !== undefined) {
          return this.#setIf(req.key, req.value, req.condition, cancel, req.ttlMs, grant);
        }
        return this.#set(req.key, req.value, sink, cancel, req.ttlMs, grant);
      case "get":
        if (req.withVersion) return this.#getVersioned(req.key, cancel, grant);
        return this.#get(req.key, sink, cancel, grant);
      case "delete":
        return this.#keyOp("delete", req.key, cancel, grant);
      case "exists":
        return this.#keyOp("exists", req.key, cancel, grant);
      case "list":
        return new Deferred(() => this.#list(req, cancel, grant));
      case "clear":
        return new Deferred(() => this.#clear(grant));
      case "auth":
        return this.fail(
          "auth",
          new KvError(ErrorCode.Unauthenticated, "this server has no authentication configured; send no auth_request"),
        );
      case "invalid":
        return this.#fail(req.reply, new KvError(ErrorCode.BadRequest, req.reason));
    }
  }

  #keyOp(op: "delete" | "exists", key: Uint8Array, cancel: Cancel | undefined, grant: Grant): Answer | Promise<Answer> {
    const limitError = this.#policy.refuseKeyFor(grant, op === "delete" ? "write" : "read", key);
    if (limitError) return this.#fail(op, limitError);
    const started = performance.now();
    const work = op === "delete" ? this.#store.delete(key, cancel) : this.#store.exists(key, cancel);
    return this.#settled(op, started, work, (found) => {
      this.#timed(op, found ? "ok" : "not_found", started);
      if (op === "delete") return found ? ApiFrames.deleteOk : ApiFrames.deleteNotFound;
      return found ? ApiFrames.existsOk : ApiFrames.existsNotFound;
    });
  }

  #list(req: ListRequestFields, cancel: Cancel | undefined, grant: Grant): Answer | Promise<Answer> {
    const prefixError = this.#policy.refusePrefix(req.prefix);
    if (prefixError) return this.#fail("list", prefixError);
    const scope = this.#policy.listingScope(grant, req.prefix);
    if (scope instanceof KvError) return this.#fail("list", scope);
    const started = performance.now();
    const { prefix, filter } = scope;
    return this.#settled(
      "list",
      started,
      this.#store.list({ prefix, limit: req.limit, cursor: req.cursor, values: req.values }, cancel),
      (page) => {
        this.#timed("list", "ok", started);
        const entries = filter === undefined ? page.entries : page.entries.filter((e) => filter(e.key));
        return encodeListOk(entries, req.values, page.cursor);
      },
    );
  }

  #clear(grant: Grant): Answer | Promise<Answer> {
    const refused = this.#policy.refuseWhole(grant, "admin");
    if (refused) return this.#fail("clear", refused);
    const started = performance.now();
    return this.#settled("clear", started, this.#store.clear(), (removed) => {
      this.#timed("clear", "ok", started);
      this.#log.info("store cleared", { removed });
      return encodeClearOk(removed);
    });
  }

  #set(
    key: Uint8Array,
    value: Uint8Array,
    sink: AnswerSink | undefined,
    cancel: Cancel | undefined,
    ttlMs: number | undefined,
    grant: Grant,
  ): Answer | Promise<Answer> {
    const limitError = this.#policy.refuseSet(grant, key, value.length, ttlMs);
    if (limitError) return this.#fail("set", limitError);
    const store = this.#store;
    if (store.setSync !== undefined) {
      try {
        const version = store.setSync(key, value, ttlMs);
        this.#policy.ended("set", "ok");
        return sink !== undefined && encodeSetOkInto(sink, version) ? WRITTEN : encodeSetOk(version);
      } catch (err) {
        return this.#fail("set", err);
      }
    }
    return this.#answerSet(store.set(key, value, cancel, ttlMs), performance.now());
  }

  /** A conditional set: `ok` with the version written, or `conflict`. Never collapsed with other sets. */
  #setIf(
    key: Uint8Array,
    value: Uint8Array,
    condition: WriteCondition,
    cancel: Cancel | undefined,
    ttlMs: number | undefined,
    grant: Grant,
  ): Answer | Promise<Answer> {
    const limitError = this.#policy.refuseSet(grant, key, value.length, ttlMs);
    if (limitError) return this.#fail("set", limitError);
    return this.#answerSet(this.#store.setIf(key, value, condition, cancel, ttlMs), performance.now());
  }

  /** A get that answers the value's version too. */
  #getVersioned(key: Uint8Array, cancel: Cancel | undefined, grant: Grant): Answer | Promise<Answer> {
    const limitError = this.#policy.refuseKeyFor(grant, "read", key);
    if (limitError) return this.#fail("get", limitError);
    const started = performance.now();
    return this.#settled("get", started, this.#store.getVersioned(key, cancel), (found) => {
      this.#timed("get", found === undefined ? "not_found" : "ok", started);
      if (found === undefined) return Frames.getNotFound;
      return getOkAnswer(key, found.value, found.version, found.expiresAt);
    });
  }

  /** The answer to a set once the store's `work` settles: `ok` with the version written, counted and timed from `started`. */
  #answerSet(work: Promise<number>, started: number): Promise<Answer> {
    return this.#settled("set", started, work, (version) => {
      this.#timed("set", "ok", started);
      return encodeSetOk(version);
    });
  }

  #get(
    key: Uint8Array,
    sink: AnswerSink | undefined,
    cancel: Cancel | undefined,
    grant: Grant,
  ): Answer | Promise<Answer> {
    const limitError = this.#policy.refuseKeyFor(grant, "read", key);
    if (limitError) return this.#fail("get", limitError);
    const store = this.#store;
    if (store.getSync !== undefined) {
      try {
        const value = store.getSync(key);
        this.#policy.ended("get", value === undefined ? "not_found" : "ok");
        if (value === undefined) {
          return sink !== undefined && writeFrameInto(sink, Frames.getNotFound) ? WRITTEN : Frames.getNotFound;
        }
        if (sink !== undefined && encodeGetOkInto(sink, key, value)) return WRITTEN;
        return encodeGetOkScratch(key, value);
      } catch (err) {
        return this.#fail("get", err);
      }
    }
    const started = performance.now();
    return this.#settled("get", started, readValue(store, key, cancel), (value) => {
      this.#timed("get", value === undefined ? "not_found" : "ok", started);
      if (value === undefined) return Frames.getNotFound;
      return getOkAnswer(key, value, undefined, undefined);
    });
  }

  /**
   * The answer once `work` settles: `ok`'s, or the failure's answer, timed
   * from `started` and recorded by the policy. Never rejects.
   */
  #settled<T>(op: Op, started: number, work: Promise<T>, ok: (value: T) => Answer): Promise<Answer> {
    return settle(work, ok, (err) => this.#fail(op, err, started));
  }

  #timed(op: Op, result: "ok" | "not_found", started: number): void {
    this.#policy.ended(op, result, started);
  }

  /** The failure's answer in `reply`'s type, recorded (and timed from `started`, when given) by the policy. */
  #fail(reply: ReplyKind, err: unknown, started?: number): Uint8Array {
    return errorFrame(reply, this.#policy.failed(reply, err, started).error);
  }

  /** {@link #fail} for a connection's session: the answer to a request that failed with `err`. */
  fail(reply: ReplyKind, err: unknown, started?: number): Uint8Array {
    return this.#fail(reply, err, started);
  }

  /** Records a request of `op` that ended well (a session's authentication). */
  ended(op: Op, started: number): void {
    this.#policy.ended(op, "ok", started);
  }
}

/**
 * A get's `ok` answer: whole, or for a large value streamed as its chunks
 * arrive (the frame's length is known from the value's size).
 */
function getOkAnswer(
  key: Uint8Array,
  value: Uint8Array | ValueStream,
  version: number | undefined,
  expiresAt: number | undefined,
): Answer {
  if (!isValueStream(value)) return encodeGetOk(key, value, version, expiresAt);
  return new StreamedAnswer(
    encodeGetOkHead(key, value.size, version, expiresAt),
    value.size,
    () => value.next(),
    () => value.cancel(),
    (piece) => value.release?.(piece),
  );
}

/**
 * `work.then(ok, failed)`, where a throw inside `ok` (a bug while encoding)
 * is answered by `failed` too: the promise never rejects.
 */
function settle<T>(work: Promise<T>, ok: (value: T) => Answer, failed: (err: unknown) => Answer): Promise<Answer> {
  return work.then((value) => {
    try {
      return ok(value);
    } catch (err) {
      return failed(err);
    }
  }, failed);
}
