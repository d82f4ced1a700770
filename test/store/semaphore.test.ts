import { describe, expect, test } from "bun:test";
import { Semaphore } from "../../src/store/semaphore.js";
import { anError, rejection } from "../support/rejection.js";

describe("Semaphore", () => {
  test("never runs more than its limit at once, and runs waiters in FIFO order", async () => {
    const sem = new Semaphore(3);
    let running = 0;
    let peak = 0;
    const order: number[] = [];
    const gates: (() => void)[] = [];
    const tasks = Array.from({ length: 10 }, (_, i) =>
      sem.run(async () => {
        running++;
        peak = Math.max(peak, running);
        order.push(i);
        await new Promise<void>((resolve) => gates.push(resolve));
        running--;
      }),
    );
    while (gates.length > 0 || order.length < 10) {
      await Promise.resolve();
      const next = gates.shift();
      if (next) next();
    }
    await Promise.all(tasks);
    expect(peak).toBe(3);
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(sem.active).toBe(0);
  });

  test("a task that throws frees its slot", async () => {
    const sem = new Semaphore(1);
    expect(await rejection(sem.run(() => Promise.reject(new Error("boom"))))).toEqual(anError("boom"));
    expect(await sem.run(async () => 42)).toBe(42);
    expect(sem.active).toBe(0);
  });

  test("a limit below one is refused", () => {
    expect(() => new Semaphore(0)).toThrow(RangeError);
  });
});
