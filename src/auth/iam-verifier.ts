import { createHash } from "node:crypto";
import { Semaphore } from "../store/semaphore.js";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";
import {
  decodeIamCredential,
  GET_CALLER_IDENTITY_BODY,
  SERVER_ID_HEADER,
  type SignedStsRequest,
} from "../wire/iam-credential.js";

/** How the server checks IAM credentials. */
export interface IamVerifierOptions {
  /** This server's id: a credential must have signed it in {@link SERVER_ID_HEADER}. */
  serverId: string;
  /** Regions whose STS endpoints (`https://sts.REGION.amazonaws.com`) credentials may name. */
  regions: readonly string[];
  /** Other STS origins credentials may name (a VPC endpoint, or a local STS in tests), e.g. `https://vpce-….sts.…`. */
  endpoints?: readonly string[];
  /** STS calls at once (default 16); more wait. */
  maxConcurrent?: number;
  /** Checks waiting for a call beyond which more are refused as unavailable (default 1,024). */
  maxWaiting?: number;
  /** Deadline of one STS call (default 5,000 ms). */
  timeoutMs?: number;
  /** How long a verified credential is remembered (default 60,000 ms; never past its signature's age limit). */
  cacheMs?: number;
  /** The clock, for tests of the date window. */
  now?: () => number;
}

/** How far a credential's X-Amz-Date may be from the server's clock (STS's own limit). */
export const MAX_SIGNATURE_AGE_MS = 15 * 60 * 1000;

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([A-Z0-9]{16,128})\/(\d{8})\/([a-z0-9-]{1,32})\/sts\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const ASSUMED_ROLE = /^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role\/([^/]+)\/.+$/;

/** Fails the check with a reason the caller can act on. */
function refused(why: string): KvError {
  return new KvError(ErrorCode.Unauthenticated, `IAM credential refused: ${why}`);
}

/**
 * The caller's identity as the policy names it: an assumed role's session
 * ARN (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`, what ECS tasks,
 * Lambda functions and SSO users present) becomes its role's ARN
 * (`arn:aws:iam::ACCOUNT:role/ROLE`; a role's path is not in a session ARN,
 * so it is not in this one either). Any other ARN is kept as it is.
 */
export function normaliseArn(arn: string): string {
  const m = ASSUMED_ROLE.exec(arn);
  return m === null ? arn : `arn:${m[1]}:iam::${m[2]}:role/${m[3]}`;
}

/**
 * Checks IAM credentials: a signed `sts:GetCallerIdentity` request (see
 * src/wire/iam-credential.ts) is checked for shape here, then sent to STS,
 * which checks the signature and answers with the caller's ARN. No secret
 * reaches this server, and a credential works only here: the server id is
 * signed in, and STS refuses the signature if the id sent differs.
 *
 * Invariants:
 * - A credential is sent to STS only if its URL is an allowed STS origin,
 *   its body is exactly GetCallerIdentity, it signs host, x-amz-date and the
 *   server id, the id is this server's, and its date is within 15 minutes.
 * - At most `maxConcurrent` STS calls at once; past `maxWaiting` waiting, a
 *   check fails at once as unavailable. Identical credentials share a call.
 * - A verified credential is remembered for `cacheMs`, never past the
 *   15 minutes its signature is good for, so a reconnect storm costs STS
 *   nothing and an STS outage does not stop clients reconnecting with a
 *   credential it verified.
 */
export class IamVerifier {
  readonly #options: IamVerifierOptions;
  readonly #origins: ReadonlySet<string>;
  /** The origins of `endpoints`: any region may be signed for at those. */
  readonly #endpointOrigins: ReadonlySet<string>;
  readonly #slots: Semaphore;
  #waiting = 0;
  readonly #maxWaiting: number;
  readonly #cache = new Map<string, { arn: string; until: number }>();
  readonly #inFlight = new Map<string, Promise<string>>();
  readonly #now: () => number;
  /** STS calls made, for tests and the log. */
  calls = 0;

