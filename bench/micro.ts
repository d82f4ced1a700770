import { randomBytes } from "node:crypto";
import { Bench } from "tinybench";
import { open, seal } from "../src/crypto/envelope.js";
import { DataKeyCache } from "../src/crypto/key-cache.js";
import { decodeRequest, encodeGetOk } from "../src/protocol/codec.js";
import { parseAttributeMap, parseResponse } from "../src/store/dynamo-json.js";
import { itemSize, valueAad } from "../src/store/item-format.js";
import { encodeGetRequest, encodeSetRequest } from "../src/wire/client-codec.js";
import { FrameDecoder } from "../src/wire/frame-decoder.js";

/** A named micro-benchmark case. */
export interface MicroCase {
  name: string;
  fn: () => void | Promise<void>;
}

const enc = new TextEncoder();

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** A frame without its varint length prefix. */
function body(frame: Uint8Array): Uint8Array {
  let p = 0;
  while ((frame[p] as number) & 0x80) p++;
  return frame.subarray(p + 1);
}

/** The micro-benchmark cases: hot-path pieces in isolation, with no I/O. */
export function microCases(): MicroCase[] {
  const key = enc.encode("user:12345:profile");
  const small = new Uint8Array(randomBytes(100));
  const kib = new Uint8Array(randomBytes(1024));
  const burst = concat(Array.from({ length: 1000 }, () => encodeGetRequest(key)));
  const bigFrame = concat(encodeSetRequest(key, new Uint8Array(1024 * 1024)));
  const bigChunks: Uint8Array[] = [];
  for (let i = 0; i < bigFrame.length; i += 64 * 1024) bigChunks.push(bigFrame.subarray(i, i + 64 * 1024));
  const setFrame = body(concat(encodeSetRequest(key, small)));
  const dataKey = new Uint8Array(randomBytes(32));
  const aad = valueAad("kvs", key);
  const sealed = seal(dataKey, kib, aad);
  const cache = new DataKeyCache({
    generate: async () => ({ plaintext: dataKey, wrapped: Uint8Array.of(1) }),
    unwrap: async () => dataKey,
  });
  const noop = () => {};
  const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");
  // A BatchGetItem answer as server-cost's gets meet it: 59 items of a 1 KiB value each.
  const batchAnswer = enc.encode(
    JSON.stringify({
      Responses: {
        kvs: Array.from({ length: 59 }, () => ({
          pk: { B: b64(randomBytes(37)) },
          f: { S: "1" },
          v: { N: "1764806400000123" },
          iv: { B: b64(sealed.iv) },
          c: { B: b64(sealed.ciphertext) },
          s: { B: b64(randomBytes(16)) },
        })),
      },
      UnprocessedKeys: {},
    }),
  );
  const item = {
    pk: { B: key },
    f: { N: "1" },
    v: { N: "1764806400000123" },
    iv: { B: sealed.iv },
    c: { B: sealed.ciphertext },
  };

  return [
    {
      name: "frame-decoder: 1000 get frames in one chunk",
      fn: () => new FrameDecoder(1 << 26).push(burst, noop),
    },
    {
      name: "frame-decoder: 1 MiB frame in 64 KiB chunks",
      fn: () => {
        const d = new FrameDecoder(1 << 26);
        for (const c of bigChunks) d.push(c, noop);
      },
    },
    { name: "codec: decode a 100 B set request", fn: () => void decodeRequest(setFrame) },
    { name: "codec: encode a 100 B get response", fn: () => void encodeGetOk(key, small) },
    { name: "envelope: seal 1 KiB", fn: () => void seal(dataKey, kib, aad) },
    { name: "envelope: open 1 KiB", fn: () => void open(dataKey, sealed, aad) },
    { name: "item-format: value AAD with an expiry", fn: () => void valueAad("kvs", key, 1_764_806_400_000) },
    { name: "item-format: size of a 1 KiB item", fn: () => void itemSize(item) },
    {
      name: "dynamo-json: a BatchGetItem answer of 59 1 KiB items, parsed",
      fn: () => {
        const answer = parseResponse(batchAnswer) as { Responses: { kvs: unknown[] } };
        for (const it of answer.Responses.kvs) parseAttributeMap(it);
      },
    },
    { name: "key-cache: encryption key hit", fn: async () => void (await cache.encryptionKey(1, 1024)) },
  ];
}

/** Runs the cases whose names match `filter`, each for about `timeMs`. */
export async function runMicro(filter: RegExp, timeMs: number): Promise<Record<string, unknown>[]> {
  const bench = new Bench({ time: timeMs, warmupTime: Math.min(200, timeMs), throws: true });
  for (const c of microCases()) if (filter.test(c.name)) bench.add(c.name, c.fn);
  await bench.run();
  return bench.tasks.map((t) => {
    const r = t.result as { throughput?: { mean?: number }; latency?: { p50?: number; p99?: number } } | undefined;
    return {
      case: t.name,
      "ops/s": Math.round(r?.throughput?.mean ?? 0),
      "p50 µs": Number(((r?.latency?.p50 ?? 0) * 1000).toFixed(2)),
      "p99 µs": Number(((r?.latency?.p99 ?? 0) * 1000).toFixed(2)),
    };
  });
}
