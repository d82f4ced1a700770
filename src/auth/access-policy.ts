import { ErrorCode, KvError } from "../wire/errors.js";

/**
 * Who may do what: the access policy file (`--access-policy`), parsed and
 * checked, and the {@link Grant} it gives an identity.
 *
 * The file is JSON:
 *
 * ```json
 * { "rules": [
 *   { "identity": "arn:aws:iam::111122223333:role/config-reader", "read": ["config/*"] },
 *   { "identity": "token:sessions", "read": ["sessions/*"], "write": ["sessions/*"] },
 *   { "identity": "arn:aws:iam::111122223333:role/ops-*", "read": ["*"], "write": ["*"], "admin": ["*"] }
 * ] }
 * ```
 *
 * - `identity` names who: an IAM ARN (`arn:...`; a `*` in it matches any
 *   run of characters), `token:NAME` (a token of `--tokens-file`), or
 *   `cert:NAME` (a client certificate whose subject CN or a SAN is NAME).
 * - `read` (get, exists, list), `write` (set, delete) and `admin` (clear,
 *   rotate-key) each list the keys it holds: an entry ending in `*` is a
 *   prefix (`"*"` alone is every key), any other entry one exact key.
 * - An identity holds the union of every rule that matches it. An identity
 *   no rule matches holds nothing: it may authenticate and do no more.
 */

/** The permissions a rule grants. */
export const PERMISSIONS = ["read", "write", "admin"] as const;

/** One of {@link PERMISSIONS}. */
export type Permission = (typeof PERMISSIONS)[number];

const utf8 = new TextEncoder();

/** The keys one permission covers: exact keys and prefixes, as bytes. */
interface Scope {
  /** Some entry is `*`: every key. */
  all: boolean;
  prefixes: Uint8Array[];
  exact: Uint8Array[];
  /** The entries as written, for reasons. */
  text: string[];
}

const EMPTY = new Uint8Array(0);

/** How a listing runs under a grant (see {@link Grant.listing}). */
export interface ListingScope {
  readonly prefix: Uint8Array | undefined;
  /** Each listed key must pass this; absent: every key under `prefix` may be read. */
  readonly filter?: (key: Uint8Array) => boolean;
}

function emptyScope(): Scope {
  return { all: false, prefixes: [], exact: [], text: [] };
}

