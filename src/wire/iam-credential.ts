/**
 * The IAM credential's form, which the client makes and the server checks:
 * an `sts:GetCallerIdentity` request signed with the caller's AWS
 * credentials (SigV4 in the Authorization header), as Vault's AWS auth
 * method takes it. It travels as one string, `kvs-iam-v1.` and the request
 * as base64url JSON, in `auth_request.iam` over TCP and as an HTTP bearer
 * token (`Authorization: Bearer kvs-iam-v1.…`).
 */

/** The string a credential starts with. */
export const IAM_CREDENTIAL_PREFIX = "kvs-iam-v1.";

/** The header that binds a credential to one server: signed in, it cannot be replayed to a server of another id. */
export const SERVER_ID_HEADER = "x-kvs-server-id";

/** The one request body a credential may carry. */
export const GET_CALLER_IDENTITY_BODY = "Action=GetCallerIdentity&Version=2011-06-15";

/** A signed request, as the credential carries it. */
export interface SignedStsRequest {
  /** Always POST. */
  method: string;
  /** The STS endpoint, e.g. `https://sts.eu-west-1.amazonaws.com/`. */
  url: string;
  /** Every header sent, signed ones included, names in lower case. */
  headers: Record<string, string>;
  body: string;
}

/** Encodes a signed request as a credential string. */
export function encodeIamCredential(request: SignedStsRequest): string {
  return IAM_CREDENTIAL_PREFIX + Buffer.from(JSON.stringify(request)).toString("base64url");
}

/**
 * Decodes a credential string, or says why it is not one (a reason for the
 * caller, naming no secret). Checks shape only: the server checks meaning.
 */
export function decodeIamCredential(text: string): SignedStsRequest | string {
  if (!text.startsWith(IAM_CREDENTIAL_PREFIX)) return `an IAM credential starts with ${IAM_CREDENTIAL_PREFIX}`;
  if (text.length > MAX_IAM_CREDENTIAL_CHARS)
    return `an IAM credential is at most ${MAX_IAM_CREDENTIAL_CHARS} characters`;
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(text.slice(IAM_CREDENTIAL_PREFIX.length), "base64url").toString("utf8"));
  } catch {
    return "the IAM credential is not base64url JSON";
  }
  if (typeof doc !== "object" || doc === null) return "the IAM credential is not an object";
  const { method, url, headers, body } = doc as Record<string, unknown>;
  if (typeof method !== "string" || typeof url !== "string" || typeof body !== "string") {
    return "the IAM credential lacks method, url or body";
  }
  if (typeof headers !== "object" || headers === null || Array.isArray(headers)) {
    return "the IAM credential lacks its headers";
  }
  const lower: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value !== "string") return `the IAM credential's header ${name} is not a string`;
    const key = name.toLowerCase();
    if (Object.hasOwn(lower, key)) return `the IAM credential repeats the header ${key}`;
    lower[key] = value;
  }
  return { method, url, headers: lower, body };
}

/** Longest credential accepted: a signed request with a session token fits in a few KiB. */
export const MAX_IAM_CREDENTIAL_CHARS = 16 * 1024;
