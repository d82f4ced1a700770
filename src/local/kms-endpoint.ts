import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import type { Server } from "bun";
import { errorMessage } from "../wire/errors.js";
import { KmsKeyStore, LOCAL_ACCOUNT, type MasterKey } from "./kms-keystore.js";

/**
 * A loopback KMS endpoint speaking the AWS JSON 1.1 protocol, so the service
 * runs the same `@aws-sdk/client-kms` code locally as on AWS.
 *
 * Supported: CreateKey, DescribeKey, CreateAlias, ListAliases, GenerateDataKey,
 * GenerateDataKeyWithoutPlaintext, Encrypt, Decrypt. Errors use KMS's shapes
 * (NotFoundException, InvalidCiphertextException, IncorrectKeyException, ...).
 *
 * Ciphertext blobs are AES-256-GCM under the master key, authenticated with
 * the key id and the canonical encryption context, so a blob decrypts only
 * under its own key and exact context, as on AWS.
 *
 * Not AWS: requests are not SigV4-verified (it binds to loopback only), there
 * are no grants, policies or rotation, and the account id is 000000000000.
 */
export class LocalKms {
  readonly #server: Server<undefined>;
  readonly #keys: KmsKeyStore;
  readonly #calls = new Map<string, number>();

  private constructor(server: Server<undefined>, keys: KmsKeyStore) {
    this.#server = server;
    this.#keys = keys;
  }

