import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { KMSClient } from "@aws-sdk/client-kms";
import type { AwsCredentialIdentityProvider } from "@smithy/types";
import { awsSdkLogger, type Logger } from "./log.js";

/** Settings shared by the SDK clients. */
export interface AwsClientOptions {
  region: string | undefined;
  endpoint: string | undefined;
  /** Static credentials for local endpoints; undefined uses the default credential chain. */
  localCredentials: boolean;
  /**
   * Concurrent HTTP connections per client. Default: 256 on AWS; 32 on local
   * endpoints, because DynamoDB Local's accept backlog is 50 and a burst of
   * connects beyond it stalls in SYN retries.
   */
  maxSockets?: number;
  /** One HTTP attempt that takes longer fails (and may be retried) instead of hanging a request. */
  callTimeoutMs?: number;
  /** Credentials instead of the default chain or the local ones (tests hand out short-lived keys). */
  credentials?: AwsCredentialIdentityProvider;
  /** Where the SDK's own warnings go (see awsSdkLogger); default: nowhere but errors to the console. */
  logger?: Logger;
}

/** Credentials for DynamoDB Local and the local KMS endpoint, which do not check them. */
const LOCAL_CREDENTIALS = { accessKeyId: "local", secretAccessKey: "local" };

/** The connection limit used for `options`. */
export function maxSocketsFor(options: AwsClientOptions): number {
  return options.maxSockets ?? (options.localCredentials ? 32 : 256);
}

function common(options: AwsClientOptions) {
  const agent = { keepAlive: true, maxSockets: maxSocketsFor(options) };
  const logger = options.logger === undefined ? undefined : awsSdkLogger(options.logger);
  return {
    logger,
    region: options.region,
    endpoint: options.endpoint,
    credentials: options.credentials ?? (options.localCredentials ? LOCAL_CREDENTIALS : undefined),
    maxAttempts: 3,
    requestHandler: {
      // Without throwOnRequestTimeout, @smithy/node-http-handler 4.x only logs a warning at requestTimeout.
      requestTimeout: options.callTimeoutMs ?? 3_000,
      throwOnRequestTimeout: true,
      connectionTimeout: Math.min(3_000, options.callTimeoutMs ?? 3_000),
      httpAgent: agent,
      httpsAgent: agent,
      logger,
    },
  };
}

/** A DynamoDB client. */
export function dynamoClient(options: AwsClientOptions): DynamoDBClient {
  return new DynamoDBClient(common(options));
}

/** A KMS client. */
export function kmsClient(options: AwsClientOptions): KMSClient {
  return new KMSClient(common(options));
}

/** Whether `endpoint` is an AWS service endpoint rather than a local stand-in. */
export function isAwsEndpoint(endpoint: string | undefined): boolean {
  if (endpoint === undefined) return true;
  const host = new URL(endpoint).hostname;
  return /\.amazonaws\.com(\.cn)?$/.test(host) || /\.api\.aws$/.test(host);
}