function startsWith(key: Uint8Array, prefix: Uint8Array): boolean {
  if (prefix.length > key.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && startsWith(a, b);
}

/**
 * What one identity may do. Immutable: a policy reload makes new grants.
 *
 * Invariants:
 * - `allows(p, key)` is true exactly when some rule for the identity lists
 *   `key` under `p`, as an exact key or under a prefix.
 * - A listing under a grant returns only keys it may read ({@link Grant.listing}).
 */
export class Grant {
  /** The identity this grant is for (`arn:...`, `token:NAME`, `cert:NAME`, or `anonymous`). */
  readonly identity: string;
  /**
   * Set on the grant of a caller that may not be served at all (it has not
   * authenticated, or protected mode refuses it): the answer to every request.
   */
  readonly refusal: KvError | undefined;
  readonly #scopes: Record<Permission, Scope>;

  constructor(identity: string, scopes: Record<Permission, Scope>, refusal?: KvError) {
    this.identity = identity;
    this.#scopes = scopes;
    this.refusal = refusal;
  }

  /** A grant of nothing whose every refusal is `refusal` (a caller not yet authenticated, or refused outright). */
  static refusing(refusal: KvError): Grant {
    return new Grant("unauthenticated", { read: emptyScope(), write: emptyScope(), admin: emptyScope() }, refusal);
  }

  /** Every permission on every key: what a server without authentication gives everyone. */
  static everything(identity: string): Grant {
    const all = (): Scope => ({ all: true, prefixes: [], exact: [], text: ["*"] });
    return new Grant(identity, { read: all(), write: all(), admin: all() });
  }

  /** Whether the grant holds `permission` on `key`. */
  allows(permission: Permission, key: Uint8Array): boolean {
    const scope = this.#scopes[permission];
    if (scope.all) return true;
    for (const p of scope.prefixes) if (startsWith(key, p)) return true;
    for (const k of scope.exact) if (equalBytes(key, k)) return true;
    return false;
  }

  /** Whether the grant holds `permission` on every key. */
  allowsAll(permission: Permission): boolean {
    return this.#scopes[permission].all;
  }

  /**
   * How a listing under `prefix` runs under this grant, so that it returns
   * only keys the grant may read: under which prefix, and with which test
   * each listed key must pass (none when all of them may be read). Undefined
   * when nothing under `prefix` can be read: the listing is refused.
   */
  listing(prefix: Uint8Array | undefined): ListingScope | undefined {
    const scope = this.#scopes.read;
    const under = prefix ?? EMPTY;
    if (scope.all) return { prefix };
    for (const p of scope.prefixes) if (startsWith(under, p)) return { prefix };
    const narrower = scope.prefixes.filter((p) => startsWith(p, under));
    const exact = scope.exact.filter((k) => startsWith(k, under));
    if (narrower.length === 0 && exact.length === 0) return undefined;
    // One narrower prefix and nothing else: list under it, with nothing to filter out.
    if (narrower.length === 1 && exact.length === 0) return { prefix: narrower[0] };
    return { prefix, filter: (key) => this.allows("read", key) };
  }

  /** What a refusal says the identity holds of `permission`, e.g. `read on config/*`; never a key that exists. */
  describe(permission: Permission): string {
    const text = this.#scopes[permission].text;
    return text.length === 0 ? `no ${permission} permission` : `${permission} on ${text.join(", ")} only`;
  }
}

/** One rule of the file, checked. */
interface Rule {
  readonly identity: string;
  readonly matches: (identity: string) => boolean;
  readonly scopes: Record<Permission, readonly string[]>;
}

/** A glob of `*`s as a whole-string test. */
function globTest(pattern: string): (s: string) => boolean {
  if (!pattern.includes("*")) return (s) => s === pattern;
  const re = new RegExp(`^${pattern.split("*").map(escapeRegExp).join(".*")}$`, "s");
  return (s) => re.test(s);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Identity names a rule may give: an ARN (pattern), a token name, a certificate name. */
const IDENTITY = /^(arn:[^\s]+|token:[A-Za-z0-9._-]{1,64}|cert:[^\s*]{1,255})$/;

/**
 * The parsed access policy: what each identity may do. Made by
 * {@link AccessPolicy.parse}, which refuses a file it cannot apply exactly.
 */
export class AccessPolicy {
  readonly #rules: readonly Rule[];
  /** Grants by identity, made on first use (identities are few; a reload starts afresh). */
  readonly #grants = new Map<string, Grant>();

  private constructor(rules: readonly Rule[]) {
    this.#rules = rules;
  }

  /** Rules in the policy. */
  get size(): number {
    return this.#rules.length;
  }

  /**
   * Parses a policy file's text. Throws `KV_ERR_CONFIG` naming `source`,
   * the rule and the field, for anything it would not apply as written: bad
   * JSON, an unknown field or permission, an identity it cannot match, a
   * `*` inside a key entry.
   */
  static parse(text: string, source: string): AccessPolicy {
    const fail = (why: string): never => {
      throw new KvError(ErrorCode.Config, `access policy ${source}: ${why}`);
    };
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      return fail(`not JSON: ${(err as Error).message}`);
    }
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return fail('must be an object with "rules"');
    for (const field of Object.keys(doc)) if (field !== "rules") fail(`unknown field "${field}" (only "rules")`);
    const rules = (doc as { rules?: unknown }).rules;
    if (!Array.isArray(rules)) return fail('"rules" must be a list of rules');
    const parsed = rules.map((raw, i): Rule => {
      const where = `rule ${i + 1}`;
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return fail(`${where} is not an object`);
      const r = raw as Record<string, unknown>;
      for (const field of Object.keys(r)) {
        if (field !== "identity" && !(PERMISSIONS as readonly string[]).includes(field)) {
          fail(`${where}: unknown field "${field}" (identity, read, write, admin)`);
        }
      }
      const identity = r.identity;
      if (typeof identity !== "string" || !IDENTITY.test(identity)) {
        return fail(`${where}: "identity" must be arn:..., token:NAME or cert:NAME, got ${JSON.stringify(identity)}`);
      }
      const scopes = { read: [], write: [], admin: [] } as Record<Permission, string[]>;
      let any = false;
      for (const p of PERMISSIONS) {
        const entries = r[p];
        if (entries === undefined) continue;
        if (!Array.isArray(entries) || entries.some((e) => typeof e !== "string")) {
          fail(`${where}: "${p}" must be a list of keys and prefixes (strings)`);
        }
        for (const e of entries as string[]) {
          if (e === "") fail(`${where}: "${p}" has an empty entry; "*" is every key`);
          const star = e.indexOf("*");
          if (star >= 0 && star !== e.length - 1) {
            fail(`${where}: "${p}" entry ${JSON.stringify(e)}: only a trailing * (a prefix) is supported`);
          }
        }
        scopes[p] = entries as string[];
        any ||= (entries as string[]).length > 0;
      }
      if (!any) fail(`${where} (${identity}) grants nothing: give it read, write or admin`);
      return { identity, matches: globTest(identity), scopes };
    });
    return new AccessPolicy(parsed);
  }

  /** What `identity` may do: the union of every rule matching it. */
  grantFor(identity: string): Grant {
    return this.grantForAny(identity, [identity]);
  }

  /**
   * What an identity known by several names may do (a certificate, by its
   * CN and each SAN): the union of every rule matching any of `names`.
   */
  grantForAny(identity: string, names: readonly string[]): Grant {
    const cacheKey = names.length === 1 && names[0] === identity ? identity : `${identity}\n${names.join("\n")}`;
    let grant = this.#grants.get(cacheKey);
    if (grant !== undefined) return grant;
    const scopes: Record<Permission, Scope> = { read: emptyScope(), write: emptyScope(), admin: emptyScope() };
    for (const rule of this.#rules) {
      if (!names.some(rule.matches)) continue;
      for (const p of PERMISSIONS) {
        const scope = scopes[p];
        for (const entry of rule.scopes[p]) {
          if (scope.text.includes(entry)) continue;
          scope.text.push(entry);
          if (entry === "*") scope.all = true;
          else if (entry.endsWith("*")) scope.prefixes.push(utf8.encode(entry.slice(0, -1)));
          else scope.exact.push(utf8.encode(entry));
        }
      }
    }
    grant = new Grant(identity, scopes);
    if (this.#grants.size < 10_000) this.#grants.set(cacheKey, grant);
    return grant;
  }
}