  /**
   * Starts the endpoint on 127.0.0.1.
   * @param options.dataDir where master keys persist; omitted, they live in memory.
   */
  static start(options: { dataDir?: string; region?: string; port?: number } = {}): LocalKms {
    const keys = new KmsKeyStore(options.region ?? "us-east-1", options.dataDir);
    let self: LocalKms | undefined;
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: options.port ?? 0,
      fetch: (req) => (self as LocalKms).handle(req),
    });
    self = new LocalKms(server, keys);
    return self;
  }

  /** The endpoint URL for `KMSClient({ endpoint })`. */
  get endpoint(): string {
    return `http://127.0.0.1:${this.#server.port}`;
  }

  /** Calls served, by operation name. */
  calls(op: string): number {
    return this.#calls.get(op) ?? 0;
  }

  /** Stops the endpoint. */
  async stop(): Promise<void> {
    await this.#server.stop(true);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Serves one HTTP request. */
  async handle(req: Request): Promise<Response> {
    const target = req.headers.get("x-amz-target") ?? "";
    const op = target.startsWith("TrentService.") ? target.slice("TrentService.".length) : "";
    if (req.method !== "POST" || op === "") {
      return fault("UnknownOperationException", `unsupported target ${JSON.stringify(target)}`);
    }
    let body: Record<string, unknown>;
    try {
      const parsed: unknown = await req.json();
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
      body = parsed as Record<string, unknown>;
    } catch {
      return fault("SerializationException", "request body is not a JSON object");
    }
    this.#calls.set(op, (this.#calls.get(op) ?? 0) + 1);
    try {
      const result = this.#dispatch(op, body);
      return Response.json(result, { headers: { "content-type": "application/x-amz-json-1.1" } });
    } catch (err) {
      if (err instanceof KmsFault) return fault(err.type, err.message);
      return fault("KMSInternalException", errorMessage(err), 500);
    }
  }

  #dispatch(op: string, body: Record<string, unknown>): unknown {
    switch (op) {
      case "CreateKey": {
        const spec = optString(body, "KeySpec") ?? optString(body, "CustomerMasterKeySpec") ?? "SYMMETRIC_DEFAULT";
        const usage = optString(body, "KeyUsage") ?? "ENCRYPT_DECRYPT";
        if (spec !== "SYMMETRIC_DEFAULT" || usage !== "ENCRYPT_DECRYPT") {
          throw new KmsFault("UnsupportedOperationException", "only SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys");
        }
        return { KeyMetadata: metadata(this.#keys.create(optString(body, "Description") ?? "")) };
      }
      case "DescribeKey":
        return { KeyMetadata: metadata(this.#key(body)) };
      case "CreateAlias": {
        const alias = reqString(body, "AliasName");
        if (!/^alias\/[a-zA-Z0-9/_-]{1,250}$/.test(alias) || alias.startsWith("alias/aws/")) {
          throw new KmsFault("ValidationException", `invalid alias name ${JSON.stringify(alias)}`);
        }
        const key = this.#keys.resolve(reqString(body, "TargetKeyId"));
        if (key === undefined) throw new KmsFault("NotFoundException", "target key not found");
        if (!this.#keys.createAlias(alias, key.keyId)) {
          throw new KmsFault("AlreadyExistsException", `alias ${alias} already exists`);
        }
        return {};
      }
      case "ListAliases":
        return {
          Aliases: this.#keys.aliases().map(([name, keyId]) => ({
            AliasName: name,
            AliasArn: `arn:aws:kms:us-east-1:${LOCAL_ACCOUNT}:${name}`,
            TargetKeyId: keyId,
          })),
          Truncated: false,
        };
      case "GenerateDataKey":
      case "GenerateDataKeyWithoutPlaintext": {
        const key = this.#usableKey(body);
        const plaintext = randomBytes(dataKeyBytes(body));
        const blob = wrap(key, plaintext, context(body));
        const out: Record<string, string> = { CiphertextBlob: blob.toString("base64"), KeyId: key.arn };
        if (op === "GenerateDataKey") out.Plaintext = plaintext.toString("base64");
        return out;
      }
      case "Encrypt": {
        const key = this.#usableKey(body);
        const plaintext = blobField(body, "Plaintext");
        if (plaintext.length < 1 || plaintext.length > 4096) {
          throw new KmsFault("ValidationException", "Plaintext must be 1 to 4096 bytes");
        }
        const blob = wrap(key, plaintext, context(body));
        return { CiphertextBlob: blob.toString("base64"), KeyId: key.arn, EncryptionAlgorithm: "SYMMETRIC_DEFAULT" };
      }
      case "Decrypt": {
        const blob = blobField(body, "CiphertextBlob");
        const parsed = parseBlob(blob);
        const key = this.#keys.byId(parsed.keyId);
        if (key === undefined) throw new KmsFault("InvalidCiphertextException", "ciphertext names no known key");
        const named = optString(body, "KeyId");
        if (named !== undefined && this.#keys.resolve(named)?.keyId !== key.keyId) {
          throw new KmsFault("IncorrectKeyException", "the ciphertext was not encrypted under the given KeyId");
        }
        if (!key.enabled) throw new KmsFault("DisabledException", `${key.arn} is disabled`);
        const plaintext = unwrap(key, parsed, context(body));
        return { Plaintext: plaintext.toString("base64"), KeyId: key.arn, EncryptionAlgorithm: "SYMMETRIC_DEFAULT" };
      }
      default:
        throw new KmsFault("UnsupportedOperationException", `${op} is not supported by the local KMS endpoint`);
    }
  }

  #key(body: Record<string, unknown>): MasterKey {
    const ref = reqString(body, "KeyId");
    const key = this.#keys.resolve(ref);
    if (key === undefined) throw new KmsFault("NotFoundException", `key ${JSON.stringify(ref)} does not exist`);
    return key;
  }

  #usableKey(body: Record<string, unknown>): MasterKey {
    const key = this.#key(body);
    if (!key.enabled) throw new KmsFault("DisabledException", `${key.arn} is disabled`);
    return key;
  }
}

class KmsFault extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

function fault(type: string, message: string, status = 400): Response {
  return Response.json(
    { __type: type, message },
    { status, headers: { "content-type": "application/x-amz-json-1.1", "x-amzn-errortype": type } },
  );
}

function optString(body: Record<string, unknown>, name: string): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new KmsFault("ValidationException", `${name} must be a string`);
  return v;
}

function reqString(body: Record<string, unknown>, name: string): string {
  const v = optString(body, name);
  if (v === undefined || v === "") throw new KmsFault("ValidationException", `${name} is required`);
  return v;
}

function blobField(body: Record<string, unknown>, name: string): Buffer {
  const v = reqString(body, name);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw new KmsFault("ValidationException", `${name} is not base64`);
  return Buffer.from(v, "base64");
}

