import { readFileSync } from "node:fs";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";
import { IAM_CREDENTIAL_PREFIX } from "../wire/iam-credential.js";
import { AccessPolicy, Grant } from "./access-policy.js";
import { IamVerifier } from "./iam-verifier.js";
import { TokenStore } from "./token-store.js";

/** How clients authenticate and what they may do; every method is off unless configured. */
export interface AuthSettings {
  /**
   * The access policy file (see access-policy.ts), or the policy's JSON
   * itself (it starts with `{`: a policy a platform injects as an
   * environment variable); required once any method is on.
   */
  policyFile?: string;
  /** Bearer tokens, one `NAME=SECRET` per line (see token-store.ts). */
  tokensFile?: string;
  /** Bearer tokens from the environment (`KV_TOKENS`), comma-separated. */
  tokensText?: string;
  /** Accept IAM credentials signed for this server id. */
  iamServerId?: string;
  /** Regions whose STS endpoints IAM credentials may name. */
  iamRegions?: readonly string[];
  /** Other STS origins they may name (a VPC endpoint; a local STS in tests). */
  iamStsEndpoints?: readonly string[];
  /** Serve clients beyond loopback with no authentication at all. */
  insecureNoAuth?: boolean;
}

/** Who a connection or request is, once authenticated, and how it showed it. */
export interface Principal {
  /** As the policy names it: `arn:...`, `token:NAME`, `cert:NAME`, or `anonymous` (no authentication). */
  readonly identity: string;
  readonly method: "token" | "iam" | "cert" | "none";
  /** A token's hash: a reload that drops the token ends the principal. */
  readonly tokenHash?: string;
}

/** What a client presented to authenticate: one of a token or an IAM credential. */
export interface Credential {
  token?: string;
  iam?: string;
}

const ANONYMOUS: Principal = { identity: "anonymous", method: "none" };

/** Whether an address is the local host's (127.0.0.0/8, ::1, or IPv4-mapped loopback). */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const a = address.startsWith("::ffff:") ? address.slice(7) : address;
  return a === "::1" || a === "localhost" || a.startsWith("127.");
}

/**
 * Authentication and authorization for both front ends: checks credentials,
 * gives each principal its {@link Grant}, and decides protected mode.
 *
 * Invariants:
 * - `required` is true exactly when a method (tokens, IAM, client
 *   certificates under a policy) is configured; then a principal holds only
 *   what the policy grants, and nothing before it authenticates.
 * - With no method, no mutual TLS and no `insecureNoAuth`, only loopback
 *   clients are served (protected mode); with `insecureNoAuth`, or mutual
 *   TLS without a policy, every client may do everything.
 * - {@link reload} either applies a whole new policy and token list or
 *   keeps the old ones and throws; `generation` rises on each applied
 *   reload, and a principal whose token was dropped is no longer valid.
 */
export class Authenticator {
  readonly required: boolean;
  readonly #settings: AuthSettings;
  /** Client certificates are identities (mutual TLS under a policy). */
  readonly certificates: boolean;
  /** Every TCP and HTTP client presents a verified certificate: an authentication, if without identities. */
  readonly #mutualTls: boolean;
  #policy: AccessPolicy | undefined;
  #tokens: TokenStore | undefined;
  readonly #iam: IamVerifier | undefined;
  #generation = 0;
  readonly #everything = Grant.everything(ANONYMOUS.identity);

  private constructor(settings: AuthSettings, mutualTls: boolean) {
    this.#settings = settings;
    const loaded = Authenticator.#load(settings);
    this.#policy = loaded.policy;
    this.#tokens = loaded.tokens;
    this.certificates = mutualTls && loaded.policy !== undefined;
    this.#mutualTls = mutualTls;
    this.#iam =
      settings.iamServerId === undefined
        ? undefined
        : new IamVerifier({
            serverId: settings.iamServerId,
            regions: settings.iamRegions ?? [],
            endpoints: settings.iamStsEndpoints ?? [],
          });
    this.required = this.#tokens !== undefined || this.#iam !== undefined || this.certificates;
    if (this.required && this.#policy === undefined) {
      throw new KvError(
        ErrorCode.Config,
        "authentication is on (--tokens-file, KV_TOKENS or --iam-server-id) but no --access-policy says what anyone may do; " +
          'give one, e.g. {"rules":[{"identity":"token:NAME","read":["*"],"write":["*"]}]}',
      );
    }
    if (this.#policy !== undefined && !this.required) {
      throw new KvError(
        ErrorCode.Config,
        "--access-policy was given without a way to authenticate: add --tokens-file (or KV_TOKENS), --iam-server-id, or --tls-ca (client certificates)",
      );
    }
    if (this.required && settings.insecureNoAuth) {
      throw new KvError(ErrorCode.Config, "--insecure-no-auth contradicts the authentication configured; drop one");
    }
  }

  /** Checks `settings` and reads its files; throws `KV_ERR_CONFIG` naming what is wrong. */
  static start(settings: AuthSettings, mutualTls: boolean): Authenticator {
    return new Authenticator(settings, mutualTls);
  }

