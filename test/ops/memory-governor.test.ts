import { describe, expect, test } from "bun:test";
import { silentLogger } from "../../src/log.js";
import { type HeapUsage, MemoryGovernor } from "../../src/ops/memory-governor.js";
import { startServer } from "../../src/server.js";
import { testConfig } from "../support/harness.js";

const MiB = 1024 * 1024;

/** A heap and clock the test moves by hand: a collection takes `pauseMs` and leaves `liveAfter`. */
function fakeProcess(heap: number, liveAfter: number, pauseMs = 10) {
  const state = { heap, liveAfter, pauseMs, now: 0, collections: 0 };
  return {
    state,
    usage: (): HeapUsage => ({ heapUsed: state.heap }),
    collect: () => {
      state.collections++;
      state.now += state.pauseMs;
      state.heap = state.liveAfter;
    },
    now: () => state.now,
  };
}

describe("the memory governor's policy", () => {
  test("collects once the heap passes the limit, and not before", () => {
    const p = fakeProcess(40 * MiB, 20 * MiB);
    const governor = new MemoryGovernor({ limitBytes: 48 * MiB, ...p });
    expect(governor.check()).toBe(false);
    p.state.heap = 48 * MiB;
    expect(governor.check()).toBe(false);
    p.state.heap = 49 * MiB;
    expect(governor.check()).toBe(true);
    expect(p.state.collections).toBe(1);
    expect(governor.collections).toBe(1);
    expect(governor.collectingMs).toBe(10);
  });

  test("spends at most its share of the time collecting: a 10 ms collection at 5% waits 190 ms for the next", () => {
    const p = fakeProcess(100 * MiB, 20 * MiB);
    const governor = new MemoryGovernor({ limitBytes: 48 * MiB, maxTimeShare: 0.05, ...p });
    expect(governor.check()).toBe(true);
    p.state.heap = 100 * MiB;
    p.state.now += 189;
    expect(governor.check()).toBe(false);
    p.state.now += 1;
    expect(governor.check()).toBe(true);
    expect(p.state.collections).toBe(2);
  });

  test("leaves a heap that is live, not garbage, to the runtime until it is seen under the limit again", () => {
    // A collection that leaves more than the limit live (a store full of values) frees nothing worth its pause.
    const p = fakeProcess(200 * MiB, 150 * MiB);
    const governor = new MemoryGovernor({ limitBytes: 48 * MiB, ...p });
    expect(governor.check()).toBe(true);
    for (let i = 0; i < 10; i++) {
      p.state.now += 1000;
      p.state.heap = 300 * MiB;
      expect(governor.check()).toBe(false);
    }
    expect(p.state.collections).toBe(1);
    // The data went: the runtime's own collection brought the heap under the limit, and forcing resumes.
    p.state.heap = 30 * MiB;
    p.state.liveAfter = 25 * MiB;
    expect(governor.check()).toBe(false);
    p.state.now += 1000;
    p.state.heap = 60 * MiB;
    expect(governor.check()).toBe(true);
    expect(p.state.collections).toBe(2);
  });

  test("a limit of 0 turns it off: it never looks or collects", () => {
    let looks = 0;
    const governor = new MemoryGovernor({
      limitBytes: 0,
      usage: () => {
        looks++;
        return { heapUsed: 10_000 * MiB };
      },
      collect: () => {
        throw new Error("collected with the governor off");
      },
    });
    expect(governor.enabled).toBe(false);
    expect(governor.check()).toBe(false);
    governor.start(1);
    governor.stop();
    expect(looks).toBe(0);
  });

  test("refuses a negative limit and a time share outside (0, 1]", () => {
    expect(() => new MemoryGovernor({ limitBytes: -1 })).toThrow(RangeError);
    expect(() => new MemoryGovernor({ limitBytes: MiB, maxTimeShare: 0 })).toThrow(RangeError);
    expect(() => new MemoryGovernor({ limitBytes: MiB, maxTimeShare: 1.5 })).toThrow(RangeError);
  });

  test("started, it looks on its own timer and reports each collection with its duration", async () => {
    const p = fakeProcess(100 * MiB, 20 * MiB, 7);
    const governor = new MemoryGovernor({ limitBytes: 48 * MiB, ...p });
    const took = await new Promise<number>((resolve) => governor.start(1, resolve));
    governor.stop();
    expect(took).toBe(7);
  });
});

describe("the memory governor in a server", () => {
  const metric = async (port: number, name: string): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name} `));
    return Number(line?.split(" ")[1] ?? Number.NaN);
  };

  test("with --memory-soft-limit-mib under its heap, the server forces a collection and counts it in /metrics", async () => {
    // This process's heap (the test runner's) is far over 1 MiB, so the first look collects.
    await using server = await startServer(testConfig({ adminPort: 0, memorySoftLimitBytes: MiB }), silentLogger);
    const port = server.adminPort as number;
    const deadline = performance.now() + 10_000;
    let forced = await metric(port, "kvs_forced_gc_total");
    while (forced === 0 && performance.now() < deadline) {
      await new Promise((resolve) => setImmediate(resolve));
      forced = await metric(port, "kvs_forced_gc_total");
    }
    expect(forced).toBeGreaterThanOrEqual(1);
    expect(await metric(port, "kvs_forced_gc_seconds_total")).toBeGreaterThan(0);
  });

  test("by default it is off: the metric is there and stays 0", async () => {
    await using server = await startServer(testConfig({ adminPort: 0 }), silentLogger);
    expect(await metric(server.adminPort as number, "kvs_forced_gc_total")).toBe(0);
  });
});
