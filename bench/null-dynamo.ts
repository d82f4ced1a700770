/**
 * A DynamoDB stand-in that costs almost nothing: an in-memory map behind the
 * JSON 1.0 protocol, for the bench scenario that isolates the server's own
 * CPU per operation from DynamoDB Local's speed. It runs in its own process,
 * so its CPU is not the server's.
 *
 * It serves DescribeTable, CreateTable, DescribeTimeToLive, BatchWriteItem, BatchGetItem, PutItem,
 * UpdateItem (the `SET #n = :v` and `REMOVE #n` forms the store writes),
 * GetItem and DeleteItem, and signs every body with `x-amz-crc32`. It does not
 * check signatures or condition expressions, and never throttles: it is a
 * bench instrument, not a DynamoDB. `x-amz-target: Stats` answers the
 * request counts by operation. After `x-amz-target: Hold` it answers the
 * control plane only and holds every other call until `x-amz-target:
 * Release`, so requests wait in the server (the waiting-requests scenario).
 *
 * Run: `bun bench/null-dynamo.ts`; prints "null-dynamo listening on PORT".
 */

type Item = Record<string, { B?: string; N?: string }>;

const items = new Map<string, Item>();
const calls = new Map<string, number>();
const pkOf = (key: Item) => key.pk?.B ?? "";

function answer(body: unknown, status = 200): Response {
  const bytes = new TextEncoder().encode(JSON.stringify(body));
  return new Response(bytes, {
    status,
    headers: { "content-type": "application/x-amz-json-1.0", "x-amz-crc32": String(Bun.hash.crc32(bytes) >>> 0) },
  });
}

const handlers: Record<string, (input: Record<string, unknown>) => unknown> = {
  DescribeTable: (input) => ({
    Table: {
      TableName: input.TableName,
      TableStatus: "ACTIVE",
      KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }],
      // The server checks the keys index is there and active before it serves.
      GlobalSecondaryIndexes: [{ IndexName: "keys", IndexStatus: "ACTIVE" }],
    },
  }),
  CreateTable: (input) => ({ TableDescription: { TableName: input.TableName, TableStatus: "ACTIVE" } }),
  // The server turns TTL on for a local table; this stand-in never deletes anything itself.
  DescribeTimeToLive: () => ({ TimeToLiveDescription: { TimeToLiveStatus: "ENABLED", AttributeName: "ttl" } }),
  BatchWriteItem: (input) => {
    for (const requests of Object.values(input.RequestItems as Record<string, Record<string, Item>[]>)) {
      for (const r of requests) {
        const put = (r.PutRequest as { Item?: Item } | undefined)?.Item;
        if (put) items.set(pkOf(put), put);
        const del = (r.DeleteRequest as { Key?: Item } | undefined)?.Key;
        if (del) items.delete(pkOf(del));
      }
    }
    return { UnprocessedItems: {} };
  },
  BatchGetItem: (input) => {
    const responses: Record<string, Item[]> = {};
    for (const [table, req] of Object.entries(input.RequestItems as Record<string, { Keys: Item[] }>)) {
      const found: Item[] = [];
      for (const k of req.Keys) {
        const item = items.get(pkOf(k));
        if (item) found.push(item);
      }
      responses[table] = found;
    }
    return { Responses: responses, UnprocessedKeys: {} };
  },
  PutItem: (input) => {
    const item = input.Item as Item;
    const old = items.get(pkOf(item));
    items.set(pkOf(item), item);
    return input.ReturnValues === "ALL_OLD" && old ? { Attributes: old } : {};
  },
  UpdateItem: (input) => {
    const key = input.Key as Item;
    const names = input.ExpressionAttributeNames as Record<string, string>;
    const values = input.ExpressionAttributeValues as Item;
    const old = items.get(pkOf(key));
    const item: Item = { ...(old ?? {}), ...key };
    const [setPart = "", removePart = ""] = String(input.UpdateExpression).replace(/^SET /, "").split(" REMOVE ");
    for (const assignment of setPart.split(", ")) {
      const [name = "", expr = ""] = assignment.split(" = ");
      const attr = names[name] ?? name;
      const plain = values[expr];
      // Every assignment the store sends is `#name = :value` (the version too: `:next`).
      if (plain === undefined) throw new Error(`UpdateItem: ${expr} is not a value this stand-in knows`);
      item[attr] = plain;
    }
    for (const name of removePart ? removePart.split(", ") : []) delete item[names[name] ?? name];
    items.set(pkOf(key), item);
    return input.ReturnValues === "ALL_OLD" && old ? { Attributes: old } : {};
  },
  GetItem: (input) => {
    const item = items.get(pkOf(input.Key as Item));
    return item ? { Item: item } : {};
  },
  DeleteItem: (input) => {
    items.delete(pkOf(input.Key as Item));
    return {};
  },
};

/** Calls answered even while holding; the others wait for `Release`. */
const CONTROL_PLANE = new Set(["DescribeTable", "CreateTable", "DescribeTimeToLive"]);
const held: (() => void)[] = [];
let holding = false;

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT ?? 0),
  async fetch(req) {
    const op = (req.headers.get("x-amz-target") ?? "").replace(/^DynamoDB_\d+\./, "");
    // Not a DynamoDB operation: the bench reads the request counts with it.
    if (op === "Stats") return answer(Object.fromEntries(calls));
    if (op === "Hold" || op === "Release") {
      holding = op === "Hold";
      for (const release of held.splice(0)) release();
      return answer({});
    }
    calls.set(op, (calls.get(op) ?? 0) + 1);
    if (holding && !CONTROL_PLANE.has(op)) await new Promise<void>((resolve) => held.push(resolve));
    const handler = handlers[op];
    if (handler === undefined) {
      return answer({ __type: "com.amazonaws.dynamodb.v20120810#UnknownOperationException", message: op }, 400);
    }
    return answer(handler((await req.json()) as Record<string, unknown>));
  },
});
console.log(`null-dynamo listening on ${server.port}`);