  constructor(options: IamVerifierOptions) {
    this.#options = options;
    const origins = new Set<string>();
    for (const region of options.regions) {
      origins.add(`https://sts.${region}.amazonaws.com`);
      if (region === "us-east-1") origins.add("https://sts.amazonaws.com");
    }
    this.#endpointOrigins = new Set((options.endpoints ?? []).map((e) => new URL(e).origin));
    for (const o of this.#endpointOrigins) origins.add(o);
    this.#origins = origins;
    this.#slots = new Semaphore(options.maxConcurrent ?? 16);
    this.#maxWaiting = options.maxWaiting ?? 1024;
    this.#now = options.now ?? Date.now;
  }

  /** The STS origins credentials may name. */
  get origins(): string[] {
    return [...this.#origins];
  }

  /**
   * The normalised ARN of the credential's caller. Rejects with
   * `KV_ERR_UNAUTHENTICATED` and the reason when it is refused (by this
   * check or by STS), or `KV_ERR_UNAVAILABLE` when STS cannot answer now.
   */
  verify(credential: string): Promise<string> {
    const key = createHash("sha256").update(credential).digest("base64");
    const now = this.#now();
    const cached = this.#cache.get(key);
    if (cached !== undefined) {
      if (cached.until > now) return Promise.resolve(cached.arn);
      this.#cache.delete(key);
    }
    const running = this.#inFlight.get(key);
    if (running !== undefined) return running;
    let request: SignedStsRequest;
    let signedAt: number;
    try {
      ({ request, signedAt } = this.#check(credential, now));
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#waiting >= this.#maxWaiting) {
      return Promise.reject(
        new KvError(ErrorCode.Unavailable, "too many IAM authentications are waiting for STS; try again shortly", {
          retryable: true,
        }),
      );
    }
    this.#waiting++;
    const work = this.#slots
      .run(() => {
        this.#waiting--;
        return this.#ask(request);
      })
      .then((arn) => {
        this.#remember(
          key,
          arn,
          Math.min(this.#now() + (this.#options.cacheMs ?? 60_000), signedAt + MAX_SIGNATURE_AGE_MS),
        );
        return arn;
      })
      .finally(() => this.#inFlight.delete(key));
    this.#inFlight.set(key, work);
    return work;
  }

  #remember(key: string, arn: string, until: number): void {
    if (this.#cache.size >= 10_000) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
    this.#cache.set(key, { arn, until });
  }

  /** The credential's request if its shape is one this server sends to STS; throws the reason otherwise. */
  #check(credential: string, now: number): { request: SignedStsRequest; signedAt: number } {
    const request = decodeIamCredential(credential);
    if (typeof request === "string") throw refused(request);
    if (request.method !== "POST") throw refused(`the request must be a POST, not ${request.method}`);
    let url: URL;
    try {
      url = new URL(request.url);
    } catch {
      throw refused("its url is not a URL");
    }
    if (!this.#origins.has(url.origin)) {
      throw refused(`${url.origin} is not an STS endpoint this server accepts (${[...this.#origins].join(", ")})`);
    }
    if (url.pathname !== "/" || url.search !== "" || url.username !== "" || url.password !== "") {
      throw refused("the request must be to the STS endpoint's root, with no query");
    }
    if (!sameForm(request.body, GET_CALLER_IDENTITY_BODY)) {
      throw refused(`the body must be ${GET_CALLER_IDENTITY_BODY}`);
    }
    const h = request.headers;
    const auth = AUTHORIZATION.exec(h.authorization ?? "");
    if (auth === null) throw refused("its Authorization header is not an AWS4-HMAC-SHA256 signature for sts");
    const [, , scopeDay, region, signedHeaders] = auth as unknown as [string, string, string, string, string];
    const signed = new Set(signedHeaders.split(";"));
    for (const name of ["host", "x-amz-date", SERVER_ID_HEADER]) {
      if (!signed.has(name)) throw refused(`the signature does not cover the ${name} header`);
    }
    for (const name of signed) if (h[name] === undefined) throw refused(`the signed header ${name} is missing`);
    if (h.host !== url.host) throw refused("its host header is not its url's host");
    const id = h[SERVER_ID_HEADER];
    if (id !== this.#options.serverId) {
      throw refused(
        `it was signed for server id ${JSON.stringify(id)}; this server's id is ${JSON.stringify(this.#options.serverId)}`,
      );
    }
    const endpointRegion = /^sts\.([a-z0-9-]+)\.amazonaws\.com$/.exec(url.hostname)?.[1];
    const allowedRegion =
      this.#options.regions.includes(region) && (endpointRegion === undefined || endpointRegion === region);
    if (!allowedRegion && !this.#endpointOrigins.has(url.origin)) {
      throw refused(`it is signed for region ${region}, which this server does not accept`);
    }
    const date = AMZ_DATE.exec(h["x-amz-date"] ?? "");
    if (date === null) throw refused("its x-amz-date is not YYYYMMDDTHHMMSSZ");
    const [, y, mo, d, hh, mm, ss] = date.map(Number) as [number, number, number, number, number, number, number];
    const signedAt = Date.UTC(y, mo - 1, d, hh, mm, ss);
    if (scopeDay !== (h["x-amz-date"] as string).slice(0, 8))
      throw refused("its credential scope's date is not its x-amz-date's");
    if (Math.abs(now - signedAt) > MAX_SIGNATURE_AGE_MS) {
      throw refused("it was signed more than 15 minutes from this server's clock; sign a fresh one (or fix the clock)");
    }
    return { request, signedAt };
  }

  /** Sends the checked request to STS: the caller's ARN, or why not. */
  async #ask(request: SignedStsRequest): Promise<string> {
    this.calls++;
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) {
      // fetch sets host (checked equal to the URL's) and content-length itself.
      if (name !== "host" && name !== "content-length" && name !== "connection") headers[name] = value;
    }
    let res: Response;
    let text: string;
    try {
      res = await fetch(request.url, {
        method: "POST",
        headers,
        body: request.body,
        redirect: "error",
        signal: AbortSignal.timeout(this.#options.timeoutMs ?? 5000),
      });
      text = await res.text();
    } catch (err) {
      throw new KvError(
        ErrorCode.Unavailable,
        `STS could not be reached to check an IAM credential: ${errorMessage(err)}`,
        {
          cause: err,
          retryable: true,
        },
      );
    }
    if (res.ok) {
      const arn = /<Arn>([^<]+)<\/Arn>/.exec(text)?.[1];
      if (arn === undefined) {
        throw new KvError(ErrorCode.Unavailable, "STS answered GetCallerIdentity without an Arn", { retryable: true });
      }
      return normaliseArn(arn);
    }
    const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP ${res.status}`;
    const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? "";
    if (res.status >= 500 || code === "Throttling" || code === "RequestLimitExceeded") {
      throw new KvError(ErrorCode.Unavailable, `STS could not check an IAM credential now: ${code}`, {
        retryable: true,
      });
    }
    throw refused(`STS refused it: ${code}${message === "" ? "" : `: ${message}`}`);
  }
}

/** Whether two form bodies have the same fields and values, in any order. */
function sameForm(a: string, b: string): boolean {
  const fields = (s: string) =>
    [...new URLSearchParams(s)]
      .map(([k, v]) => `${k}=${v}`)
      .sort()
      .join("&");
  try {
    return fields(a) === fields(b);
  } catch {
    return false;
  }
}
