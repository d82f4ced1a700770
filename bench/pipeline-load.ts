/**
 * A lean closed-loop load generator, run as its own process so it has a core
 * of its own: `bun bench/pipeline-load.ts PROTOCOL PORT CONNS DEPTH OP MS VALUE_BYTES KEYSPACE`.
 * It prints one JSON line: `{ ops, seconds, p50Ms, p99Ms, errors }`.
 *
 * Built to saturate the fastest target (redis-server), as redis-benchmark -P does:
 * - each connection sends its whole pipeline batch (DEPTH requests) with one
 *   write, from batches built before the run, and sends the next batch once
 *   every reply of the last one has arrived;
 * - replies are counted by walking their framing (varint length prefixes for
 *   kvs and echo, RESP for redis), never decoded;
 * - no Promise, closure or object per request; latency is per batch (the
 *   time from its write to its last reply), kept in a fixed histogram.
 *
 * With `KV_LOAD_TLS_CA` (a PEM file) it speaks TLS, verifying the server as
 * `localhost`; `KV_LOAD_TLS_CERT` and `KV_LOAD_TLS_KEY` add a client
 * certificate. With `KV_LOAD_TOKEN` each kvs connection authenticates with
 * that bearer token first. Sending starts once every handshake (and
 * authentication) is done.
 */
import { encodeAuthRequest, encodeGetRequest, encodeSetRequest } from "../src/wire/client-codec.js";

type Protocol = "kvs" | "echo" | "redis";
const [protocolArg, portArg, connsArg, depthArg, opArg, msArg, valueArg, keyspaceArg] = Bun.argv.slice(2);
const protocol = protocolArg as Protocol;
const port = Number(portArg);
const conns = Number(connsArg);
const depth = Number(depthArg);
const op = opArg as "set" | "get";
const durationMs = Number(msArg);
const valueBytes = Number(valueArg ?? 24);
const keyspace = Number(keyspaceArg ?? 10_000);
if (!["kvs", "echo", "redis"].includes(protocol) || !(port > 0) || !(conns > 0) || !(depth > 0) || !(durationMs > 0)) {
  console.error(
    "usage: bun bench/pipeline-load.ts kvs|echo|redis PORT CONNS DEPTH set|get MS [VALUE_BYTES] [KEYSPACE]",
  );
  process.exit(2);
}

const enc = new TextEncoder();
const value = new Uint8Array(valueBytes).fill(0x61);

function request(i: number): Uint8Array {
  const key = enc.encode(`key:${i % keyspace}`);
  if (protocol === "redis") {
    const parts =
      op === "set" ? ["SET", `key:${i % keyspace}`, "v".repeat(valueBytes)] : ["GET", `key:${i % keyspace}`];
    return enc.encode(`*${parts.length}\r\n${parts.map((p) => `$${p.length}\r\n${p}\r\n`).join("")}`);
  }
  if (op === "set" && protocol === "kvs") return new Uint8Array(Buffer.concat(encodeSetRequest(key, value)));
  // echo answers whatever frame it gets; a get request is a fine small frame.
  return encodeGetRequest(key);
}

/** Batches built up front: BATCHES different ones per connection, cycled. */
const BATCHES = 64;
const batches: Uint8Array[] = [];
for (let b = 0; b < BATCHES; b++) {
  batches.push(new Uint8Array(Buffer.concat(Array.from({ length: depth }, (_, i) => request(b * depth + i)))));
}

/** Counts complete size-delimited frames across chunks. */
class FrameCounter {
  #remaining = 0;
  #prefix = 0;
  #shift = 0;
  #inPrefix = true;
  count(chunk: Uint8Array): number {
    let n = 0;
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      if (this.#inPrefix) {
        const b = chunk[pos++] as number;
        this.#prefix += (b & 0x7f) * 2 ** this.#shift;
        this.#shift += 7;
        if (b < 0x80) {
          this.#inPrefix = false;
          this.#remaining = this.#prefix;
          this.#prefix = 0;
          this.#shift = 0;
          if (this.#remaining === 0) {
            n++;
            this.#inPrefix = true;
          }
        }
      } else {
        const take = Math.min(this.#remaining, end - pos);
        pos += take;
        this.#remaining -= take;
        if (this.#remaining === 0) {
          n++;
          this.#inPrefix = true;
        }
      }
    }
    return n;
  }
}

/** Counts complete RESP2 replies to GET and SET (+simple, -error, :integer, $bulk, $-1) across chunks. */
class RespCounter {
  /** 0: at a reply's type byte; 1: in a line up to CR LF; 2: in a bulk body of `#bulk` bytes plus CR LF. */
  #state = 0;
  #isBulk = false;
  #number = 0;
  #negative = false;
  #bulk = 0;
  #sawCr = false;
  count(chunk: Uint8Array): number {
    let n = 0;
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      if (this.#state === 0) {
        this.#isBulk = chunk[pos++] === 0x24;
        this.#number = 0;
        this.#negative = false;
        this.#sawCr = false;
        this.#state = 1;
      } else if (this.#state === 1) {
        const b = chunk[pos++] as number;
        if (b === 0x0d) this.#sawCr = true;
        else if (b === 0x0a && this.#sawCr) {
          if (this.#isBulk && !this.#negative) {
            this.#bulk = this.#number + 2;
            this.#state = 2;
          } else {
            n++;
            this.#state = 0;
          }
        } else if (this.#isBulk) {
          if (b === 0x2d) this.#negative = true;
          else this.#number = this.#number * 10 + (b - 0x30);
        }
      } else {
        const take = Math.min(this.#bulk, end - pos);
        pos += take;
        this.#bulk -= take;
        if (this.#bulk === 0) {
          n++;
          this.#state = 0;
        }
      }
    }
    return n;
  }
}

