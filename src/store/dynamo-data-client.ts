import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import type { HttpRequest, RequestSigner } from "@smithy/types";
import { discard } from "../bytes.js";
import { errorMessage } from "../wire/errors.js";
import {
  type DataPlane,
  DynamoCallError,
  type PutItemJson,
  type ScanJson,
  type ScanPage,
  type UpdateItemJson,
  type WriteRequestJson,
} from "./data-plane.js";
import { type AttributeMap, parseAttributeMap, parseResponse, writeAttributeMap } from "./dynamo-json.js";
import { JsonBytes } from "./json-bytes.js";

/** The data-plane operations this client speaks. Everything else goes through the SDK. */
export type DataOperation =
  | "BatchWriteItem"
  | "BatchGetItem"
  | "PutItem"
  | "UpdateItem"
  | "GetItem"
  | "DeleteItem"
  | "Scan";

/** Error codes DynamoDB uses for throttling; the SDK retries the same set. */
const THROTTLING = new Set([
  "ProvisionedThroughputExceededException",
  "ThrottlingException",
  "Throttling",
  "RequestLimitExceeded",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "LimitExceededException",
  "TransactionInProgressException",
]);

/** Codes that mean the signature's clock is off; the SDK corrects its offset and retries. */
const CLOCK_SKEW = new Set([
  "RequestTimeTooSkewed",
  "RequestExpired",
  "InvalidSignatureException",
  "SignatureDoesNotMatch",
  "AuthFailure",
  "RequestInTheFuture",
]);

/** Settings of the data-plane client. */
export interface DynamoDataClientOptions {
  /** Limit on one HTTP call, from sending to the last body byte. */
  callTimeoutMs: number;
  /** Told of every failed call, for metrics; `throttled` for DynamoDB's throttling codes. */
  onFailure?: (op: DataOperation, throttled: boolean) => void;
}

/** Answers at least this long are freed once parsed: a streamed chunk's is ~510 KB. */
const DISCARDED_ANSWER_BYTES = 64 * 1024;

/** The partition key the readiness probe reads: kind 0x02, never written. */
const PROBE_PK = Uint8Array.of(0x02, ...new TextEncoder().encode("kvs-readiness-probe"));

/**
 * A lean client for DynamoDB's hot operations: it builds the JSON 1.0 request
 * text itself, signs it with the SDK's own SigV4 signer and credential
 * provider, and sends it with Bun's `fetch`.
 *
 * Why: the SDK's middleware stack, schema serde and Bun's `node:http`
 * emulation cost many times what the item's own work does; this path costs a
 * fraction of that (figures in docs/performance.md, "The data path: cost and
 * deadlines"). What is reused rather than rewritten:
 * - credentials: the SDK client's memoized provider chain, which refreshes
 *   ECS task-role and instance credentials before they expire;
 * - signing: the SDK client's `SignatureV4` (`@smithy/signature-v4`), with its
 *   clock-skew offset;
 * - the endpoint: the SDK's endpoint rule set, with region, FIPS, dual-stack
 *   and custom endpoint settings as the SDK client resolves them.
 *
 * Invariants:
 * - One attempt per call: retrying is the caller's (retry.ts), so the retry
 *   budget has one owner and one deadline.
 * - Every call ends within `callTimeoutMs` or the caller's remaining budget,
 *   whichever is less, with a retryable `TimeoutError` at the latest.
 * - A body whose `x-amz-crc32` does not match is never parsed: it fails as a
 *   retryable `CRC32CheckFailed`, as in the SDK.
 * - Responses are asked for uncompressed (`accept-encoding: identity`), so
 *   the checksum covers exactly the bytes read.
 */
export class DynamoDataClient implements DataPlane {
  readonly #url: string;
  readonly #host: string;
  readonly #protocol: string;
  readonly #hostname: string;
  readonly #port: number | undefined;
  readonly #path: string;
  readonly #signer: RequestSigner;
  readonly #sdk: DynamoDBClient;
  readonly #callTimeoutMs: number;
  readonly #onFailure: ((op: DataOperation, throttled: boolean) => void) | undefined;
  /** When a call last got an answer from DynamoDB (any 2xx/4xx with a body), ms since the epoch; 0 never. */
  lastAnswerAt = 0;

  private constructor(sdk: DynamoDBClient, url: URL, signer: RequestSigner, options: DynamoDataClientOptions) {
    this.#sdk = sdk;
    this.#url = url.href;
    this.#protocol = url.protocol;
    this.#hostname = url.hostname;
    this.#port = url.port === "" ? undefined : Number(url.port);
    this.#host = url.host;
    this.#path = url.pathname || "/";
    this.#signer = signer;
    this.#callTimeoutMs = options.callTimeoutMs;
    this.#onFailure = options.onFailure;
  }

