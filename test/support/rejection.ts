import { expect } from "bun:test";

/** What a promise that was expected to reject fulfilled with instead: not an Error, and with no `code` or `message`. */
export class DidNotReject {
  constructor(readonly value: unknown) {}
}

/**
 * What `p` rejects with, or a {@link DidNotReject} when it fulfils, for
 * `expect(await rejection(p)).toMatchObject(...)`.
 *
 * Instead of bun's `await expect(p).rejects`, which on bun 1.4.5 spins the
 * CPU without end on a promise that never settles: the test then hangs,
 * past its own timeout, instead of failing. This awaits `p` plainly, so a
 * mechanism that stops answering (a deadline taken out, say) fails its test
 * at the test's timeout.
 */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    return new DidNotReject(await p);
  } catch (err) {
    return err;
  }
}

/** Matches an Error whose message contains `text`, or matches it as a pattern; with neither, any Error. */
export function anError(text?: string | RegExp): unknown {
  if (text === undefined) return expect.any(Error);
  return expect.objectContaining({
    message: typeof text === "string" ? expect.stringContaining(text) : expect.stringMatching(text),
  });
}
