import { Database } from "bun:sqlite";
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CreateTableCommand, GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { dynamoClient } from "../../src/aws-clients.js";
import { SHARED_DB_FILE, startDynamoDbLocal } from "../../src/local/dynamodb-local.js";

// Starts DynamoDB Local twice; this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "kvs-ddb-local-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("DynamoDB Local on disk (local mode)", () => {
  test("its database is in write-ahead-log mode from the first start, and what it stored is there after a restart", async () => {
    const dataDir = join(dir, "data");
    const item = { pk: { S: "k" }, v: { S: "kept" } };
    {
      await using ddb = await startDynamoDbLocal({ dataDir });
      const client = dynamoClient({ region: "us-east-1", endpoint: ddb.endpoint, localCredentials: true });
      await client.send(
        new CreateTableCommand({
          TableName: "wal-test",
          BillingMode: "PAY_PER_REQUEST",
          AttributeDefinitions: [{ AttributeName: "pk", AttributeType: "S" }],
          KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }],
        }),
      );
      await client.send(new PutItemCommand({ TableName: "wal-test", Item: item }));
      client.destroy();
    }
    const db = new Database(join(dataDir, "dynamodb", SHARED_DB_FILE), { readonly: true });
    try {
      expect(db.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    } finally {
      db.close();
    }
    await using ddb = await startDynamoDbLocal({ dataDir });
    const client = dynamoClient({ region: "us-east-1", endpoint: ddb.endpoint, localCredentials: true });
    const got = await client.send(new GetItemCommand({ TableName: "wal-test", Key: { pk: { S: "k" } } }));
    client.destroy();
    expect(got.Item).toEqual(item);
  });
});