  /**
   * A client that sends where `sdk` would, signed as `sdk` would sign.
   * Resolves credentials once, so a missing credential fails at startup.
   */
  static async create(sdk: DynamoDBClient, options: DynamoDataClientOptions): Promise<DynamoDataClient> {
    const config = sdk.config;
    const region = await config.region();
    const credentials = await config.credentials();
    const params: Record<string, unknown> = {
      Region: region,
      UseFIPS: await config.useFipsEndpoint(),
      UseDualStack: await config.useDualstackEndpoint(),
      AccountIdEndpointMode: await config.accountIdEndpointMode(),
      AccountId: credentials.accountId,
    };
    if (config.endpoint !== undefined) {
      const ep = await config.endpoint();
      params.Endpoint = `${ep.protocol}//${ep.hostname}${ep.port ? `:${ep.port}` : ""}${ep.path ?? ""}`;
    }
    const resolved = config.endpointProvider(params as Parameters<typeof config.endpointProvider>[0], {});
    const signer = await (config.signer as (scheme: unknown) => Promise<RequestSigner>)({
      name: "sigv4",
      signingName: "dynamodb",
      signingRegion: region,
      properties: {},
    });
    return new DynamoDataClient(sdk, new URL(resolved.url.href), signer, options);
  }

  /** Where requests go. */
  get endpoint(): string {
    return this.#url;
  }

  /**
   * A cheap readiness probe: an eventually consistent GetItem of a key no
   * item has (kind byte 0x02 is not used by the item format). Resolves when
   * DynamoDB answered within `timeoutMs`.
   */
  async probe(table: string, timeoutMs: number): Promise<void> {
    await this.getItem(table, { pk: { B: PROBE_PK } }, false, timeoutMs);
  }

  /** BatchWriteItem; returns the write requests DynamoDB left unprocessed. */
  async batchWriteItem(
    table: string,
    requests: readonly WriteRequestJson[],
    timeoutMs?: number,
  ): Promise<WriteRequestJson[]> {
    const body = new JsonBytes().raw(`{"RequestItems":{`).string(table).raw(":[");
    requests.forEach((r, i) => {
      if (i > 0) body.raw(",");
      if (r.put !== undefined) {
        body.raw(`{"PutRequest":{"Item":`);
        writeAttributeMap(body, r.put);
      } else {
        body.raw(`{"DeleteRequest":{"Key":`);
        writeAttributeMap(body, r.delete);
      }
      body.raw("}}");
    });
    body.raw("]}}");
    const out = (await this.call("BatchWriteItem", body, timeoutMs)) as {
      UnprocessedItems?: Record<string, { PutRequest?: { Item: unknown }; DeleteRequest?: { Key: unknown } }[]>;
    };
    const unprocessed: WriteRequestJson[] = [];
    for (const r of out.UnprocessedItems?.[table] ?? []) {
      if (r.PutRequest) unprocessed.push({ put: parseAttributeMap(r.PutRequest.Item) });
      else if (r.DeleteRequest) unprocessed.push({ delete: parseAttributeMap(r.DeleteRequest.Key) });
    }
    return unprocessed;
  }

  /** BatchGetItem; returns the items found and the keys DynamoDB left unprocessed. */
  async batchGetItem(table: string, keys: readonly AttributeMap[], consistentRead: boolean, timeoutMs?: number) {
    const body = new JsonBytes().raw(`{"RequestItems":{`).string(table).raw(`:{"Keys":[`);
    keys.forEach((k, i) => {
      if (i > 0) body.raw(",");
      writeAttributeMap(body, k);
    });
    body.raw(`],"ConsistentRead":${consistentRead}}}}`);
    const out = (await this.call("BatchGetItem", body, timeoutMs)) as {
      Responses?: Record<string, unknown[]>;
      UnprocessedKeys?: Record<string, { Keys?: unknown[] }>;
    };
    return {
      items: (out.Responses?.[table] ?? []).map(parseAttributeMap),
      unprocessed: (out.UnprocessedKeys?.[table]?.Keys ?? []).map(parseAttributeMap),
    };
  }

  /** GetItem; the item (only the `projection` attributes, if given), or undefined when there is none. */
  async getItem(table: string, key: AttributeMap, consistentRead: boolean, timeoutMs?: number, projection?: string) {
    const body = new JsonBytes().raw(`{"TableName":`).string(table).raw(`,"Key":`);
    writeAttributeMap(body, key);
    body.raw(`,"ConsistentRead":${consistentRead}`);
    if (projection !== undefined) body.raw(`,"ProjectionExpression":`).string(projection);
    body.raw("}");
    const out = (await this.call("GetItem", body, timeoutMs)) as { Item?: unknown };
    return out.Item === undefined ? undefined : parseAttributeMap(out.Item);
  }

