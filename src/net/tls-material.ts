import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import type { TLSOptions } from "bun";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";

/**
 * Where a listener's TLS material lives on disk. Each may instead be the PEM
 * text itself (it starts with `-----BEGIN`), for material a platform injects
 * as environment variables (ECS secrets); a reload then re-reads the same text.
 */
export interface TlsFiles {
  /** PEM certificate chain: the server's certificate first, then intermediates. */
  cert: string;
  /** PEM private key of the first certificate. */
  key: string;
  /** PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS). */
  ca?: string;
}

/** TLS material read and checked, ready for `Bun.listen` and `Bun.serve`. */
export interface TlsMaterial {
  /** Options for Bun's listeners. With a CA, they require and verify a client certificate. */
  readonly options: TLSOptions;
  /** Whether clients must present a certificate (`--tls-ca` was given). */
  readonly mutual: boolean;
  /** The server certificate's subject, for log lines. */
  readonly subject: string;
  /** When the server certificate expires. */
  readonly notAfter: Date;
}

/** Whether a TLS setting is PEM text rather than a path. */
function isPem(value: string): boolean {
  return value.trimStart().startsWith("-----BEGIN");
}

/** How messages name a setting: its path, never PEM text (a key's would be a secret). */
function shown(value: string): string {
  return isPem(value) ? "(PEM text)" : value;
}

function read(what: string, path: string): string {
  if (isPem(path)) return path;
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new KvError(ErrorCode.Config, `cannot read ${what} ${path}: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * Reads and checks `files`: each parses as PEM, the key belongs to the first
 * certificate, and that certificate is valid at `now`. Throws
 * `KV_ERR_CONFIG` naming the file and the reason, so a bad file fails at
 * startup (or leaves the running material in place on reload) instead of
 * failing every handshake.
 */
export function loadTlsMaterial(files: TlsFiles, now = new Date()): TlsMaterial {
  const certPem = read("--tls-cert", files.cert);
  const keyPem = read("--tls-key", files.key);
  const caPem = files.ca === undefined ? undefined : read("--tls-ca", files.ca);
  let cert: X509Certificate;
  try {
    // Parses the first certificate of the chain: the one the key must match.
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new KvError(
      ErrorCode.Config,
      `--tls-cert ${shown(files.cert)} is not a PEM certificate: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new KvError(
      ErrorCode.Config,
      `--tls-key ${shown(files.key)} is not a PEM private key: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  if (!cert.checkPrivateKey(key)) {
    throw new KvError(
      ErrorCode.Config,
      `--tls-key ${shown(files.key)} does not belong to the certificate in ${shown(files.cert)}`,
    );
  }
  if (cert.validToDate.getTime() <= now.getTime()) {
    throw new KvError(ErrorCode.Config, `--tls-cert ${shown(files.cert)} expired on ${cert.validToDate.toISOString()}`);
  }
  if (caPem !== undefined) {
    try {
      new X509Certificate(caPem);
    } catch (err) {
      throw new KvError(
        ErrorCode.Config,
        `--tls-ca ${shown(files.ca as string)} is not a PEM certificate: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
  }
  const options: TLSOptions =
    caPem === undefined
      ? { cert: certPem, key: keyPem }
      : // Without rejectUnauthorized a client with no certificate, or one from another CA, would get in.
        { cert: certPem, key: keyPem, ca: caPem, requestCert: true, rejectUnauthorized: true };
  return { options, mutual: caPem !== undefined, subject: cert.subject, notAfter: cert.validToDate };
}
