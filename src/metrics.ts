/** Names of the backend call counters. The bench and tests read these. */
export const Counter = {
  kmsGenerateDataKey: "kms.GenerateDataKey",
  kmsDecrypt: "kms.Decrypt",
  dynamoGetItem: "dynamodb.GetItem",
  dynamoPutItem: "dynamodb.PutItem",
  dynamoDeleteItem: "dynamodb.DeleteItem",
  dynamoBatchGetItem: "dynamodb.BatchGetItem",
  dynamoBatchWriteItem: "dynamodb.BatchWriteItem",
  dynamoQuery: "dynamodb.Query",
  dynamoScan: "dynamodb.Scan",
  dynamoUpdateItem: "dynamodb.UpdateItem",
  connectionsOpened: "connections.opened",
  connectionsClosed: "connections.closed",
  requests: "requests",
  protocolErrors: "protocol.errors",
} as const;
export type Counter = (typeof Counter)[keyof typeof Counter];

/** Monotonic counters of backend calls and connection events. */
export class Counters {
  // A plain object with every counter present: increments on the hot path are property writes.
  readonly #values: Record<Counter, number> = Object.fromEntries(Object.values(Counter).map((c) => [c, 0])) as Record<
    Counter,
    number
  >;

  /** Adds `n` to `name`. */
  add(name: Counter, n = 1): void {
    this.#values[name] += n;
  }

  /** Current value of `name`. */
  get(name: Counter): number {
    return this.#values[name];
  }

  /** Sum of the KMS call counters. */
  get kmsCalls(): number {
    return this.get(Counter.kmsGenerateDataKey) + this.get(Counter.kmsDecrypt);
  }

  /** Sum of the DynamoDB request counters. */
  get dynamoCalls(): number {
    let total = 0;
    for (const [name, n] of Object.entries(this.#values)) if (name.startsWith("dynamodb.")) total += n;
    return total;
  }

  /** A copy of every counter that is not zero. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.#values).filter(([, n]) => n !== 0));
  }
}