function dataKeyBytes(body: Record<string, unknown>): number {
  const spec = optString(body, "KeySpec");
  const n = body.NumberOfBytes;
  if (spec !== undefined && n !== undefined) {
    throw new KmsFault("ValidationException", "give KeySpec or NumberOfBytes, not both");
  }
  if (spec === "AES_256") return 32;
  if (spec === "AES_128") return 16;
  if (spec !== undefined) throw new KmsFault("ValidationException", `unknown KeySpec ${spec}`);
  if (typeof n === "number" && Number.isInteger(n) && n >= 1 && n <= 1024) return n;
  throw new KmsFault("ValidationException", "KeySpec or NumberOfBytes (1-1024) is required");
}

/** Encryption context as sorted [key, value] pairs; the AAD depends on its content, not its order. */
function context(body: Record<string, unknown>): [string, string][] {
  const ctx = body.EncryptionContext;
  if (ctx === undefined || ctx === null) return [];
  if (typeof ctx !== "object" || Array.isArray(ctx)) {
    throw new KmsFault("ValidationException", "EncryptionContext must be a map");
  }
  const pairs: [string, string][] = [];
  for (const [k, v] of Object.entries(ctx)) {
    if (typeof v !== "string") throw new KmsFault("ValidationException", "EncryptionContext values must be strings");
    pairs.push([k, v]);
  }
  return pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

const MAGIC = Buffer.from("KVK1");
const IV_BYTES = 12;
const TAG_BYTES = 16;

function aad(keyId: string, ctx: [string, string][]): Buffer {
  const parts: Buffer[] = [MAGIC, Buffer.from(keyId)];
  for (const [k, v] of ctx) {
    for (const s of [k, v]) {
      const b = Buffer.from(s);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      parts.push(len, b);
    }
  }
  return Buffer.concat(parts);
}

/** Blob: "KVK1" ‖ u8 len(keyId) ‖ keyId ‖ iv(12) ‖ ciphertext ‖ tag(16). */
function wrap(key: MasterKey, plaintext: Uint8Array, ctx: [string, string][]): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key.material, iv);
  cipher.setAAD(aad(key.keyId, ctx));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const id = Buffer.from(key.keyId);
  return Buffer.concat([MAGIC, Buffer.from([id.length]), id, iv, body, cipher.getAuthTag()]);
}

interface ParsedBlob {
  keyId: string;
  iv: Buffer;
  body: Buffer;
  tag: Buffer;
}

function parseBlob(blob: Buffer): ParsedBlob {
  const invalid = new KmsFault("InvalidCiphertextException", "ciphertext blob is malformed");
  if (blob.length < MAGIC.length + 1 || !blob.subarray(0, MAGIC.length).equals(MAGIC)) throw invalid;
  const idLen = blob[MAGIC.length] as number;
  const ivAt = MAGIC.length + 1 + idLen;
  if (blob.length < ivAt + IV_BYTES + TAG_BYTES) throw invalid;
  return {
    keyId: blob.subarray(MAGIC.length + 1, ivAt).toString(),
    iv: blob.subarray(ivAt, ivAt + IV_BYTES),
    body: blob.subarray(ivAt + IV_BYTES, blob.length - TAG_BYTES),
    tag: blob.subarray(blob.length - TAG_BYTES),
  };
}

function unwrap(key: MasterKey, blob: ParsedBlob, ctx: [string, string][]): Buffer {
  try {
    const decipher = createDecipheriv("aes-256-gcm", key.material, blob.iv);
    decipher.setAAD(aad(key.keyId, ctx));
    decipher.setAuthTag(blob.tag);
    return Buffer.concat([decipher.update(blob.body), decipher.final()]);
  } catch {
    // Wrong context or altered bytes: KMS does not say which.
    throw new KmsFault("InvalidCiphertextException", "ciphertext does not decrypt under this key and context");
  }
}

function metadata(key: MasterKey): Record<string, unknown> {
  return {
    AWSAccountId: LOCAL_ACCOUNT,
    KeyId: key.keyId,
    Arn: key.arn,
    CreationDate: key.createdAt / 1000,
    Enabled: key.enabled,
    Description: key.description,
    KeyUsage: "ENCRYPT_DECRYPT",
    KeyState: key.enabled ? "Enabled" : "Disabled",
    Origin: "AWS_KMS",
    KeyManager: "CUSTOMER",
    KeySpec: "SYMMETRIC_DEFAULT",
    CustomerMasterKeySpec: "SYMMETRIC_DEFAULT",
    EncryptionAlgorithms: ["SYMMETRIC_DEFAULT"],
  };
}
