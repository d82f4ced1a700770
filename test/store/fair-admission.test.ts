import { describe, expect, test } from "bun:test";
import { FairAdmission } from "../../src/store/fair-admission.js";
import { anError, rejection } from "../support/rejection.js";

/** An operation that runs until the test finishes it; records when it starts. */
function gated(log: string[], name: string) {
  const { promise, resolve } = Promise.withResolvers<void>();
  return {
    finish: resolve,
    run: () => {
      log.push(name);
      return promise;
    },
  };
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

describe("FairAdmission", () => {
  test("a connection with one request waiting is admitted next, ahead of a greedy one's hundred", async () => {
    const admission = new FairAdmission(2);
    const greedy = {};
    const modest = {};
    const log: string[] = [];
    const ops = Array.from({ length: 100 }, (_, i) => gated(log, `greedy${i}`));
    for (const op of ops) void admission.run(greedy, op.run);
    expect(log).toEqual(["greedy0", "greedy1"]);
    const mine = gated(log, "modest");
    void admission.run(modest, mine.run);
    expect(admission.queued).toBe(99);
    // One slot frees: the greedy connection has had its turn, so the modest one goes first.
    ops[0]?.finish();
    await settle();
    expect(log.at(-1)).toBe("modest");
    ops[1]?.finish();
    await settle();
    expect(log.at(-1)).toBe("greedy2");
    expect(admission.active).toBe(2);
  });

  test("connections with nothing running go first, then waiting connections take turns one operation each", async () => {
    const admission = new FairAdmission(1);
    const [a, b, c] = [{}, {}, {}];
    const log: string[] = [];
    const first = gated(log, "first");
    void admission.run(a, first.run);
    const queued = [
      [a, "a1"],
      [a, "a2"],
      [a, "a3"],
      [b, "b1"],
      [b, "b2"],
      [c, "c1"],
    ] as const;
    const ops = queued.map(([owner, name]) => {
      const op = gated(log, name);
      void admission.run(owner, op.run);
      return op;
    });
    first.finish();
    for (const op of ops) {
      await settle();
      op.finish();
    }
    await settle();
    // b and c had nothing running when they began to wait; a had "first".
    expect(log).toEqual(["first", "b1", "c1", "a1", "b2", "a2", "a3"]);
    expect(admission.active).toBe(0);
    expect(admission.queued).toBe(0);
  });

  test("an operation that throws or rejects frees its slot", async () => {
    const admission = new FairAdmission(1);
    expect(
      await rejection(
        admission.run({}, () => {
          throw new Error("boom");
        }),
      ),
    ).toEqual(anError("boom"));
    expect(await rejection(admission.run({}, () => Promise.reject(new Error("no"))))).toEqual(anError("no"));
    expect(await admission.run({}, () => Promise.resolve(7))).toBe(7);
    expect(admission.active).toBe(0);
  });
});
