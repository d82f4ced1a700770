/** Names of the call and connection counters. Tests read them; the bench counts from outside the process. */
export const Counter = {
  kmsGenerateDataKey: "kms.GenerateDataKey",
  kmsDecrypt: "kms.Decrypt",
  dynamoGetItem: "dynamodb.GetItem",
  dynamoPutItem: "dynamodb.PutItem",
  dynamoDeleteItem: "dynamodb.DeleteItem",
  dynamoBatchGetItem: "dynamodb.BatchGetItem",
  dynamoBatchWriteItem: "dynamodb.BatchWriteItem",
  dynamoScan: "dynamodb.Scan",
  connectionsOpened: "connections.opened",
  connectionsClosed: "connections.closed",
  requests: "requests",
  protocolErrors: "protocol.errors",
  bytesIn: "bytes.in",
  bytesOut: "bytes.out",
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

  /** A copy of every counter that is not zero. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.#values).filter(([, n]) => n !== 0));
  }
}
