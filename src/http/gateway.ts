import type { Server } from "bun";
import { Grant } from "../auth/access-policy.js";
import type { Authenticator } from "../auth/authenticator.js";
import type { Logger } from "../log.js";
import type { ByteBudget } from "../net/byte-budget.js";
import { listenError } from "../net/listener.js";
import type { TlsMaterial } from "../net/tls-material.js";
import type { Op, RequestStats } from "../ops/request-stats.js";
import { RequestPolicy } from "../service/request-policy.js";
import { isValueStream, type KvStore, MAX_LIST_LIMIT, readValue, type ValueStream } from "../store/kv-store.js";
import { ErrorCode, errorMessage, isKvError, KvError } from "../wire/errors.js";
import { type WriteCondition, writeCondition } from "../wire/write-condition.js";
import { isCrossSite } from "./cross-site.js";
import { errorResponse, jsonError } from "./error-response.js";
import { cursorBytes, type Encoding, type ListShape, listingResponse } from "./json-listing.js";
import { parseQuery, percentDecode } from "./query.js";

/** Where and how the gateway listens, and what it accepts. */
export interface GatewayOptions {
  host: string;
  port: number;
  reusePort: boolean;
  maxKeyBytes: number;
  maxValueBytes: number;
  /** Serve HTTPS with this material (mutual TLS when it has a CA); undefined: plain HTTP. */
  tls?: TlsMaterial;
  /**
   * The server's byte budget, which request bodies count in while they are
   * read and until their value is stored, as TCP frames do; none: uncounted.
   */
  budget?: ByteBudget;
}

/** Room over --max-value-bytes before Bun's own body cap: enough for the handler to see the excess first. */
const BODY_SLACK_BYTES = 1024 * 1024;

/** Seconds a connection may sit idle; a clear lifts it for its own request. */
const IDLE_TIMEOUT_S = 60;

/** Shared by every value answer: one init object, not one per response. */
const OCTET_INIT: ResponseInit = { headers: { "content-type": "application/octet-stream" } };

/** The brief's endpoints (all GET) and the listing shape of each listing one. */
const LISTINGS: Record<string, ListShape> = { "/getKeys": "keys", "/getValues": "values", "/getAll": "items" };

/**
 * The HTTP face of the store, beside the TCP listener, on the same store
 * stack (so per-key ordering and deadlines hold across both).
 *
 * - The sibling brief's endpoints, all GET, exactly as it specifies them:
 *   `/set?k=&v=` 200; `/get?k=` 200 with the value or 404; `/rm?k=` 200 or
 *   404; `/is?k=` 200 or 404; `/clear` 200 with `{"removed": N}`;
 *   `/getKeys`, `/getValues`, `/getAll` 200 with streamed JSON, taking
 *   `limit`, `cursor` and `encoding` (utf8 or base64).
 * - A REST form: `PUT`, `GET`, `HEAD`, `DELETE /v1/keys/{key}` with raw
 *   bodies, and `GET /v1/keys?prefix=&cursor=&limit=&values=1`, paged.
 *
 * Keys and values in URLs are percent-decoded to the exact bytes sent.
 * Every failure answers `{"error": CODE, "message": TEXT}` with a 4xx for
 * the client's mistakes and a 5xx for the server's (error-response.ts).
 */
export class HttpGateway {
  #server: Server<undefined>;
  readonly #serve: (tls: TlsMaterial | undefined, port: number) => Server<undefined>;
  readonly #options: GatewayOptions;
  /** Servers replaced by a reload, finishing their requests. */
  readonly #retiring = new Set<Promise<void>>();

  private constructor(
    serve: (tls: TlsMaterial | undefined, port: number) => Server<undefined>,
    options: GatewayOptions,
  ) {
    this.#serve = serve;
    this.#options = options;
    this.#server = serve(options.tls, options.port);
  }

