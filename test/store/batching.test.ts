import { describe, expect, test } from "bun:test";
import { Counter, Counters } from "../../src/metrics.js";
import { BatchReader } from "../../src/store/batch-reader.js";
import { BatchWriter } from "../../src/store/batch-writer.js";
import type { DataPlane } from "../../src/store/data-plane.js";
import {
  DynamoCallError,
  type PutItemJson,
  type ScanJson,
  type ScanPage,
  type UpdateItemJson,
  type WriteRequestJson,
} from "../../src/store/data-plane.js";
import type { AttributeMap } from "../../src/store/dynamo-json.js";
import { Semaphore } from "../../src/store/semaphore.js";
import { rejection } from "../support/rejection.js";

/**
 * A scripted stand-in for the data plane, for the batching logic only
 * (integration tests cover the real service). Each call's input is recorded;
 * `reply` decides the answer, in the shape the data client returns.
 */
class ScriptedClient implements DataPlane {
  readonly calls: { name: string; input: Record<string, unknown> }[] = [];
  readonly #waiting: { n: number; resolve: () => void }[] = [];
  constructor(readonly reply: (name: string, input: Record<string, unknown>, n: number) => unknown) {}
  async #send(name: string, input: Record<string, unknown>): Promise<unknown> {
    this.calls.push({ name, input });
    for (const w of this.#waiting.filter((w) => w.n <= this.calls.length)) w.resolve();
    return this.reply(name, input, this.calls.length);
  }
  async batchWriteItem(_table: string, requests: readonly WriteRequestJson[]): Promise<WriteRequestJson[]> {
    return ((await this.#send("BatchWriteItem", { requests })) as WriteRequestJson[] | undefined) ?? [];
  }
  async batchGetItem(_table: string, keys: readonly AttributeMap[], consistentRead: boolean) {
    const out = (await this.#send("BatchGetItem", { keys, consistentRead })) as
      | { items?: AttributeMap[]; unprocessed?: AttributeMap[] }
      | undefined;
    return { items: out?.items ?? [], unprocessed: out?.unprocessed ?? [] };
  }
  async getItem(_table: string, key: AttributeMap) {
    return (await this.#send("GetItem", { key })) as AttributeMap | undefined;
  }
  async putItem(input: PutItemJson) {
    await this.#send("PutItem", { item: input.item });
  }
  async updateItem(input: UpdateItemJson) {
    return (await this.#send("UpdateItem", { key: input.key })) as AttributeMap | undefined;
  }
  async deleteItem(_table: string, key: AttributeMap) {
    return (await this.#send("DeleteItem", { key })) as AttributeMap | undefined;
  }
  async scan(input: ScanJson) {
    return (await this.#send("Scan", { ...input })) as ScanPage;
  }
  /** Resolves once `n` calls have been made. */
  called(n: number): Promise<void> {
    if (this.calls.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push({ n, resolve }));
  }
}

const enc = new TextEncoder();
const pk = (s: string) => ({ pk: { B: enc.encode(s) } });
const fastRetry = { baseDelayMs: 1, maxDelayMs: 2, maxElapsedMs: 200 };

function writer(client: ScriptedClient, counters = new Counters(), maxItems = 25) {
  return new BatchWriter({
    client,
    table: "t",
    counters,
    calls: new Semaphore(4),
    maxItems,
    windowMs: 1,
    retry: fastRetry,
  });
}

function requests(input: Record<string, unknown>): WriteRequestJson[] {
  return (input.requests as WriteRequestJson[] | undefined) ?? [];
}

describe("BatchWriter", () => {
  test("writes issued in one tick go out as batches of at most 25", async () => {
    const client = new ScriptedClient(() => []);
    const w = writer(client);
    await Promise.all(Array.from({ length: 60 }, (_, i) => w.put(pk(`k${i}`))));
    expect(client.calls.map((c) => requests(c.input).length)).toEqual([25, 25, 10]);
  });

  test("unprocessed items are retried until written, and only then acknowledged", async () => {
    const client = new ScriptedClient((_name, input, n) => {
      const reqs = requests(input);
      // The first two calls leave their last item unprocessed.
      return n <= 2 ? reqs.slice(-1) : [];
    });
    const w = writer(client);
    const acked: number[] = [];
    await Promise.all(Array.from({ length: 3 }, (_, i) => w.put(pk(`k${i}`)).then(() => acked.push(i))));
    expect(client.calls.map((c) => requests(c.input).length)).toEqual([3, 1, 1]);
    expect(acked.sort()).toEqual([0, 1, 2]);
  });

  test("items still unprocessed when the retry time is up are failed, not acknowledged", async () => {
    const client = new ScriptedClient((_n, input) => requests(input));
    const w = writer(client);
    expect(await rejection(w.put(pk("stuck")))).toMatchObject({ code: "KV_ERR_STORAGE" });
  });

  test("throttling errors are retried; other errors fail the batch at once", async () => {
    let calls = 0;
    const throttled = new ScriptedClient(() => {
      if (++calls < 3) {
        throw new DynamoCallError("ProvisionedThroughputExceededException", "slow down", {
          status: 400,
          retryable: true,
        });
      }
      return [];
    });
    await writer(throttled).put(pk("a"));
    expect(throttled.calls.length).toBe(3);

    const broken = new ScriptedClient(() => {
      throw new DynamoCallError("ValidationException", "bad", { status: 400, retryable: false });
    });
    expect(await rejection(writer(broken).put(pk("a")))).toMatchObject({ code: "KV_ERR_STORAGE" });
    expect(broken.calls.length).toBe(1);
  });

  test("two writes of one item in one batch collapse to the last, and both are acknowledged with it", async () => {
    const client = new ScriptedClient(() => []);
    const w = writer(client);
    const first = w.put({ ...pk("dup"), v: { B: enc.encode("1") } });
    const second = w.put({ ...pk("dup"), v: { B: enc.encode("2") } });
    await Promise.all([first, second]);
    expect(client.calls.length).toBe(1);
    const sent = requests(client.calls[0]?.input ?? {});
    expect(sent.length).toBe(1);
    expect(new TextDecoder().decode(sent[0]?.put?.v?.B)).toBe("2");
  });

  test("a write of an item already in flight waits for that flight instead of racing it", async () => {
    const gates: (() => void)[] = [];
    const client = new ScriptedClient(() => new Promise((resolve) => gates.push(() => resolve([]))));
    const w = writer(client);
    const first = w.put({ ...pk("k"), v: { B: enc.encode("1") } });
    await client.called(1);
    const second = w.put({ ...pk("k"), v: { B: enc.encode("2") } });
    // Let the writer's window (1 ms) pass: the second write must still not be sent while the first flies.
    await new Promise<void>((resolve) => setTimeout(resolve, 5));
    expect(client.calls.length).toBe(1);
    gates[0]?.();
    await first;
    await client.called(2);
    expect(new TextDecoder().decode(requests(client.calls[1]?.input ?? {})[0]?.put?.v?.B)).toBe("2");
    gates[1]?.();
    await second;
  });

  test("one-item batches use PutItem and DeleteItem", async () => {
    const client = new ScriptedClient(() => undefined);
    const counters = new Counters();
    const w = writer(client, counters, 1);
    await Promise.all([w.put(pk("a")), w.delete(pk("b"))]);
    expect(client.calls.map((c) => c.name).sort()).toEqual(["DeleteItem", "PutItem"]);
    expect(counters.get(Counter.dynamoPutItem)).toBe(1);
  });
});

describe("BatchReader", () => {
  function reader(client: ScriptedClient, maxKeys = 100) {
    return new BatchReader({
      client,
      table: "t",
      counters: new Counters(),
      calls: new Semaphore(4),
      maxKeys,
      windowMs: 1,
      retry: fastRetry,
    });
  }
  const keysOf = (input: Record<string, unknown>) =>
    (input.keys as { pk: { B: Uint8Array } }[]).map((k) => new TextDecoder().decode(k.pk.B));

  test("reads are coalesced, consistent, deduplicated, and unprocessed keys are retried", async () => {
    const client = new ScriptedClient((_n, input, n) => {
      const keys = keysOf(input);
      const found = keys.filter((k) => k !== "missing").map((k) => ({ pk: { B: enc.encode(k) } }));
      if (n === 1) return { items: found.slice(1), unprocessed: [pk(keys[0] as string)] };
      return { items: found };
    });
    const r = reader(client);
    const results = await Promise.all(["a", "b", "a", "missing"].map((k) => r.get(enc.encode(k))));
    expect(results.map((x) => (x ? new TextDecoder().decode(x.pk?.B) : undefined))).toEqual(["a", "b", "a", undefined]);
    expect(keysOf(client.calls[0]?.input ?? {})).toEqual(["a", "b", "missing"]);
    expect(client.calls[0]?.input.consistentRead).toBe(true);
    expect(keysOf(client.calls[1]?.input ?? {})).toEqual(["a"]);
  });

  test("reads one key at a time never share a call or an item, so each caller owns what it gets", async () => {
    const client = new ScriptedClient((_n, input) => ({ ...(input.key as AttributeMap) }));
    const r = reader(client, 1);
    const [a, b] = await Promise.all([r.get(enc.encode("k")), r.get(enc.encode("k"))]);
    expect(client.calls.map((c) => c.name)).toEqual(["GetItem", "GetItem"]);
    expect(a).toEqual(b);
    expect(a).not.toBe(b);
  });

  test("more than 100 concurrent reads split into several calls", async () => {
    const client = new ScriptedClient(() => ({ items: [] }));
    const r = reader(client);
    await Promise.all(Array.from({ length: 250 }, (_, i) => r.get(enc.encode(`k${i}`))));
    expect(client.calls.map((c) => keysOf(c.input).length)).toEqual([100, 100, 50]);
  });
});