/** Batch latencies in 10 µs buckets up to 1 s (the last bucket holds everything slower). */
const histogram = new Uint32Array(100_001);
let ops = 0;
let errors = 0;
let stopping = false;
let open = 0;
const allDone = Promise.withResolvers<void>();

interface State {
  counter: FrameCounter | RespCounter;
  awaiting: number;
  sentAt: number;
  batch: number;
  /** Bytes of the current batch the kernel has not taken yet. */
  unsent: Uint8Array | null;
  /** Waiting for the answer to its auth_request (KV_LOAD_TOKEN). */
  authenticating: boolean;
}

function send(socket: { write(b: Uint8Array): number; end(): void }, s: State): void {
  if (stopping) {
    socket.end();
    return;
  }
  const batch = batches[s.batch++ % BATCHES] as Uint8Array;
  s.awaiting = depth;
  s.sentAt = performance.now();
  const written = socket.write(batch);
  s.unsent = written < batch.length ? batch.subarray(Math.max(0, written)) : null;
}

const tlsCa = process.env.KV_LOAD_TLS_CA;
const tls =
  tlsCa === undefined
    ? undefined
    : {
        ca: await Bun.file(tlsCa).text(),
        serverName: "localhost",
        rejectUnauthorized: true,
        ...(process.env.KV_LOAD_TLS_CERT === undefined
          ? {}
          : {
              cert: await Bun.file(process.env.KV_LOAD_TLS_CERT).text(),
              key: await Bun.file(process.env.KV_LOAD_TLS_KEY as string).text(),
            }),
      };
/** Settles when every TLS handshake is done: Bun drops bytes written before one ends. */
let handshakes = tls === undefined ? conns : 0;
const allShaken = Promise.withResolvers<void>();
if (handshakes === conns) allShaken.resolve();
const token = process.env.KV_LOAD_TOKEN;
const authFrame = token === undefined ? undefined : encodeAuthRequest({ token });
/** Settles when every connection has authenticated (at once without KV_LOAD_TOKEN). */
let authenticated = authFrame === undefined ? conns : 0;
const allAuthenticated = Promise.withResolvers<void>();
if (authenticated === conns) allAuthenticated.resolve();

const sockets = await Promise.all(
  Array.from({ length: conns }, () =>
    Bun.connect<State>({
      hostname: "127.0.0.1",
      port,
      ...(tls === undefined ? {} : { tls }),
      data: undefined as unknown as State,
      socket: {
        handshake(_socket, success, authorizationError) {
          if (!success || authorizationError !== null) {
            console.error(`TLS handshake failed: ${authorizationError?.message ?? "unknown"}`);
            process.exit(1);
          }
          if (++handshakes === conns) allShaken.resolve();
        },
        open(socket) {
          socket.setNoDelay(true);
          socket.data = {
            counter: protocol === "redis" ? new RespCounter() : new FrameCounter(),
            awaiting: 0,
            sentAt: 0,
            batch: Math.floor(Math.random() * BATCHES),
            unsent: null,
            authenticating: false,
          };
          open++;
        },
        data(socket, chunk) {
          const s = socket.data;
          if (s.authenticating) {
            // auth_response{ok}: the envelope's type 14, then field 15 holding error 1.
            if (chunk[1] !== 0x08 || chunk[2] !== 14 || chunk[3] !== 0x7a || chunk[5] !== 0x08 || chunk[6] !== 1) {
              console.error("KV_LOAD_TOKEN was refused by the server");
              process.exit(1);
            }
            s.authenticating = false;
            if (++authenticated === conns) allAuthenticated.resolve();
            return;
          }
          const n = s.counter.count(chunk);
          s.awaiting -= n;
          if (!stopping) ops += n;
          if (s.awaiting <= 0) {
            if (!stopping) {
              const bucket = Math.min(((performance.now() - s.sentAt) * 100) | 0, histogram.length - 1);
              histogram[bucket] = (histogram[bucket] as number) + 1;
            }
            send(socket, s);
          }
        },
        drain(socket) {
          const s = socket.data;
          if (s.unsent === null) return;
          const written = socket.write(s.unsent);
          s.unsent = written < s.unsent.length ? s.unsent.subarray(Math.max(0, written)) : null;
        },
        close() {
          if (!stopping) errors++;
          if (--open === 0) allDone.resolve();
        },
        error() {
          errors++;
        },
      },
    }),
  ),
);

await allShaken.promise;
if (authFrame !== undefined) {
  for (const socket of sockets) {
    socket.data.authenticating = true;
    socket.write(authFrame);
  }
}
await allAuthenticated.promise;
const started = performance.now();
for (const socket of sockets) send(socket, socket.data);
await Bun.sleep(durationMs);
const seconds = (performance.now() - started) / 1000;
const counted = ops;
stopping = true;
await Promise.race([allDone.promise, Bun.sleep(2_000)]);

function percentile(q: number): number {
  let total = 0;
  for (const c of histogram) total += c;
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i] as number;
    if (seen >= q * total) return i / 100;
  }
  return 0;
}
console.log(JSON.stringify({ ops: counted, seconds, p50Ms: percentile(0.5), p99Ms: percentile(0.99), errors }));
process.exit(0);