  /** Starts listening; throws a KV_ERR_CONFIG naming the port if it cannot. */
  static start(
    options: GatewayOptions,
    store: KvStore,
    stats: RequestStats,
    log: Logger,
    auth?: Authenticator,
  ): HttpGateway {
    const routes = new Routes(store, options, stats, log, auth);
    const serve = (tls: TlsMaterial | undefined, port: number) => {
      try {
        return Bun.serve({
          hostname: options.host,
          port,
          // TLS binds with SO_REUSEPORT so that a reload can bind its successor beside it (see Listener).
          reusePort: options.reusePort || tls !== undefined,
          idleTimeout: IDLE_TIMEOUT_S,
          // The handler refuses a body over the limit with a JSON 413 (from Content-Length, or as a chunked body
          // passes it); Bun's own cap, which answers a bare 413, only backstops it.
          maxRequestBodySize: options.maxValueBytes + BODY_SLACK_BYTES,
          ...(tls === undefined ? {} : { tls: tls.options }),
          fetch: (req, server) => routes.handle(req, server),
          error: (err) => {
            log.error("HTTP handler failed", { reason: err.message });
            return jsonError(500, "internal", "the server failed to answer");
          },
        });
      } catch (err) {
        throw listenError(options.host, port, err, "HTTP");
      }
    };
    return new HttpGateway(serve, options);
  }

  /** The bound port. */
  get port(): number {
    return this.#server.port as number;
  }

  /**
   * Serves new connections with `tls`: the successor binds the port beside
   * the current server, which then stops accepting and finishes its
   * requests. Throws, keeping the current material, if the gateway is plain
   * HTTP or the bind fails.
   */
  reloadTls(tls: TlsMaterial): void {
    if (this.#options.tls === undefined) {
      throw new KvError(ErrorCode.Config, "the HTTP gateway was started without TLS; restart to turn it on");
    }
    const next = this.#serve(tls, this.port);
    const previous = this.#server;
    this.#server = next;
    const retiring = previous.stop(false).then(() => {
      this.#retiring.delete(retiring);
    });
    this.#retiring.add(retiring);
  }

