/** Names of the call and connection counters. Tests read them; the bench counts from outside the process. */
export const Counter = {
  kmsGenerateDataKey: "kms.GenerateDataKey",
  kmsDecrypt: "kms.Decrypt",
  dynamoGetItem: "dynamodb.GetItem",
  dynamoPutItem: "dynamodb.PutItem",
  dynamoUpdateItem: "dynamodb.UpdateItem",
  dynamoDeleteItem: "dynamodb.DeleteItem",
  dynamoBatchGetItem: "dynamodb.BatchGetItem",
  dynamoBatchWriteItem: "dynamodb.BatchWriteItem",
  dynamoScan: "dynamodb.Scan",
  connectionsOpened: "connections.opened",
  connectionsClosed: "connections.closed",
  requests: "requests",
  protocolErrors: "protocol.errors",
  tlsHandshakeFailures: "tls.handshake_failures",
  tlsReloads: "tls.reloads",
  tlsReloadFailures: "tls.reload_failures",
  sweeps: "sweep.runs",
  sweepFailures: "sweep.failures",
  sweepDeleted: "sweep.deleted",
  expiredReads: "expiry.expired_reads",
  bytesIn: "bytes.in",
  bytesOut: "bytes.out",
  budgetPauses: "budget.pauses",
  streamedFrames: "frames.streamed",
  forcedCollections: "gc.forced",
  forcedCollectionMicros: "gc.forced_us",
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

  /** Failed backend calls and retries, by `service|operation|kind`: written only on failures, never per request. */
  readonly #outcomes = new Map<string, number>();

  /**
   * Counts a failed backend call (`throttle` or `error`, by the service's
   * operation name) or a retry (by what was retried: `write`, `read`, `delete`...).
   */
  outcome(service: "dynamodb" | "kms", operation: string, kind: "throttle" | "error" | "retry"): void {
    const key = `${service}|${operation}|${kind}`;
    this.#outcomes.set(key, (this.#outcomes.get(key) ?? 0) + 1);
  }

  /** Every {@link outcome} counted so far. */
  *outcomes(): Generator<{ service: string; operation: string; kind: string; count: number }> {
    for (const [key, count] of this.#outcomes) {
      const [service = "", operation = "", kind = ""] = key.split("|");
      yield { service, operation, kind, count };
    }
  }

  /** A copy of every counter that is not zero. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.#values).filter(([, n]) => n !== 0));
  }
}
