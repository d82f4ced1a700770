import { randomBytes } from "node:crypto";
import { errorMessage } from "../src/wire/errors.js";
import { KvClient, type KvClientOptions } from "./kv-client.js";

/** One verification step's outcome. */
export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  ms: number;
}

type Check = [name: string, run: (c: KvClient, prefix: string) => Promise<string>];

function expectEqual(actual: Uint8Array | undefined, expected: Uint8Array, what: string): void {
  if (actual === undefined) throw new Error(`${what}: not_found`);
  if (!Buffer.from(actual).equals(Buffer.from(expected))) {
    throw new Error(`${what}: ${actual.length} bytes differ from the ${expected.length} sent`);
  }
}

/**
 * Sets (and gets) the burst keeps in flight at once. Each set is one
 * DynamoDB write, so a burst must finish within the server's request
 * deadline (5 s) even on a disk-backed DynamoDB Local, which writes about
 * 200 items a second on a 2-core machine.
 */
const BURST = 500;

const CHECKS: Check[] = [
  [
    "set then get",
    async (c, p) => {
      await c.set(`${p}:hello`, "world");
      expectEqual(await c.get(`${p}:hello`), Buffer.from("world"), "get");
      return "round trip of a short string";
    },
  ],
  [
    "overwrite",
    async (c, p) => {
      await c.set(`${p}:ow`, "first");
      await c.set(`${p}:ow`, "second");
      expectEqual(await c.get(`${p}:ow`), Buffer.from("second"), "get after overwrite");
      return "the second set wins";
    },
  ],
  [
    "not_found",
    async (c, p) => {
      const v = await c.get(`${p}:missing`);
      if (v !== undefined) throw new Error(`expected not_found, got ${v.length} bytes`);
      return "a missing key answers not_found";
    },
  ],
  [
    "value over 4 KB",
    async (c, p) => {
      const big = randomBytes(100 * 1024);
      await c.set(`${p}:big`, big);
      expectEqual(await c.get(`${p}:big`), big, "get");
      return `${big.length} random bytes byte-exact`;
    },
  ],
  [
    "non-UTF-8 bytes",
    async (c, p) => {
      const key = binaryKey(p);
      const value = Buffer.from([0x80, 0x81, 0xff, 0x00, 0xed, 0xa0, 0x80]);
      await c.set(key, value);
      expectEqual(await c.get(key), value, "get");
      return "invalid UTF-8 in key and value round-trips";
    },
  ],
  [
    "pipelined burst",
    async (c, p) => {
      const n = BURST;
      const sets: Promise<unknown>[] = [];
      const gets: Promise<Uint8Array | undefined>[] = [];
      for (let i = 0; i < n; i++) {
        sets.push(c.set(`${p}:burst:${i}`, `value-${i}`));
        gets.push(c.get(`${p}:burst:${i}`));
      }
      await Promise.all(sets);
      const values = await Promise.all(gets);
      values.forEach((v, i) => {
        expectEqual(v, Buffer.from(`value-${i}`), `get ${i}`);
      });
      return `${n} sets and ${n} gets in flight at once, each get saw its set`;
    },
  ],
  [
    "delete and exists",
    async (c, p) => {
      await c.set(`${p}:gone`, "soon");
      const before = await c.exists(`${p}:gone`);
      const first = await c.delete(`${p}:gone`);
      const second = await c.delete(`${p}:gone`);
      const after = await c.get(`${p}:gone`);
      if (!before || !first || second || after !== undefined || (await c.exists(`${p}:gone`))) {
        throw new Error(
          `exists ${before}, delete ${first} then ${second}, get after ${after === undefined ? "none" : "a value"}`,
        );
      }
      return "exists, delete (ok, then not_found), get and exists after it agree";
    },
  ],
  [
    "listing under a prefix",
    async (c, p) => {
      const listed = new Set<string>();
      for await (const key of c.keys({ prefix: `${p}:burst:`, pageSize: 100 }))
        listed.add(new TextDecoder().decode(key));
      // The keys index is eventually consistent: keys set a moment ago may still be missing, never doubled.
      const missing = Array.from({ length: BURST }, (_, i) => `${p}:burst:${i}`).filter((k) => !listed.has(k));
      if (listed.size > BURST) throw new Error(`${listed.size} keys listed under a prefix that has ${BURST}`);
      return `${listed.size} of ${BURST} keys listed in pages of 100 (${missing.length} not yet in the index)`;
    },
  ],
  [
    "clean up",
    async (c, p) => {
      const keys: Uint8Array[] = [];
      for await (const key of c.keys({ prefix: `${p}:` })) keys.push(key);
      const removed = (await Promise.all(keys.map((k) => c.delete(k)))).filter(Boolean).length;
      // Keys the index has not caught up with yet are deleted by name.
      const named: (string | Uint8Array)[] = [`${p}:hello`, `${p}:ow`, `${p}:big`, binaryKey(p)];
      for (let i = 0; i < BURST; i++) named.push(`${p}:burst:${i}`);
      const late = (await Promise.all(named.map((k) => c.delete(k)))).filter(Boolean).length;
      const left = (await Promise.all(named.map((k) => c.exists(k)))).filter(Boolean).length;
      if (left > 0) throw new Error(`${left} keys left after deleting`);
      return `deleted the ${removed + late} keys this run wrote`;
    },
  ],
];

/** A key under the run's prefix that is not UTF-8. */
function binaryKey(prefix: string): Uint8Array {
  return Buffer.concat([Buffer.from(`${prefix}:`), Buffer.from([0xff, 0xfe, 0x00, 0xc3])]);
}

/** Runs every check against a server; each uses keys under a fresh random prefix. */
export async function verify(target: KvClientOptions): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const prefix = `verify:${randomBytes(6).toString("hex")}`;
  await using client = await KvClient.connect(target);
  for (const [name, run] of CHECKS) {
    const start = performance.now();
    try {
      const detail = await run(client, prefix);
      results.push({ name, ok: true, detail, ms: performance.now() - start });
    } catch (err) {
      results.push({
        name,
        ok: false,
        detail: errorMessage(err),
        ms: performance.now() - start,
      });
    }
  }
  return results;
}

/** Renders results as a fixed-width table. */
export function formatResults(results: CheckResult[]): string {
  const width = Math.max(...results.map((r) => r.name.length));
  const lines = results.map(
    (r) => `${r.ok ? "PASS" : "FAIL"}  ${r.name.padEnd(width)}  ${r.ms.toFixed(1).padStart(8)} ms  ${r.detail}`,
  );
  const failed = results.filter((r) => !r.ok).length;
  lines.push("", `${results.length - failed} passed, ${failed} failed`);
  return lines.join("\n");
}