  /** Stops taking connections and waits for requests in progress. */
  async stop(): Promise<void> {
    await Promise.all([this.#server.stop(false), ...this.#retiring]);
  }
}

/**
 * A large value as a response body, piece by piece as the store reads it.
 * A direct stream: Bun copies each written piece into the response's own
 * buffer, so the piece goes back to the store for reuse at once, and a
 * write that reports the buffer full is awaited (so a slow client holds the
 * server to about one piece). Bun sends such a body chunked (it drops a
 * Content-Length given with a stream), so the size goes in `x-value-size`.
 * A piece that fails midway aborts the response without the last chunk,
 * which HTTP clients report as an error; a client that leaves (a write of
 * 0 bytes) stops the reading.
 */
function streamedValue(value: ValueStream, log: Logger): Response {
  const body = new ReadableStream<Uint8Array>({
    type: "direct",
    async pull(controller) {
      try {
        for (let piece = await value.next(); piece !== undefined; piece = await value.next()) {
          const written = await controller.write(piece);
          value.release?.(piece);
          if (written === 0) {
            value.cancel();
            return;
          }
        }
      } catch (err) {
        log.warn("aborting an HTTP response: a streamed value failed midway", { reason: errorMessage(err) });
        value.cancel();
        controller.close(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      controller.close();
    },
    cancel() {
      value.cancel();
    },
  });
  return new Response(body, {
    headers: { "content-type": "application/octet-stream", "x-value-size": String(value.size) },
  });
}

/** A `ttl` query parameter: seconds, decimals allowed. */
const TTL_SECONDS = /^\d{1,12}(\.\d{1,9})?$/;

/**
 * The TTL in ms a `ttl` parameter asks for (seconds, decimals allowed,
 * rounded to the ms), undefined without one; `KV_ERR_BAD_REQUEST` (400)
 * for anything that is not a positive number of seconds within the limit.
 */
function ttlOf(q: Map<string, Uint8Array>, policy: RequestPolicy): number | undefined {
  const raw = q.get("ttl");
  if (raw === undefined) return undefined;
  const text = new TextDecoder().decode(raw);
  const given = `ttl=${JSON.stringify(text)}`;
  if (!TTL_SECONDS.test(text)) {
    throw new KvError(
      ErrorCode.BadRequest,
      `${given} is not a number of seconds: give one such as 30 or 1.5; nothing was written`,
    );
  }
  const ttlMs = Math.round(Number(text) * 1000);
  const refused = policy.refuseTtl(ttlMs, (ms) => `${given} (${ms} ms)`);
  if (refused) throw refused;
  return ttlMs;
}

/** A strong ETag holding a version: `"123"`. */
const VERSION_ETAG = /^"(\d{1,16})"$/;

/** The strong ETag of a version. */
function etagOf(version: number): string {
  return `"${version}"`;
}

/**
 * The write condition of a PUT's headers: `If-Match` with one version ETag,
 * or `If-None-Match: *`. Anything else in them (a list, a weak tag, `*` for
 * If-Match, both headers) is refused rather than ignored.
 */
export function writeConditionOf(headers: Headers): WriteCondition | undefined {
  const ifMatch = headers.get("if-match");
  const ifNoneMatch = headers.get("if-none-match");
  if (ifNoneMatch !== null && ifNoneMatch.trim() !== "*") {
    throw new KvError(ErrorCode.BadRequest, 'If-None-Match takes only "*"');
  }
  let version: number | undefined;
  if (ifMatch !== null) {
    const m = VERSION_ETAG.exec(ifMatch.trim());
    version = m === null ? Number.NaN : Number(m[1]);
    if (Number.isNaN(version)) {
      throw new KvError(
        ErrorCode.BadRequest,
        'If-Match takes one ETag from a GET of the key, such as "4563121906207954"',
      );
    }
  }
  const condition = writeCondition(version, ifNoneMatch !== null, { version: "If-Match", absent: "If-None-Match" });
  if (typeof condition === "string") throw new KvError(ErrorCode.BadRequest, condition);
  return condition;
}

/** The op of each REST method on `/v1/keys/{key}` (a Map: a method must never find an Object.prototype member). */
const REST_OPS: ReadonlyMap<string, Op> = new Map([
  ["PUT", "set"],
  ["GET", "get"],
  ["HEAD", "exists"],
  ["DELETE", "delete"],
]);

/** The op of each of the brief's single-key and clear endpoints. */
const BRIEF_OPS: Readonly<Record<string, Op>> = {
  "/set": "set",
  "/get": "get",
  "/rm": "delete",
  "/is": "exists",
  "/clear": "clear",
};

/**
 * The gateway's request handling, apart from the socket: HTTP in and out,
 * around the same {@link RequestPolicy} as TCP's dispatcher. Each request's
 * op is known before anything about it can fail, so every failure is
 * counted under its op.
 */
class Routes {
  readonly #policy: RequestPolicy;
  readonly #auth: Authenticator | undefined;
  readonly #everyone = Grant.everything("anonymous");

  constructor(
    readonly store: KvStore,
    readonly options: GatewayOptions,
    stats: RequestStats,
    readonly log: Logger,
    auth: Authenticator | undefined,
  ) {
    this.#policy = new RequestPolicy(options, stats, log, "HTTP request");
    this.#auth = auth;
  }

  /**
   * What the request may do: everything on a server without authentication
   * (unless protected mode refuses the client), else what its
   * `Authorization` header's principal is granted. Throws the refusal.
   */
  #grantOf(req: Request, server: Server<undefined>): Grant | Promise<Grant> {
    const auth = this.#auth;
    if (auth === undefined) return this.#everyone;
    if (!auth.required) {
      const refusal = auth.refusal(server.requestIP(req)?.address);
      if (refusal !== undefined) throw new KvError(ErrorCode.Unauthenticated, refusal);
      return this.#everyone;
    }
    const principal = auth.authenticateHeader(req.headers.get("authorization"));
    if (principal === undefined) {
      throw new KvError(
        ErrorCode.Unauthenticated,
        "this server requires authentication: send Authorization: Bearer TOKEN, or Bearer kvs-iam-v1.… (an IAM credential)" +
          (auth.certificates
            ? "; client certificates identify TCP connections only (Bun's HTTP server cannot read them)"
            : ""),
      );
    }
    return principal instanceof Promise ? principal.then((p) => auth.grantOf(p)) : auth.grantOf(principal);
  }

  async handle(req: Request, server: Server<undefined>): Promise<Response> {
    const url = req.url;
    const pathStart = url.indexOf("/", url.indexOf("//") + 2);
    const queryStart = url.indexOf("?", pathStart);
    const path = queryStart < 0 ? url.slice(pathStart) : url.slice(pathStart, queryStart);
    const search = queryStart < 0 ? "" : url.slice(queryStart + 1);
    const head = req.method === "HEAD";
    if (changesData(req.method, path) && isCrossSite(req.headers)) return crossSiteRefused();
    let op: Op | undefined;
    const started = performance.now();
    const rest = path.startsWith("/v1/keys/");
    if (rest) {
      op = REST_OPS.get(req.method);
      if (op === undefined) return methodNotAllowed("GET, HEAD, PUT, DELETE");
    } else if (req.method !== "GET" && req.method !== "HEAD") {
      return path === "/v1/keys" || path in LISTINGS || path in BRIEF_OPS ? methodNotAllowed("GET") : notFound();
    } else {
      op = BRIEF_OPS[path] ?? (path === "/v1/keys" || path in LISTINGS ? "list" : undefined);
      if (op === undefined) return notFound();
    }
    try {
      const granted = this.#grantOf(req, server);
      const grant = granted instanceof Promise ? await granted : granted;
      const write = op === "set" || op === "delete";
      if (rest) {
        const key = this.#key(percentDecode(path.slice("/v1/keys/".length), false), grant, write);
        if (op === "set") return await this.#put(key, req, ttlOf(parseQuery(search), this.#policy));
        if (op === "exists") return await this.#exists(key, true);
        if (op === "get") return await this.#getVersioned(key);
        return await this.#delete(key, 204);
      }
      const q = parseQuery(search);
      switch (path) {
        case "/set": {
          const key = this.#key(q.get("k"), grant, true);
          const value = q.get("v");
          if (value === undefined) throw new KvError(ErrorCode.BadRequest, "missing v");
          return await this.#set(key, value, 200, ttlOf(q, this.#policy));
        }
        case "/get":
          return await this.#get(this.#key(q.get("k"), grant, false));
        case "/rm":
          return await this.#delete(this.#key(q.get("k"), grant, true), 200);
        case "/is":
          return await this.#exists(this.#key(q.get("k"), grant, false), head);
        case "/clear": {
          const refused = this.#policy.refuseWhole(grant, "admin");
          if (refused) throw refused;
          // A clear of a large DynamoDB table outlasts any idle timeout; it is still making progress.
          server.timeout(req, 0);
          const removed = await this.store.clear();
          this.log.info("store cleared", { removed, via: "http" });
          this.#policy.ended("clear", "ok");
          return Response.json({ removed });
        }
        case "/v1/keys":
          return await this.#list(q, q.get("values")?.[0] === 0x31 ? "items" : "keys", MAX_LIST_LIMIT, grant);
        default:
          return await this.#list(q, LISTINGS[path] as ListShape, undefined, grant);
      }
    } catch (err) {
      return errorResponse(this.#policy.failed(op, err).error, head);
    } finally {
      // Latency to the answer's head, as over TCP; like TCP's, answers the memory store gives
      // synchronously are counted, not timed.
      if (this.store.getSync === undefined) this.#policy.timed(op, started);
    }
  }

  /** The request's key, checked: its length, and that `grant` may read it (or write it, with `write`). */
  #key(raw: Uint8Array | undefined, grant: Grant, write: boolean): Uint8Array {
    if (raw === undefined) throw new KvError(ErrorCode.BadRequest, "missing k (the key)");
    const refused = this.#policy.refuseKeyFor(grant, write ? "write" : "read", raw);
    if (refused) throw refused;
    return raw;
  }

  async #set(key: Uint8Array, value: Uint8Array, status: 200 | 204, ttlMs: number | undefined): Promise<Response> {
    const tooLong = this.#policy.refuseValueLength(value.length);
    if (tooLong) throw tooLong;
    const setSync = this.store.setSync;
    const version =
      setSync !== undefined ? setSync(key, value, ttlMs) : await this.store.set(key, value, undefined, ttlMs);
    this.#policy.ended("set", "ok");
    return new Response(null, { status, headers: { etag: etagOf(version) } });
  }

  /**
   * PUT /v1/keys/KEY. `If-Match: "VERSION"` (an ETag from a GET or an
   * earlier conditional PUT) or `If-None-Match: *` makes it conditional:
   * 204 with the new ETag, or 412 when the condition failed. `?ttl=` (in
   * seconds) gives the value an expiry.
   */
  async #put(key: Uint8Array, req: Request, ttlMs: number | undefined): Promise<Response> {
    const condition = writeConditionOf(req.headers);
    const max = this.options.maxValueBytes;
    const declared = Number(req.headers.get("content-length") ?? Number.NaN);
    if (declared > max) throw this.#policy.refuseValueLength(declared);
    const budget = this.options.budget;
    const { value, held } = await readBody(req, (size) => this.#policy.refuseValueLength(size), budget);
    try {
      return await this.#putValue(key, value, condition, ttlMs);
    } finally {
      budget?.add(-held);
    }
  }

  async #putValue(
    key: Uint8Array,
    value: Uint8Array,
    condition: WriteCondition | undefined,
    ttlMs: number | undefined,
  ): Promise<Response> {
    if (condition === undefined) return this.#set(key, value, 204, ttlMs);
    try {
      const version = await this.store.setIf(key, value, condition, undefined, ttlMs);
      this.#policy.ended("set", "ok");
      return new Response(null, { status: 204, headers: { etag: etagOf(version) } });
    } catch (err) {
      if (isKvError(err, ErrorCode.Conflict)) {
        this.#policy.ended("set", "conflict");
        return jsonError(412, "conflict", "the key's version did not match the condition; nothing was written");
      }
      throw err;
    }
  }

  /** GET /v1/keys/KEY: the value with its version as the ETag, and its expiry in `x-expires-at`. */
  async #getVersioned(key: Uint8Array): Promise<Response> {
    const found = await this.store.getVersioned(key);
    const response = this.#answerGet(found?.value, found?.version);
    if (found?.expiresAt !== undefined) response.headers.set("x-expires-at", String(found.expiresAt));
    return response;
  }