  static #load(settings: AuthSettings): { policy?: AccessPolicy; tokens?: TokenStore } {
    const read = (path: string, what: string): string => {
      try {
        return readFileSync(path, "utf8");
      } catch (err) {
        throw new KvError(ErrorCode.Config, `cannot read ${what} ${path}: ${errorMessage(err)}`, { cause: err });
      }
    };
    const file = settings.policyFile;
    const inline = file?.trimStart().startsWith("{") === true;
    const policy =
      file === undefined
        ? undefined
        : AccessPolicy.parse(inline ? file : read(file, "--access-policy"), inline ? "(inline JSON)" : file);
    const { tokensFile, tokensText } = settings;
    if (tokensFile !== undefined && tokensText !== undefined) {
      throw new KvError(ErrorCode.Config, "give tokens in --tokens-file or in KV_TOKENS, not both");
    }
    const tokens =
      tokensFile !== undefined
        ? TokenStore.parse(read(tokensFile, "--tokens-file"), tokensFile)
        : tokensText !== undefined
          ? TokenStore.parse(tokensText, "KV_TOKENS", true)
          : undefined;
    return { ...(policy === undefined ? {} : { policy }), ...(tokens === undefined ? {} : { tokens }) };
  }

  /** Rises on every applied reload: a connection's grant made earlier is stale. */
  get generation(): number {
    return this.#generation;
  }

  /** What the startup line says about authentication. */
  describe(): string {
    if (!this.required)
      return this.#settings.insecureNoAuth
        ? "none (--insecure-no-auth)"
        : "none (protected mode: loopback clients only)";
    const methods: string[] = [];
    if (this.#tokens !== undefined) methods.push(`${this.#tokens.size} tokens`);
    if (this.#iam !== undefined) methods.push(`IAM (server id ${this.#settings.iamServerId})`);
    if (this.certificates) methods.push("client certificates");
    return `${methods.join(", ")}; ${this.#policy?.size ?? 0} policy rules`;
  }

  /**
   * Why a client at `remote` is refused before it may send anything (protected
   * mode), or undefined when it may go on.
   */
  refusal(remote: string | undefined): string | undefined {
    if (this.required || this.#mutualTls || this.#settings.insecureNoAuth || isLoopback(remote)) return undefined;
    return (
      "the server is in protected mode: no authentication is configured, so it serves only clients on loopback. " +
      "Configure --tokens-file, --iam-server-id or --tls-ca with an --access-policy, or start it with --insecure-no-auth"
    );
  }

  /** The principal of a connection that has not authenticated: everyone's, or nobody's when authentication is required. */
  get unauthenticated(): Principal | undefined {
    return this.required ? undefined : ANONYMOUS;
  }

  /**
   * The principal `credential` proves. Throws (or rejects) `KV_ERR_UNAUTHENTICATED`
   * with the reason for a refused one, `KV_ERR_UNAVAILABLE` when STS cannot
   * check it now, and `KV_ERR_BAD_REQUEST` for a credential that is neither or both.
   */
  authenticate(credential: Credential): Principal | Promise<Principal> {
    const { token, iam } = credential;
    if ((token === undefined) === (iam === undefined)) {
      throw new KvError(ErrorCode.BadRequest, "auth_request takes exactly one of token and iam");
    }
    if (!this.required) {
      throw new KvError(
        ErrorCode.Unauthenticated,
        "this server has no authentication configured; send no auth_request",
      );
    }
    if (token !== undefined) {
      const tokens = this.#tokens;
      if (tokens === undefined) throw new KvError(ErrorCode.Unauthenticated, "this server accepts no tokens");
      const found = tokens.identify(token);
      if (found === undefined) throw new KvError(ErrorCode.Unauthenticated, "the token is not one this server holds");
      return { identity: `token:${found.name}`, method: "token", tokenHash: found.hash };
    }
    const verifier = this.#iam;
    if (verifier === undefined) throw new KvError(ErrorCode.Unauthenticated, "this server accepts no IAM credentials");
    return verifier.verify(iam as string).then((arn) => ({ identity: arn, method: "iam" }));
  }

  /**
   * An HTTP `Authorization` header's principal: `Bearer TOKEN`, or `Bearer
   * kvs-iam-v1.…` (an IAM credential). Undefined without a header.
   */
  authenticateHeader(header: string | null): Principal | Promise<Principal> | undefined {
    if (header === null) return undefined;
    const m = /^Bearer +(\S+)\s*$/i.exec(header);
    if (m === null) throw new KvError(ErrorCode.Unauthenticated, "the Authorization header must be Bearer CREDENTIAL");
    const credential = m[1] as string;
    return this.authenticate(
      credential.startsWith(IAM_CREDENTIAL_PREFIX) ? { iam: credential } : { token: credential },
    );
  }

  /** The principal a verified client certificate names, or undefined when certificates are not identities. */
  fromCertificate(names: readonly string[]): Principal | undefined {
    if (!this.certificates || names.length === 0) return undefined;
    return { identity: `cert:${names[0]}`, method: "cert" };
  }

  /**
   * What `principal` may do now. A certificate matches a `cert:NAME` rule
   * by its CN or any SAN, so its grant is the union over its `names`.
   */
  grantOf(principal: Principal, names: readonly string[] = []): Grant {
    const policy = this.#policy;
    if (policy === undefined) return this.#everything;
    if (principal.method !== "cert" || names.length <= 1) return policy.grantFor(principal.identity);
    return policy.grantForAny(
      principal.identity,
      names.map((n) => `cert:${n}`),
    );
  }

  /** Whether `principal` still holds after the last reload (a dropped token ends it). */
  stillValid(principal: Principal): boolean {
    if (principal.method !== "token") return true;
    return this.#tokens?.holds(principal.tokenHash as string, principal.identity.slice("token:".length)) ?? false;
  }

  /**
   * Re-reads the policy and token files (SIGHUP). All or nothing: throws
   * `KV_ERR_CONFIG`, keeping what is in force, if anything is wrong.
   */
  reload(): void {
    if (!this.required) return;
    const loaded = Authenticator.#load(this.#settings);
    this.#policy = loaded.policy;
    this.#tokens = loaded.tokens;
    this.#generation++;
  }
}
