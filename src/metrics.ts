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
  readonly #values = new Map<Counter, number>();

  /** Adds `n` to `name`. */
  add(name: Counter, n = 1): void {
    this.#values.set(name, (this.#values.get(name) ?? 0) + n);
  }

  /** Current value of `name`. */
  get(name: Counter): number {
    return this.#values.get(name) ?? 0;
  }

  /** Sum of the KMS call counters. */
  get kmsCalls(): number {
    return this.get(Counter.kmsGenerateDataKey) + this.get(Counter.kmsDecrypt);
  }

  /** Sum of the DynamoDB request counters. */
  get dynamoCalls(): number {
    let total = 0;
    for (const [name, n] of this.#values) if (name.startsWith("dynamodb.")) total += n;
    return total;
  }

  /** A plain copy of every counter. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(this.#values);
  }
}