  /** PutItem: the unbatched write of a chunk (`--write-batch 1`). */
  async putItem(input: PutItemJson, timeoutMs?: number): Promise<void> {
    const body = new JsonBytes().raw(`{"TableName":`).string(input.table).raw(`,"Item":`);
    writeAttributeMap(body, input.item);
    body.raw("}");
    await this.call("PutItem", body, timeoutMs);
  }

  /**
   * UpdateItem, optionally conditional. With `returnOld`, resolves the item
   * as it was before (undefined when there was none).
   */
  async updateItem(input: UpdateItemJson, timeoutMs?: number): Promise<AttributeMap | undefined> {
    const body = new JsonBytes().raw(`{"TableName":`).string(input.table).raw(`,"Key":`);
    writeAttributeMap(body, input.key);
    body.raw(`,"UpdateExpression":`).string(input.update);
    body.raw(`,"ExpressionAttributeNames":${JSON.stringify(input.names)},"ExpressionAttributeValues":`);
    writeAttributeMap(body, input.values);
    if (input.condition !== undefined) body.raw(`,"ConditionExpression":`).string(input.condition);
    if (input.oldOnConflict) body.raw(`,"ReturnValuesOnConditionCheckFailure":"ALL_OLD"`);
    if (input.returnOld) body.raw(`,"ReturnValues":"ALL_OLD"`);
    body.raw("}");
    const out = (await this.call("UpdateItem", body, timeoutMs)) as { Attributes?: unknown };
    return out.Attributes === undefined ? undefined : parseAttributeMap(out.Attributes);
  }

  /** DeleteItem. With `returnOld`, resolves the item it deleted (undefined when there was none). */
  async deleteItem(
    table: string,
    key: AttributeMap,
    timeoutMs?: number,
    returnOld = false,
  ): Promise<AttributeMap | undefined> {
    const body = new JsonBytes().raw(`{"TableName":`).string(table).raw(`,"Key":`);
    writeAttributeMap(body, key);
    body.raw(returnOld ? `,"ReturnValues":"ALL_OLD"}` : "}");
    const out = (await this.call("DeleteItem", body, timeoutMs)) as { Attributes?: unknown };
    return out.Attributes === undefined ? undefined : parseAttributeMap(out.Attributes);
  }

  /** One Scan page of a table or index segment. */
  async scan(input: ScanJson, timeoutMs?: number): Promise<ScanPage> {
    const body = new JsonBytes().raw(`{"TableName":`).string(input.table).raw(`,"Limit":${input.limit}`);
    if (input.index !== undefined) body.raw(`,"IndexName":`).string(input.index);
    if (input.totalSegments !== undefined) {
      body.raw(`,"Segment":${input.segment ?? 0},"TotalSegments":${input.totalSegments}`);
    }
    if (input.startKey !== undefined) {
      body.raw(`,"ExclusiveStartKey":`);
      writeAttributeMap(body, input.startKey);
    }
    if (input.consistentRead) body.raw(`,"ConsistentRead":true`);
    if (input.returnConsumedCapacity) body.raw(`,"ReturnConsumedCapacity":"TOTAL"`);
    body.raw("}");
    const out = (await this.call("Scan", body, timeoutMs)) as {
      Items?: unknown[];
      LastEvaluatedKey?: unknown;
      ConsumedCapacity?: { CapacityUnits?: number };
    };
    return {
      items: (out.Items ?? []).map(parseAttributeMap),
      lastKey: out.LastEvaluatedKey === undefined ? undefined : parseAttributeMap(out.LastEvaluatedKey),
      capacityUnits: out.ConsumedCapacity?.CapacityUnits ?? 0,
    };
  }

