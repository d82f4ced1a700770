import { describe, expect, test } from "bun:test";
import { ByteBudget } from "../../src/net/byte-budget.js";

/** A participant that records when the budget wakes it. */
function waiter(name: string, woken: string[]) {
  return { who: { name }, wake: () => woken.push(name) };
}

describe("ByteBudget", () => {
  test("below the limit everyone is admitted and nobody holds the budget", () => {
    const budget = new ByteBudget(100);
    budget.add(99);
    expect(budget.admit({}, () => {})).toBe(true);
    expect(budget.holder).toBeNull();
  });

  test("at the limit the first to ask finishes its frame past it, and the others wait in arrival order", async () => {
    const woken: string[] = [];
    const budget = new ByteBudget(100);
    const [a, b, c] = [waiter("a", woken), waiter("b", woken), waiter("c", woken)];
    budget.add(100);
    expect(budget.admit(a.who, a.wake)).toBe(true);
    expect(budget.holder).toBe(a.who);
    expect(budget.admit(a.who, a.wake)).toBe(true);
    expect(budget.admit(b.who, b.wake)).toBe(false);
    expect(budget.admit(c.who, c.wake)).toBe(false);
    expect(budget.waiting).toBe(2);
    // The holder's frame is done: the oldest waiter takes over, the other still waits.
    budget.release(a.who);
    await Promise.resolve();
    expect(woken).toEqual(["b"]);
    expect(budget.holder).toBe(b.who);
    expect(budget.waiting).toBe(1);
  });

  test("falling below the limit wakes every waiter", async () => {
    const woken: string[] = [];
    const budget = new ByteBudget(100);
    const [a, b, c] = [waiter("a", woken), waiter("b", woken), waiter("c", woken)];
    budget.add(150);
    budget.admit(a.who, a.wake);
    budget.admit(b.who, b.wake);
    budget.admit(c.who, c.wake);
    budget.add(-40);
    await Promise.resolve();
    expect(woken).toEqual([]);
    budget.add(-20);
    await Promise.resolve();
    expect(woken.sort()).toEqual(["b", "c"]);
    expect(budget.waiting).toBe(0);
  });

  test("a holder that keeps others waiting past the hold limit is evicted, and the oldest waiter takes over", async () => {
    const woken: string[] = [];
    const budget = new ByteBudget(100, 20);
    const [a, b] = [waiter("a", woken), waiter("b", woken)];
    const evicted = Promise.withResolvers<void>();
    budget.add(100);
    expect(budget.admit(a.who, a.wake, () => evicted.resolve())).toBe(true);
    expect(budget.admit(b.who, b.wake)).toBe(false);
    await evicted.promise;
    await Promise.resolve();
    expect(budget.holder).toBe(b.who);
    expect(woken).toEqual(["b"]);
  });

  test("a waiter that closes is forgotten", () => {
    const budget = new ByteBudget(10);
    budget.add(10);
    const a = {};
    const b = {};
    budget.admit(a, () => {});
    budget.admit(b, () => {});
    budget.release(b);
    expect(budget.waiting).toBe(0);
    expect(budget.holder).toBe(a);
  });

  test("a limit below one byte is refused", () => {
    expect(() => new ByteBudget(0)).toThrow(RangeError);
  });
});
