import {
  type AttributeDefinition,
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  type DynamoDBClient,
  type GlobalSecondaryIndex,
  type TableDescription,
  UpdateTableCommand,
  UpdateTimeToLiveCommand,
  waitUntilTableExists,
} from "@aws-sdk/client-dynamodb";
import { Attr, KEYS_INDEX } from "./item-format.js";

const ATTRIBUTES: AttributeDefinition[] = [
  { AttributeName: Attr.pk, AttributeType: "B" },
  { AttributeName: Attr.fmt, AttributeType: "N" },
];

/** The keys-only index of head items; template.yaml declares the same. */
export const KEYS_INDEX_DEFINITION: GlobalSecondaryIndex = {
  IndexName: KEYS_INDEX,
  KeySchema: [
    { AttributeName: Attr.pk, KeyType: "HASH" },
    { AttributeName: Attr.fmt, KeyType: "RANGE" },
  ],
  Projection: { ProjectionType: "KEYS_ONLY" },
};

/** The attribute DynamoDB's TTL deletes by (item-format.ts); template.yaml names the same. */
export const TTL_ATTRIBUTE = Attr.ttl;

/** How long to wait for a table or index to become active, in ms. */
const ACTIVE_TIMEOUT_MS = 120_000;

/**
 * Creates `table` with the service's key schema and keys index if it does
 * not exist, adds the index to a table made before it existed, waits until
 * both are active, and turns on DynamoDB's TTL on {@link TTL_ATTRIBUTE}
 * (expired items then cost no write to delete). For local endpoints only:
 * on AWS the table belongs to template.yaml, and the service's role may not
 * create or change tables.
 */
export async function ensureTable(
  client: DynamoDBClient,
  table: string,
  options: { addIndex: boolean; enableTtl: boolean } = { addIndex: true, enableTtl: true },
): Promise<"created" | "exists" | "indexed"> {
  const outcome = await ensureTableAndIndex(client, table, options);
  if (options.enableTtl) await ensureTtl(client, table);
  return outcome;
}

/** Turns on TTL on {@link TTL_ATTRIBUTE} unless it is on (or being turned on) already. */
async function ensureTtl(client: DynamoDBClient, table: string): Promise<void> {
  const out = await client.send(new DescribeTimeToLiveCommand({ TableName: table }));
  const status = out.TimeToLiveDescription?.TimeToLiveStatus;
  if (status === "ENABLED" || status === "ENABLING") {
    const name = out.TimeToLiveDescription?.AttributeName;
    if (name !== TTL_ATTRIBUTE) {
      throw new Error(
        `table ${table} has TTL on attribute ${JSON.stringify(name)}; this service needs "${TTL_ATTRIBUTE}"`,
      );
    }
    return;
  }
  try {
    await client.send(
      new UpdateTimeToLiveCommand({
        TableName: table,
        TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
      }),
    );
  } catch (err) {
    // Another process is turning it on.
    if (!(err instanceof Error && /already enabled|in progress/i.test(err.message))) throw err;
  }
}

async function ensureTableAndIndex(
  client: DynamoDBClient,
  table: string,
  options: { addIndex: boolean },
): Promise<"created" | "exists" | "indexed"> {
  let description: TableDescription | undefined;
  try {
    description = (await client.send(new DescribeTableCommand({ TableName: table }))).Table;
  } catch (err) {
    if (!(err instanceof Error && err.name === "ResourceNotFoundException")) throw err;
  }
  if (description !== undefined) {
    if (description.GlobalSecondaryIndexes?.some((i) => i.IndexName === KEYS_INDEX)) {
      await indexActive(client, table);
      return "exists";
    }
    if (!options.addIndex) return "exists";
    try {
      await client.send(
        new UpdateTableCommand({
          TableName: table,
          AttributeDefinitions: ATTRIBUTES,
          GlobalSecondaryIndexUpdates: [{ Create: KEYS_INDEX_DEFINITION }],
        }),
      );
    } catch (err) {
      // Another process is adding it.
      if (!(err instanceof Error && err.name === "ResourceInUseException")) throw err;
    }
    await indexActive(client, table);
    return "indexed";
  }
  try {
    await client.send(
      new CreateTableCommand({
        TableName: table,
        AttributeDefinitions: ATTRIBUTES,
        KeySchema: [{ AttributeName: Attr.pk, KeyType: "HASH" }],
        GlobalSecondaryIndexes: [KEYS_INDEX_DEFINITION],
        BillingMode: "PAY_PER_REQUEST",
      }),
    );
  } catch (err) {
    // Another process created it first.
    if (!(err instanceof Error && err.name === "ResourceInUseException")) throw err;
  }
  await waitUntilTableExists({ client, maxWaitTime: 60, minDelay: 1, maxDelay: 2 }, { TableName: table });
  await indexActive(client, table);
  return "created";
}

/** Waits until the keys index is ACTIVE (DynamoDB Local reports CREATING for a moment). */
async function indexActive(client: DynamoDBClient, table: string): Promise<void> {
  const deadline = Date.now() + ACTIVE_TIMEOUT_MS;
  for (let delay = 50; ; delay = Math.min(delay * 2, 2_000)) {
    const out = await client.send(new DescribeTableCommand({ TableName: table }));
    const index = out.Table?.GlobalSecondaryIndexes?.find((i) => i.IndexName === KEYS_INDEX);
    if (index?.IndexStatus === "ACTIVE") return;
    if (Date.now() > deadline) {
      throw new Error(`index ${KEYS_INDEX} of table ${table} is not active after ${ACTIVE_TIMEOUT_MS} ms`);
    }
    await Bun.sleep(delay);
  }
}
