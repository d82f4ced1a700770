import { createHash } from "node:crypto";
import { ErrorCode, KvError } from "../wire/errors.js";

/**
 * Named bearer tokens, for clients outside AWS: read from `--tokens-file`
 * or `KVS_TOKENS`, kept only as SHA-256 hashes.
 *
 * Each entry is `NAME=SECRET` or `NAME=sha256:HEX` (the secret's SHA-256, so
 * the file need not hold the secret either): one per line in a file (`#`
 * starts a comment), separated by newlines or commas in the variable. A
 * token authenticates as the identity `token:NAME`.
 *
 * Invariants:
 * - No secret is kept: only hashes, and a presented token is hashed before
 *   it is looked up, so the lookup's timing says nothing about a secret.
 * - Secrets are at least {@link MIN_SECRET_CHARS} characters; names and
 *   secrets are unique.
 */
export class TokenStore {
  readonly #names: ReadonlyMap<string, string>;

  private constructor(names: ReadonlyMap<string, string>) {
    this.#names = names;
  }

  /** Tokens held. */
  get size(): number {
    return this.#names.size;
  }

  /**
   * Parses entries from `text` (a file's, or the variable's with `commas`).
   * Throws `KV_ERR_CONFIG` naming `source` and the line for a malformed
   * entry, a short secret, or a repeated name or secret.
   */
  static parse(text: string, source: string, commas = false): TokenStore {
    const names = new Map<string, string>();
    const seen = new Set<string>();
    const lines = text.split(commas ? /[\n,]/ : "\n");
    lines.forEach((raw, i) => {
      const line = (commas ? raw : raw.replace(/#.*$/, "")).trim();
      if (line === "") return;
      const where = `${source}${commas ? ` entry ${i + 1}` : ` line ${i + 1}`}`;
      const eq = line.indexOf("=");
      const name = line.slice(0, eq).trim();
      const secret = line.slice(eq + 1).trim();
      if (eq < 0 || !TOKEN_NAME.test(name)) {
        throw new KvError(ErrorCode.Config, `${where}: expected NAME=SECRET (NAME of letters, digits, . _ -)`);
      }
      let hash: string;
      if (secret.startsWith("sha256:")) {
        hash = secret.slice("sha256:".length).toLowerCase();
        if (!/^[0-9a-f]{64}$/.test(hash)) {
          throw new KvError(ErrorCode.Config, `${where}: sha256: must be followed by 64 hex digits`);
        }
      } else if (secret.length < MIN_SECRET_CHARS) {
        throw new KvError(
          ErrorCode.Config,
          `${where}: the secret of ${name} has ${secret.length} characters; use at least ${MIN_SECRET_CHARS} (openssl rand -hex 32)`,
        );
      } else hash = hashToken(secret);
      if (seen.has(name)) throw new KvError(ErrorCode.Config, `${where}: ${name} is given twice`);
      if (names.has(hash))
        throw new KvError(ErrorCode.Config, `${where}: ${name} has the same secret as another token`);
      seen.add(name);
      names.set(hash, name);
    });
    return new TokenStore(names);
  }

  /** The token `secret` is, by name and hash, or undefined when it is none of them. */
  identify(secret: string): { name: string; hash: string } | undefined {
    const hash = hashToken(secret);
    const name = this.#names.get(hash);
    return name === undefined ? undefined : { name, hash };
  }

  /** Whether the token of this hash is still held under `name` (after a reload). */
  holds(hash: string, name: string): boolean {
    return this.#names.get(hash) === name;
  }
}

/** Shortest secret accepted: 128 bits as hex characters. */
export const MIN_SECRET_CHARS = 32;

const TOKEN_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** A token's hash as the store keeps it (and as `NAME=sha256:HEX` gives it). */
export function hashToken(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}
