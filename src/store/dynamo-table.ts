import {
  CreateTableCommand,
  DescribeTableCommand,
  type DynamoDBClient,
  waitUntilTableExists,
} from "@aws-sdk/client-dynamodb";
import { Attr } from "./item-format.js";

/**
 * Creates `table` with the service's key schema if it does not exist, and
 * waits until it is active. For local endpoints only: on AWS the table belongs
 * to template.yaml, and the service's role may not create tables.
 */
export async function ensureTable(client: DynamoDBClient, table: string): Promise<"created" | "exists"> {
  try {
    await client.send(new DescribeTableCommand({ TableName: table }));
    return "exists";
  } catch (err) {
    if (!(err instanceof Error && err.name === "ResourceNotFoundException")) throw err;
  }
  try {
    await client.send(
      new CreateTableCommand({
        TableName: table,
        AttributeDefinitions: [{ AttributeName: Attr.pk, AttributeType: "B" }],
        KeySchema: [{ AttributeName: Attr.pk, KeyType: "HASH" }],
        BillingMode: "PAY_PER_REQUEST",
      }),
    );
  } catch (err) {
    // Another process created it first.
    if (!(err instanceof Error && err.name === "ResourceInUseException")) throw err;
  }
  await waitUntilTableExists({ client, maxWaitTime: 60, minDelay: 1, maxDelay: 2 }, { TableName: table });
  return "created";
}
