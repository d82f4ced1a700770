import { createHash, createHmac } from "node:crypto";
import { ErrorCode, errorMessage, KvError } from "../src/wire/errors.js";
import {
  encodeIamCredential,
  GET_CALLER_IDENTITY_BODY,
  SERVER_ID_HEADER,
  type SignedStsRequest,
} from "../src/wire/iam-credential.js";
import type { ClientAuth } from "./options.js";

/**
 * `kvs-client/iam`: authenticate with the caller's AWS identity, as Vault's
 * AWS auth method and EKS's aws-iam-authenticator do. The client signs an
 * `sts:GetCallerIdentity` request with its own credentials, binding the
 * server's id into the signature, and sends the signed request; the server
 * has STS check it and learns the caller's ARN. No secret leaves the client,
 * and the signed request works only at servers of that id, for 15 minutes.
 *
 * Signing is SigV4 on node:crypto. Credentials come from `credentials`, or
 * else from the AWS SDK's default chain (environment, SSO, ECS task role,
 * instance role), which needs the optional peer dependency
 * `@aws-sdk/credential-provider-node`; a service that passes its own
 * credentials, or uses tokens, installs nothing from AWS.
 */

/** AWS credentials, as the SDK's providers give them. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** When temporary credentials expire. */
  expiration?: Date;
}

/** Settings of {@link iamAuth}. */
export interface IamAuthOptions {
  /** The server's `--iam-server-id`. */
  serverId: string;
  /** The region of the STS endpoint to sign for; one of the server's `--iam-regions`. */
  region: string;
  /** The STS endpoint, when not `https://sts.REGION.amazonaws.com/` (a VPC endpoint the server allows). */
  endpoint?: string;
  /** Credentials, or a provider of them; default: the AWS SDK's default chain. */
  credentials?: AwsCredentials | (() => Promise<AwsCredentials>);
  /** The clock, for tests. */
  now?: () => Date;
}

/** How long a signed credential is reused across connections: well within the 15 minutes servers accept. */
const REUSE_MS = 5 * 60 * 1000;

/**
 * An `auth` option for {@link KvClient.connect} (and `reconnect`) that
 * proves the caller's AWS identity. One signed credential is reused by
 * every connection for five minutes (servers then answer reconnects from
 * their cache, without asking STS), and signed afresh after that or when
 * the credentials are about to expire.
 */
export function iamAuth(options: IamAuthOptions): ClientAuth {
  const now = options.now ?? (() => new Date());
  let cached: { credential: string; until: number } | undefined;
  let provider: (() => Promise<AwsCredentials>) | undefined;
  return {
    credential: async () => {
      const at = now();
      if (cached !== undefined && cached.until > at.getTime()) return cached.credential;
      provider ??= await credentialProvider(options.credentials);
      let creds: AwsCredentials;
      try {
        creds = await provider();
      } catch (err) {
        throw new KvError(ErrorCode.Config, `no AWS credentials to sign an IAM credential with: ${errorMessage(err)}`, {
          cause: err,
        });
      }
      const credential = encodeIamCredential(signGetCallerIdentity(options, creds, at));
      const expires = creds.expiration?.getTime() ?? Number.POSITIVE_INFINITY;
      cached = { credential, until: Math.min(at.getTime() + REUSE_MS, expires - 60_000) };
      return credential;
    },
  };
}

async function credentialProvider(given: IamAuthOptions["credentials"]): Promise<() => Promise<AwsCredentials>> {
  if (typeof given === "function") return given;
  if (given !== undefined) return async () => given;
  let chain: { defaultProvider: () => () => Promise<AwsCredentials> };
  try {
    chain = (await import("@aws-sdk/credential-provider-node")) as unknown as typeof chain;
  } catch (err) {
    throw new KvError(
      ErrorCode.Config,
      "iamAuth without credentials uses the AWS SDK's default chain: npm install @aws-sdk/credential-provider-node, or pass credentials",
      { cause: err },
    );
  }
  return chain.defaultProvider();
}

const sha256Hex = (data: string) => createHash("sha256").update(data).digest("hex");
const hmac = (key: string | Buffer, data: string) => createHmac("sha256", key).update(data).digest();

/** The AWS date format: `20261203T165332Z`. */
function amzDate(at: Date): string {
  return at
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
}

/**
 * Signs a GetCallerIdentity POST with SigV4, the server id in the signed
 * headers. Exported for tests; {@link iamAuth} is the API.
 */
export function signGetCallerIdentity(
  options: Pick<IamAuthOptions, "serverId" | "region" | "endpoint">,
  creds: AwsCredentials,
  at: Date,
): SignedStsRequest {
  const url = new URL(options.endpoint ?? `https://sts.${options.region}.amazonaws.com/`);
  const date = amzDate(at);
  const day = date.slice(0, 8);
  const headers: Record<string, string> = {
    host: url.host,
    "content-type": "application/x-www-form-urlencoded; charset=utf-8",
    "x-amz-date": date,
    [SERVER_ID_HEADER]: options.serverId,
  };
  if (creds.sessionToken !== undefined) headers["x-amz-security-token"] = creds.sessionToken;
  const names = Object.keys(headers).sort();
  const signedHeaders = names.join(";");
  const canonical = [
    "POST",
    url.pathname,
    "",
    ...names.map((n) => `${n}:${(headers[n] as string).trim().replace(/\s+/g, " ")}`),
    "",
    signedHeaders,
    sha256Hex(GET_CALLER_IDENTITY_BODY),
  ].join("\n");
  const scope = `${day}/${options.region}/sts/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", date, scope, sha256Hex(canonical)].join("\n");
  const key = hmac(hmac(hmac(hmac(`AWS4${creds.secretAccessKey}`, day), options.region), "sts"), "aws4_request");
  const signature = createHmac("sha256", key).update(toSign).digest("hex");
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
  return { method: "POST", url: url.href, headers, body: GET_CALLER_IDENTITY_BODY };
}
