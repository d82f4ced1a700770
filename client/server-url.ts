import { ErrorCode, KvError } from "../src/wire/errors.js";

/** The default port of `kvs://` URLs (the server's default). */
export const DEFAULT_PORT = 7070;
/** The default port of `kvss://` URLs (the template's TLS listener). */
export const DEFAULT_TLS_PORT = 7443;

/**
 * Parses `kvs://HOST[:PORT]` (plaintext, port 7070) or `kvss://HOST[:PORT]`
 * (TLS, port 7443) into connection settings. IPv6 hosts go in brackets.
 * Throws `KV_ERR_CONFIG` on anything else.
 */
export function parseServerUrl(url: string): { host: string; port: number; tls: boolean } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new KvError(
      ErrorCode.Config,
      `not a server URL: ${JSON.stringify(url)} (expected kvs://HOST:PORT or kvss://HOST:PORT)`,
    );
  }
  const tls = parsed.protocol === "kvss:";
  if (!tls && parsed.protocol !== "kvs:") {
    throw new KvError(
      ErrorCode.Config,
      `unknown scheme ${parsed.protocol} in ${JSON.stringify(url)} (use kvs:// or kvss://)`,
    );
  }
  if (parsed.hostname === "" || (parsed.pathname !== "" && parsed.pathname !== "/") || parsed.search || parsed.hash) {
    throw new KvError(
      ErrorCode.Config,
      `a server URL is kvs[s]://HOST[:PORT] and nothing more, got ${JSON.stringify(url)}`,
    );
  }
  const host = parsed.hostname.startsWith("[") ? parsed.hostname.slice(1, -1) : parsed.hostname;
  return { host, port: parsed.port === "" ? (tls ? DEFAULT_TLS_PORT : DEFAULT_PORT) : Number(parsed.port), tls };
}
