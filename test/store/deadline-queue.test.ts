import { describe, expect, test } from "bun:test";
import { DeadlineQueue } from "../../src/store/deadline-queue.js";

describe("DeadlineQueue", () => {
  test("expires every deadline that falls due, in order, and never one settled first", async () => {
    const queue = new DeadlineQueue(5);
    const expired: string[] = [];
    const third = Promise.withResolvers<void>();
    queue.add(() => expired.push("first"));
    const second = queue.add(() => expired.push("second"));
    queue.add(() => {
      expired.push("third");
      third.resolve();
    });
    expect(queue.size).toBe(3);
    queue.settle(second);
    queue.settle(second);
    expect(queue.size).toBe(2);
    await third.promise;
    // The second fell due before the third: settled, it never expired.
    expect(expired).toEqual(["first", "third"]);
    expect(queue.size).toBe(0);
  });

  test("after the list empties, a deadline added later still expires on time, on the timer left armed", async () => {
    const queue = new DeadlineQueue(5);
    const early = queue.add(() => {
      throw new Error("settled, so never expired");
    });
    queue.settle(early);
    const expired = Promise.withResolvers<number>();
    const added = performance.now();
    queue.add(() => expired.resolve(performance.now() - added));
    expect(await expired.promise).toBeGreaterThanOrEqual(4);
    expect(queue.size).toBe(0);
  });

  test("a settled deadline leaves the list at once, whatever its place: the list holds only what is in progress", () => {
    const queue = new DeadlineQueue(60_000);
    const all = Array.from({ length: 1000 }, () => queue.add(() => {}));
    for (let i = 0; i < all.length; i += 2) queue.settle(all[i] as (typeof all)[number]);
    expect(queue.size).toBe(500);
    for (let i = 1; i < all.length; i += 2) queue.settle(all[i] as (typeof all)[number]);
    expect(queue.size).toBe(0);
  });
});