  async #get(key: Uint8Array): Promise<Response> {
    const getSync = this.store.getSync;
    return this.#answerGet(getSync !== undefined ? getSync(key) : await readValue(this.store, key), undefined);
  }

  /** A get's answer: 404, or the value's bytes (streamed when large), with `version` as the ETag when given. */
  #answerGet(value: Uint8Array | ValueStream | undefined, version: number | undefined): Response {
    if (value === undefined) {
      this.#policy.ended("get", "not_found");
      return jsonError(404, "not_found", "no such key");
    }
    this.#policy.ended("get", "ok");
    const response = isValueStream(value) ? streamedValue(value, this.log) : new Response(value, OCTET_INIT);
    if (version !== undefined) response.headers.set("etag", etagOf(version));
    return response;
  }

  async #delete(key: Uint8Array, status: 200 | 204): Promise<Response> {
    const removed = await this.store.delete(key);
    this.#policy.ended("delete", removed ? "ok" : "not_found");
    return removed ? new Response(null, { status }) : jsonError(404, "not_found", "no such key");
  }

  async #exists(key: Uint8Array, head: boolean): Promise<Response> {
    const found = await this.store.exists(key);
    this.#policy.ended("exists", found ? "ok" : "not_found");
    return found ? new Response(null, { status: 200 }) : jsonError(404, "not_found", "no such key", head);
  }

  async #list(
    q: Map<string, Uint8Array>,
    shape: ListShape,
    maxLimit: number | undefined,
    grant: Grant,
  ): Promise<Response> {
    const text = (name: string) => {
      const raw = q.get(name);
      return raw === undefined ? undefined : new TextDecoder().decode(raw);
    };
    const encoding = text("encoding") ?? "utf8";
    if (encoding !== "utf8" && encoding !== "base64") {
      throw new KvError(ErrorCode.BadRequest, `encoding must be utf8 or base64, got ${JSON.stringify(encoding)}`);
    }
    const limitText = text("limit");
    let limit: number | undefined = maxLimit;
    if (limitText !== undefined) {
      limit = Number(limitText);
      if (!/^\d+$/.test(limitText) || limit < 1) {
        throw new KvError(ErrorCode.BadRequest, `limit must be a positive integer, got ${JSON.stringify(limitText)}`);
      }
      if (maxLimit !== undefined) limit = Math.min(limit, maxLimit);
    }
    const cursorText = text("cursor");
    const prefix = q.get("prefix");
    const prefixError = this.#policy.refusePrefix(prefix);
    if (prefixError) throw prefixError;
    const scope = this.#policy.listingScope(grant, prefix);
    if (scope instanceof KvError) throw scope;
    const { filter } = scope;
    const values = shape !== "keys";
    const response = await listingResponse(
      async (cursor, pageLimit) => {
        const page = await this.store.list({ prefix: scope.prefix, limit: pageLimit, cursor, values });
        return filter === undefined ? page : { ...page, entries: page.entries.filter((e) => filter(e.key)) };
      },
      {
        shape,
        encoding: encoding as Encoding,
        limit,
        cursor: cursorText === undefined || cursorText === "" ? undefined : cursorBytes(cursorText),
        pageEntries: MAX_LIST_LIMIT,
      },
      this.log,
    );
    this.#policy.ended("list", "ok");
    return response;
  }
}