  /**
   * One signed call with a JSON body; resolves the parsed answer or rejects
   * with a {@link DynamoCallError}. It ends within `timeoutMs` (the caller's
   * remaining budget) or `callTimeoutMs`, whichever is less. The call owns
   * `body` from here: it releases it once answered.
   */
  async call(op: DataOperation, body: JsonBytes, timeoutMs = Number.POSITIVE_INFINITY): Promise<unknown> {
    if (this.#onFailure === undefined) return this.#call(op, body, timeoutMs);
    try {
      return await this.#call(op, body, timeoutMs);
    } catch (err) {
      this.#onFailure(op, err instanceof DynamoCallError && THROTTLING.has(err.name));
      throw err;
    }
  }

  async #call(op: DataOperation, body: JsonBytes, timeoutMs: number): Promise<unknown> {
    const payload = body.bytes;
    const request: HttpRequest = {
      method: "POST",
      protocol: this.#protocol,
      hostname: this.#hostname,
      port: this.#port,
      path: this.#path,
      query: {},
      headers: {
        host: this.#host,
        "content-type": "application/x-amz-json-1.0",
        "x-amz-target": `DynamoDB_20120810.${op}`,
      },
      body: payload,
    };
    let signed: HttpRequest;
    try {
      signed = await this.#signer.sign(request, { signingDate: this.#now() });
    } catch (err) {
      body.release();
      // Credentials could not be had (say, the instance metadata service flaked): worth another try.
      throw new DynamoCallError("CredentialsError", `DynamoDB ${op}: could not sign: ${errorMessage(err)}`, {
        retryable: true,
        cause: err,
      });
    }
    signed.headers["accept-encoding"] = "identity";
    let status: number;
    let bytes: Uint8Array;
    let crc: string | null;
    let date: string | null;
    const limit = Math.max(1, Math.min(this.#callTimeoutMs, timeoutMs));
    const signal = AbortSignal.timeout(limit);
    try {
      const res = await fetch(this.#url, { method: "POST", headers: signed.headers, body: payload, signal });
      status = res.status;
      crc = res.headers.get("x-amz-crc32");
      date = res.headers.get("date");
      bytes = new Uint8Array(await res.arrayBuffer());
      // Answered in full: the request body was sent and is not read again.
      body.release();
    } catch (err) {
      throw transportError(op, err, signal.aborted, limit);
    }
    if (crc !== null && Bun.hash.crc32(bytes) >>> 0 !== Number(crc)) {
      throw new DynamoCallError("CRC32CheckFailed", `DynamoDB ${op}: the response body does not match x-amz-crc32`, {
        status,
        retryable: true,
      });
    }
    let parsed: unknown;
    try {
      parsed = bytes.length === 0 ? {} : parseResponse(bytes);
      // Everything parsed is a copy; a large answer's bytes are freed now rather than promoted (see discard).
      if (bytes.length >= DISCARDED_ANSWER_BYTES) discard(bytes);
    } catch (err) {
      // A body cut short or garbled in transit; every data-plane call is safe to repeat.
      throw new DynamoCallError("SerializationException", `DynamoDB ${op}: the response is not JSON (HTTP ${status})`, {
        status,
        retryable: true,
        cause: err,
      });
    }
    // An answer, even an error one, shows DynamoDB is reachable and serving.
    if (status < 500) this.lastAnswerAt = Date.now();
    if (status === 200) return parsed;
    const error = this.#errorOf(op, status, parsed);
    if (CLOCK_SKEW.has(error.name) && date !== null) this.#correctClock(date);
    throw error;
  }

  #now(): Date {
    const offset = (this.#sdk.config as { systemClockOffset?: number }).systemClockOffset ?? 0;
    return new Date(Date.now() + offset);
  }

  /** Adopts the server's clock, as the SDK does on a skew error, so the retry is signed in its time. */
  #correctClock(date: string): void {
    const server = Date.parse(date);
    if (Number.isFinite(server))
      (this.#sdk.config as { systemClockOffset?: number }).systemClockOffset = server - Date.now();
  }

  #errorOf(op: DataOperation, status: number, body: unknown): DynamoCallError {
    const b = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
    const type = typeof b.__type === "string" ? b.__type : `HTTP${status}`;
    const code = type.slice(type.lastIndexOf("#") + 1);
    const message = typeof b.message === "string" ? b.message : typeof b.Message === "string" ? b.Message : "";
    const retryable =
      THROTTLING.has(code) || CLOCK_SKEW.has(code) || status === 429 || status >= 500 || code === "RequestTimeout";
    return new DynamoCallError(code, `DynamoDB ${op} failed: ${code}${message ? `: ${message}` : ""}`, {
      status,
      retryable,
      item: b.Item === undefined ? undefined : parseAttributeMap(b.Item),
    });
  }
}

function transportError(op: DataOperation, err: unknown, timedOut: boolean, timeoutMs: number): DynamoCallError {
  if (timedOut || (err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError"))) {
    return new DynamoCallError("TimeoutError", `DynamoDB ${op}: no answer within ${timeoutMs} ms`, {
      retryable: true,
      cause: err,
    });
  }
  const detail = err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err);
  return new DynamoCallError("NetworkError", `DynamoDB ${op}: ${detail}`, { retryable: true, cause: err });
}
