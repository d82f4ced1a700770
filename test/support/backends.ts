import { afterAll, beforeAll } from "bun:test";
import { randomBytes } from "node:crypto";
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { dynamoClient } from "../../src/aws-clients.js";
import { type DynamoDbLocal, startDynamoDbLocal } from "../../src/local/dynamodb-local.js";
import { LocalKms } from "../../src/local/kms-endpoint.js";

/** DynamoDB Local and the local KMS endpoint, shared by one test file. */
export interface Backends {
  ddb: DynamoDbLocal;
  kms: LocalKms;
  /** An SDK client on the shared DynamoDB Local, for looking at what the server stored. */
  client: DynamoDBClient;
}

/**
 * Starts one in-memory DynamoDB Local and one local KMS for the calling test
 * file (DynamoDB Local takes seconds to start) and stops them after it.
 * Tests isolate themselves with a fresh table each.
 */
export function useBackends(): Backends {
  const backends = {} as Backends;
  beforeAll(async () => {
    backends.ddb = await startDynamoDbLocal();
    backends.kms = LocalKms.start();
    backends.client = dynamoClient({ region: "us-east-1", endpoint: backends.ddb.endpoint, localCredentials: true });
  });
  afterAll(async () => {
    backends.client?.destroy();
    await backends.kms?.stop();
    await backends.ddb?.stop();
  });
  return backends;
}

/** The DynamoDB store on a file's shared endpoints. */
interface OnBackends {
  store: "dynamodb";
  dynamodbEndpoint: string;
  kmsEndpoint: string;
}

/** Server settings on `backends`: the DynamoDB store on the shared endpoints, in `table` when given. */
export function onBackends(backends: Backends): OnBackends;
export function onBackends(backends: Backends, table: string): OnBackends & { table: string };
export function onBackends(backends: Backends, table?: string): OnBackends & { table?: string };
export function onBackends(backends: Backends, table?: string): OnBackends & { table?: string } {
  return {
    store: "dynamodb",
    dynamodbEndpoint: backends.ddb.endpoint,
    kmsEndpoint: backends.kms.endpoint,
    ...(table === undefined ? {} : { table }),
  };
}

/** The two stores a feature is tested on, by name. */
export interface StoreConfigs {
  readonly memory: () => { store: "memory" };
  /** The DynamoDB store on the file's shared endpoints, in a fresh table each call. */
  readonly dynamodb: () => OnBackends & { table: string };
}

/**
 * Server settings for each store, for suites that run the same tests on
 * both: `for (const [name, config] of Object.entries(storeConfigs(backends, "ver")))`.
 * Tables are named `PREFIX-<random>`.
 */
export function storeConfigs(backends: Backends, tablePrefix: string): StoreConfigs {
  return {
    memory: () => ({ store: "memory" }),
    dynamodb: () => onBackends(backends, `${tablePrefix}-${randomBytes(6).toString("hex")}`),
  };
}
