import { afterAll, afterEach, beforeAll } from "bun:test";
import type { Server } from "bun";
import type { Backends } from "./backends.js";

/**
 * What the proxy does to one request:
 * - `throttle`: answers HTTP 400 with the service's throttling error body
 *   (DynamoDB's ProvisionedThroughputExceededException, KMS's ThrottlingException);
 * - `error500`: answers HTTP 500 InternalServerError (KMS: KMSInternalException);
 * - `reset`: sends the status line and part of a body, then drops the connection;
 * - `truncate`: answers 200 with a body cut short and no checksum header;
 * - `corrupt`: forwards, then changes one character of the first partition
 *   key in the answer, keeping the original `x-amz-crc32`;
 * - `hang`: never answers, until {@link FaultProxy.releaseHung} or stop;
 * - `lost`: forwards, so the call takes effect, then answers HTTP 500 as
 *   if the answer had been lost on the way back;
 * - `unprocessed`: for BatchWriteItem and BatchGetItem, forwards only the first
 *   half of the batch and reports the rest as UnprocessedItems or
 *   UnprocessedKeys, as DynamoDB does under load.
 */
export type Fault = "throttle" | "error500" | "reset" | "truncate" | "corrupt" | "hang" | "lost" | "unprocessed";

/** Decides the fault for a request: `op` is the X-Amz-Target operation, `n` counts requests of that op from 1. */
export type FaultRule = (op: string, n: number) => Fault | undefined;

const DYNAMO = "com.amazonaws.dynamodb.v20120810#";

function jsonResponse(body: unknown, status: number, contentType: string): Response {
  const bytes = new TextEncoder().encode(JSON.stringify(body));
  return new Response(bytes, {
    status,
    headers: { "content-type": contentType, "x-amz-crc32": String(Bun.hash.crc32(bytes) >>> 0) },
  });
}

/**
 * An HTTP proxy between the server and DynamoDB Local or the local KMS, for
 * fault tests: it forwards requests, except where `rule` injects a fault. It
 * also records the access key id each request was signed with.
 */
export class FaultProxy implements AsyncDisposable {
  readonly #server: Server<undefined>;
  readonly #target: string;
  readonly #counts = new Map<string, number>();
  /** The item keys (partition keys without their kind byte, as text) asked for in BatchGetItem requests, in order. */
  readonly batchKeys: string[] = [];
  readonly #hung: (() => void)[] = [];
  #hungWaiters: (() => void)[] = [];
  #open = 0;
  readonly #countWaiters: { op: string; n: number; resolve: () => void }[] = [];
  #whenNoneOpen: (() => void)[] = [];
  /** The fault rule; undefined forwards everything. */
  rule: FaultRule | undefined;
  /** Access key ids seen in Authorization headers, in order of first use. */
  readonly accessKeys: string[] = [];
  /** Faults injected so far, by kind. */
  readonly injected = new Map<Fault, number>();

  constructor(target: string) {
    this.#target = target;
    this.#server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => this.#handle(req) });
  }

  /** The proxy's URL, to give the server as its endpoint. */
  get endpoint(): string {
    return `http://127.0.0.1:${this.#server.port}`;
  }

