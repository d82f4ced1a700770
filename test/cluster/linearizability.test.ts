import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { checkHistory, type Op } from "../../bench/linearizability.js";

const set = (value: string, call: number, ret: number, key = "k"): Op => ({ key, kind: "set", value, call, ret });
const get = (value: string | undefined, call: number, ret: number, key = "k"): Op => ({
  key,
  kind: "get",
  value,
  call,
  ret,
});

describe("the linearizability checker", () => {
  test("accepts a sequential history that a register explains", () => {
    expect(
      checkHistory([get(undefined, 0, 1), set("a", 2, 3), get("a", 4, 5), set("b", 6, 7), get("b", 8, 9)]).ok,
    ).toBe(true);
  });

  test("rejects a read of an old value after a newer write completed", () => {
    const verdict = checkHistory([set("a", 0, 1), set("b", 2, 3), get("a", 4, 5)]);
    expect(verdict.ok).toBe(false);
    if (!verdict.ok) expect(verdict.key).toBe("k");
  });

  test("rejects a read that misses a write that completed before it began", () => {
    expect(checkHistory([set("a", 0, 1), get(undefined, 2, 3)]).ok).toBe(false);
  });

  test("rejects a read of a value nobody wrote", () => {
    expect(checkHistory([set("a", 0, 1), get("z", 2, 3)]).ok).toBe(false);
  });

  test("accepts either outcome of a read concurrent with a write", () => {
    expect(checkHistory([set("a", 0, 10), get(undefined, 1, 2)]).ok).toBe(true);
    expect(checkHistory([set("a", 0, 10), get("a", 1, 2)]).ok).toBe(true);
  });

  test("rejects reads that see two concurrent writes in one order and then the other", () => {
    const writes = [set("1", 0, 10), set("2", 0, 10)];
    expect(checkHistory([...writes, get("1", 11, 12), get("2", 13, 14)]).ok).toBe(false);
    expect(checkHistory([...writes, get("1", 5, 6), get("2", 7, 8), get("2", 11, 12)]).ok).toBe(true);
    expect(checkHistory([...writes, get("1", 5, 6), get("2", 7, 8), get("1", 9, 9.5)]).ok).toBe(false);
  });

  test("lets a write of unknown outcome take effect late or never, but not be undone", () => {
    expect(checkHistory([set("a", 0, Number.POSITIVE_INFINITY), get(undefined, 1, 2), get("a", 3, 4)]).ok).toBe(true);
    expect(checkHistory([set("a", 0, Number.POSITIVE_INFINITY), get(undefined, 5, 6)]).ok).toBe(true);
    expect(checkHistory([set("a", 0, Number.POSITIVE_INFINITY), get("a", 1, 2), get(undefined, 3, 4)]).ok).toBe(false);
  });

  test("checks keys independently and names the key that fails", () => {
    const verdict = checkHistory([
      set("a", 0, 1, "x"),
      get("a", 2, 3, "x"),
      set("a", 0, 1, "y"),
      get(undefined, 2, 3, "y"),
    ]);
    expect(verdict).toMatchObject({ ok: false, key: "y" });
  });

  test("starts a key from a known initial value when given one", () => {
    expect(checkHistory([get("seed", 0, 1)], new Map([["k", "seed"]])).ok).toBe(true);
    expect(checkHistory([get("seed", 0, 1)]).ok).toBe(false);
  });

  test("accepts every history made by a real register with each operation taking effect inside its interval", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            write: fc.boolean(),
            start: fc.integer({ min: 0, max: 1000 }),
            length: fc.integer({ min: 0, max: 200 }),
            at: fc.double({ min: 0, max: 1, noNaN: true }),
          }),
          { minLength: 1, maxLength: 25 },
        ),
        (specs) => {
          // Each operation takes effect at one instant inside its interval; replaying them in that order gives the reads.
          const timed = specs.map((s, i) => ({ ...s, i, effect: s.start + s.at * s.length }));
          const byEffect = [...timed].sort((a, b) => a.effect - b.effect);
          let value: string | undefined;
          const ops: Op[] = [];
          for (const s of byEffect) {
            if (s.write) value = `v${s.i}`;
            ops.push({
              key: "k",
              kind: s.write ? "set" : "get",
              value: s.write ? `v${s.i}` : value,
              call: s.start,
              ret: s.start + s.length,
            });
          }
          expect(checkHistory(ops).ok).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});