/**
 * Reads a request body, refusing it (without reading the rest) as soon as
 * its size so far is one `refuse` refuses. Each piece counts in `budget`
 * as it arrives; past the budget's limit the read waits its turn, as a TCP
 * connection reading a large frame does, which holds the client back. The
 * caller gives back `held` once the value is stored (or refused).
 */
async function readBody(
  req: Request,
  refuse: (size: number) => KvError | undefined,
  budget: ByteBudget | undefined,
): Promise<{ value: Uint8Array; held: number }> {
  if (req.body === null) return { value: new Uint8Array(0), held: 0 };
  const parts: Uint8Array[] = [];
  let size = 0;
  let held = 0;
  const who = {};
  const reader = req.body.getReader();
  let evicted = false;
  // A body that holds the budget too long while others wait (a trickling client) is cut off.
  const evict = () => {
    evicted = true;
    void reader.cancel().catch(() => {});
  };
  try {
    for (;;) {
      const { value: part, done } = await reader.read();
      if (evicted) throw new KvError(ErrorCode.BadRequest, "the request body came too slowly while others waited");
      if (done) break;
      size += part.length;
      const tooLong = refuse(size);
      if (tooLong) throw tooLong;
      if (budget !== undefined) {
        for (;;) {
          const { promise, resolve } = Promise.withResolvers<void>();
          if (budget.admit(who, resolve, evict)) break;
          await promise;
        }
        budget.add(part.length);
        held += part.length;
      }
      parts.push(part);
    }
  } catch (err) {
    budget?.add(-held);
    if (isKvError(err)) throw err;
    throw new KvError(ErrorCode.BadRequest, "the request body could not be read", { cause: err });
  } finally {
    budget?.release(who);
  }
  return { value: parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts), held };
}

/** Whether a request to `path` with `method` can change the store (the brief's GET endpoints included). */
function changesData(method: string, path: string): boolean {
  if (path.startsWith("/v1/keys/")) return method !== "GET" && method !== "HEAD";
  return path === "/set" || path === "/rm" || path === "/clear";
}

function crossSiteRefused(): Response {
  return jsonError(403, "cross_site", "a browser request from another site may not change the store");
}

function notFound(): Response {
  return jsonError(404, "no_route", "no such endpoint; see docs/http.md");
}

function methodNotAllowed(allow: string): Response {
  const res = jsonError(405, "method_not_allowed", `allowed: ${allow}`);
  res.headers.set("allow", allow);
  return res;
}