  /** Requests seen of `op` (all ops when omitted). */
  count(op?: string): number {
    if (op !== undefined) return this.#counts.get(op) ?? 0;
    let n = 0;
    for (const v of this.#counts.values()) n += v;
    return n;
  }

  /** Resolves once `n` requests of `op` have arrived. */
  seen(op: string, n: number): Promise<void> {
    if (this.count(op) >= n) return Promise.resolve();
    return new Promise((resolve) => this.#countWaiters.push({ op, n, resolve }));
  }

  /** Hung requests whose caller has not yet given up on them (closed the connection). */
  get hungOpen(): number {
    return this.#open;
  }

  /** Resolves once every hung request has been given up by its caller. */
  callersGaveUp(): Promise<void> {
    if (this.#open === 0) return Promise.resolve();
    return new Promise((resolve) => this.#whenNoneOpen.push(resolve));
  }

  #hang(req: Request): Promise<void> {
    this.#open++;
    let open = true;
    const gaveUp = () => {
      if (!open) return;
      open = false;
      if (--this.#open === 0) for (const fn of this.#whenNoneOpen.splice(0)) fn();
    };
    req.signal.addEventListener("abort", gaveUp);
    const held = new Promise<void>((resolve) =>
      this.#hung.push(() => {
        gaveUp();
        resolve();
      }),
    );
    for (const fn of this.#hungWaiters.splice(0)) fn();
    return held;
  }

  /** Resolves once a request is being held by `hang` (so {@link releaseHung} will release it). */
  whenHung(): Promise<void> {
    if (this.#hung.length > 0) return Promise.resolve();
    return new Promise((resolve) => this.#hungWaiters.push(resolve));
  }

  /** Answers every hung request by forwarding it after all. */
  releaseHung(): void {
    for (const release of this.#hung.splice(0)) release();
  }

  async stop(): Promise<void> {
    this.rule = undefined;
    this.releaseHung();
    await this.#server.stop(true);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  async #handle(req: Request): Promise<Response> {
    const target = req.headers.get("x-amz-target") ?? "";
    const op = target.slice(target.lastIndexOf(".") + 1);
    const n = (this.#counts.get(op) ?? 0) + 1;
    this.#counts.set(op, n);
    for (const w of this.#countWaiters.filter((w) => w.op === op && w.n <= n)) {
      this.#countWaiters.splice(this.#countWaiters.indexOf(w), 1);
      w.resolve();
    }
    const key = /Credential=([^/]+)\//.exec(req.headers.get("authorization") ?? "")?.[1];
    if (key !== undefined && !this.accessKeys.includes(key)) this.accessKeys.push(key);
    const body = await req.text();
    if (op === "BatchGetItem") {
      type Keys = { Keys?: { pk?: { B?: string } }[] };
      const items = (JSON.parse(body) as { RequestItems?: Record<string, Keys> }).RequestItems ?? {};
      for (const t of Object.values(items)) {
        for (const k of t.Keys ?? [])
          this.batchKeys.push(
            Buffer.from(k.pk?.B ?? "", "base64")
              .subarray(1)
              .toString(),
          );
      }
    }
    const kms = target.startsWith("TrentService.");
    const contentType = kms ? "application/x-amz-json-1.1" : "application/x-amz-json-1.0";

    const fault = this.rule?.(op, n);
    if (fault !== undefined) this.injected.set(fault, (this.injected.get(fault) ?? 0) + 1);
    switch (fault) {
      case "throttle":
        return kms
          ? jsonResponse({ __type: "ThrottlingException", message: "Rate exceeded" }, 400, contentType)
          : jsonResponse(
              {
                __type: `${DYNAMO}ProvisionedThroughputExceededException`,
                message: "The level of configured provisioned throughput for the table was exceeded.",
              },
              400,
              contentType,
            );
      case "lost":
        await this.#forward(req, body);
        return jsonResponse(
          { __type: kms ? "KMSInternalException" : `${DYNAMO}InternalServerError`, message: "answer lost" },
          500,
          contentType,
        );
      case "error500":
        return kms
          ? jsonResponse({ __type: "KMSInternalException", message: "internal" }, 500, contentType)
          : jsonResponse(
              { __type: `${DYNAMO}InternalServerError`, message: "Internal server error" },
              500,
              contentType,
            );
      case "reset":
        return new Response(
          new ReadableStream({
            pull(controller) {
              controller.enqueue(new TextEncoder().encode('{"Respo'));
              // No reason given: Bun then drops the connection without printing a stack.
              controller.error();
            },
          }),
          { headers: { "content-type": contentType, "content-length": "4096" } },
        );
      case "truncate":
        return new Response(
          new ReadableStream({
            pull(controller) {
              controller.enqueue(new TextEncoder().encode('{"Responses":{"'));
              controller.close();
            },
          }),
          { headers: { "content-type": contentType } },
        );
      case "corrupt":
        return this.#corrupt(req, body);
      case "hang":
        await this.#hang(req);
        return this.#forward(req, body);
      case "unprocessed":
        if (op === "BatchWriteItem" || op === "BatchGetItem") return this.#partial(req, op, body);
        return this.#forward(req, body);
      case undefined:
        return this.#forward(req, body);
    }
  }

  async #forward(req: Request, body: string): Promise<Response> {
    const headers = new Headers(req.headers);
    headers.delete("host");
    const res = await fetch(this.#target, { method: "POST", headers, body });
    const out = new Headers(res.headers);
    // fetch decoded the body, so its length and encoding headers no longer apply.
    out.delete("content-encoding");
    out.delete("content-length");
    return new Response(await res.arrayBuffer(), { status: res.status, headers: out });
  }

  /** Forwards, then flips one base64 character of the first pk in the answer; the checksum header is kept. */
  async #corrupt(req: Request, body: string): Promise<Response> {
    const res = await this.#forward(req, body);
    const text = await res.text();
    const at = text.indexOf('"pk":{"B":"');
    if (at < 0) return new Response(text, { status: res.status, headers: res.headers });
    const i = at + '"pk":{"B":"'.length;
    const flipped = `${text.slice(0, i)}${text[i] === "A" ? "B" : "A"}${text.slice(i + 1)}`;
    return new Response(flipped, { status: res.status, headers: res.headers });
  }

  /** Forwards the first half of a batch and reports the other half unprocessed. */
  async #partial(req: Request, op: string, body: string): Promise<Response> {
    const input = JSON.parse(body) as { RequestItems: Record<string, unknown> };
    const [table, requests] = Object.entries(input.RequestItems)[0] as [string, unknown];
    const list = op === "BatchWriteItem" ? (requests as unknown[]) : (requests as { Keys: unknown[] }).Keys;
    if (list.length < 2) return this.#forward(req, body);
    const half = Math.ceil(list.length / 2);
    const sent = list.slice(0, half);
    const kept = list.slice(half);
    const forwarded =
      op === "BatchWriteItem"
        ? { ...input, RequestItems: { [table]: sent } }
        : { ...input, RequestItems: { [table]: { ...(requests as object), Keys: sent } } };
    const res = await this.#forward(req, JSON.stringify(forwarded));
    if (res.status !== 200) return res;
    const out = (await res.json()) as Record<string, unknown>;
    if (op === "BatchWriteItem") {
      const left = ((out.UnprocessedItems as Record<string, unknown[]> | undefined)?.[table] ?? []).concat(kept);
      out.UnprocessedItems = { [table]: left };
    } else {
      const prior = (out.UnprocessedKeys as Record<string, { Keys: unknown[] }> | undefined)?.[table]?.Keys ?? [];
      out.UnprocessedKeys = { [table]: { ...(requests as object), Keys: prior.concat(kept) } };
    }
    return jsonResponse(out, 200, "application/x-amz-json-1.0");
  }
}

/** A {@link FaultProxy} in front of each of a test file's backends. */
export interface FaultProxies {
  ddb: FaultProxy;
  kms: FaultProxy;
}

/**
 * Puts a fault proxy in front of the file's DynamoDB Local and of its KMS
 * endpoint before its tests, clears their rules and releases hung calls
 * after each test (so one test's faults never reach the next), and stops
 * them after the file.
 */
export function useFaultProxies(backends: Backends): FaultProxies {
  const proxies = {} as FaultProxies;
  beforeAll(() => {
    proxies.ddb = new FaultProxy(backends.ddb.endpoint);
    proxies.kms = new FaultProxy(backends.kms.endpoint);
  });
  afterEach(() => {
    for (const proxy of [proxies.ddb, proxies.kms]) {
      proxy.rule = undefined;
      proxy.releaseHung();
    }
  });
  afterAll(async () => {
    await proxies.ddb?.stop();
    await proxies.kms?.stop();
  });
  return proxies;
}
