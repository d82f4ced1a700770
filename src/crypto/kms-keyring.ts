import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from "@aws-sdk/client-kms";
import { Counter, type Counters } from "../metrics.js";
import { asKvError, ErrorCode, KvError } from "../wire/errors.js";
import type { DataKey, DataKeyProvider } from "./key-cache.js";

/**
 * The KMS encryption context for a table. It is constant per table, so cached
 * data keys serve every item; per-item binding is done by the AES-GCM AAD.
 * The IAM policy in template.yaml conditions kms:GenerateDataKey and
 * kms:Decrypt on exactly this context.
 */
export function encryptionContext(table: string): Record<string, string> {
  return { service: "kvs", table };
}

/**
 * The KMS encryption context of branch-key version `version`: the table's
 * context plus the version, so a branch key's ciphertext decrypts only as
 * that version of that table, and never as a data key (whose context lacks
 * the version). IAM's condition on `service` and `table` still applies.
 */
export function branchKeyContext(table: string, version: number): Record<string, string> {
  return { ...encryptionContext(table), "branch-key-version": String(version) };
}

/** Data keys from AWS KMS (or the local endpoint, through the same SDK). */
export class KmsKeyring implements DataKeyProvider {
  readonly #kms: KMSClient;
  readonly #keyId: string;
  readonly #table: string;
  readonly #context: Record<string, string>;
  readonly #counters: Counters;

  readonly #timeoutMs: number;

  /**
   * @param timeoutMs bound on one KMS operation, the SDK's own attempts
   *   included: a hung KMS fails the request instead of stalling it.
   */
  constructor(kms: KMSClient, keyId: string, table: string, counters: Counters, timeoutMs = 5_000) {
    this.#kms = kms;
    this.#timeoutMs = timeoutMs;
    this.#keyId = keyId;
    this.#table = table;
    this.#context = encryptionContext(table);
    this.#counters = counters;
  }

  generate(): Promise<DataKey> {
    return this.#generate(this.#context);
  }

  /** A new branch key for `version`: its plaintext, and its ciphertext under {@link branchKeyContext}. */
  generateBranchKey(version: number): Promise<DataKey> {
    return this.#generate(branchKeyContext(this.#table, version));
  }

  /** The plaintext of branch-key version `version`, from its stored ciphertext. */
  decryptBranchKey(version: number, wrapped: Uint8Array): Promise<Uint8Array> {
    return this.#unwrap(wrapped, branchKeyContext(this.#table, version));
  }

  async #generate(context: Record<string, string>): Promise<DataKey> {
    this.#counters.add(Counter.kmsGenerateDataKey);
    try {
      const out = await this.#kms.send(
        new GenerateDataKeyCommand({ KeyId: this.#keyId, KeySpec: "AES_256", EncryptionContext: context }),
        { abortSignal: AbortSignal.timeout(this.#timeoutMs) },
      );
      if (out.Plaintext?.length !== 32 || !out.CiphertextBlob?.length) {
        throw new KvError(ErrorCode.Kms, "GenerateDataKey returned no usable key");
      }
      return { plaintext: out.Plaintext, wrapped: out.CiphertextBlob };
    } catch (err) {
      this.#countFailure("GenerateDataKey", err);
      throw asKvError(
        err,
        ErrorCode.Kms,
        `KMS GenerateDataKey failed${timedOut(err, this.#timeoutMs)}`,
        kmsRetryable(err),
      );
    }
  }

  #countFailure(op: string, err: unknown): void {
    const throttled = err instanceof Error && KMS_THROTTLING.has(err.name);
    this.#counters.outcome("kms", op, throttled ? "throttle" : "error");
  }

  unwrap(wrapped: Uint8Array): Promise<Uint8Array> {
    return this.#unwrap(wrapped, this.#context);
  }

  async #unwrap(wrapped: Uint8Array, context: Record<string, string>): Promise<Uint8Array> {
    this.#counters.add(Counter.kmsDecrypt);
    try {
      const out = await this.#kms.send(
        new DecryptCommand({ CiphertextBlob: wrapped, KeyId: this.#keyId, EncryptionContext: context }),
        { abortSignal: AbortSignal.timeout(this.#timeoutMs) },
      );
      if (out.Plaintext?.length !== 32) throw new KvError(ErrorCode.Kms, "Decrypt returned no usable key");
      return out.Plaintext;
    } catch (err) {
      this.#countFailure("Decrypt", err);
      // A blob KMS refuses as invalid means the stored data key was altered.
      if (err instanceof Error && (err.name === "InvalidCiphertextException" || err.name === "IncorrectKeyException")) {
        throw new KvError(ErrorCode.Integrity, `KMS refused the stored data key: ${err.name}`, { cause: err });
      }
      throw asKvError(err, ErrorCode.Kms, `KMS Decrypt failed${timedOut(err, this.#timeoutMs)}`, kmsRetryable(err));
    }
  }
}

/** KMS's throttling error codes (the SDK's own retries have run out by the time one reaches us). */
const KMS_THROTTLING = new Set(["ThrottlingException", "LimitExceededException", "TooManyRequestsException"]);

function timedOut(err: unknown, ms: number): string {
  return err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError")
    ? ` (no answer within ${ms} ms)`
    : "";
}

/** KMS throttling, timeouts and 5xx may pass; a disabled key or a denied call will not. */
function kmsRetryable(cause: unknown): boolean {
  if (!(cause instanceof Error)) return false;
  const meta = cause as { $retryable?: unknown; $fault?: string };
  return (
    meta.$retryable !== undefined ||
    meta.$fault === "server" ||
    /Throttl|Timeout|Unavailable|KMSInternal|Abort/i.test(cause.name)
  );
}
