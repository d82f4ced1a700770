import type { Socket } from "bun";
import { KvClient } from "../client/kv-client.js";
import { FrameDecoder } from "../src/net/frame-decoder.js";
import { SocketWriter } from "../src/net/socket-writer.js";
import { encodeGetRequest } from "../src/protocol/codec.js";

/** One connection of a load driver: `op` runs one request and settles with its answer. */
export interface DriverConnection {
  set(key: Uint8Array, value: Uint8Array): Promise<unknown>;
  get(key: Uint8Array): Promise<unknown>;
  close(): Promise<void>;
}

/** How to talk to one kind of target. */
export interface Driver {
  name: string;
  connect(port: number): Promise<DriverConnection>;
}

/** The service's own client library. */
export const kvsDriver: Driver = {
  name: "kvs",
  async connect(port) {
    const c = await KvClient.connect({ port });
    return { set: (k, v) => c.set(k, v), get: (k) => c.get(k), close: () => c.close() };
  },
};

/**
 * A FIFO request/response connection over raw bytes: `send` writes a request
 * and resolves with the next complete response, as counted by `parse`.
 */
class RawPipeline {
  readonly #writer: SocketWriter;
  readonly #waiters: ((v: unknown) => void)[] = [];
  #head = 0;
  readonly #socket: Socket<undefined>;
  readonly closed = Promise.withResolvers<void>();

  private constructor(socket: Socket<undefined>) {
    this.#socket = socket;
    this.#writer = new SocketWriter(socket);
  }

  static async open(port: number, onData: (chunk: Uint8Array, deliver: () => void) => void): Promise<RawPipeline> {
    let self: RawPipeline | undefined;
    const socket = await Bun.connect<undefined>({
      hostname: "127.0.0.1",
      port,
      socket: {
        data(_s, chunk) {
          onData(chunk, () => self?.deliver());
        },
        drain() {
          self?.drain();
        },
        close() {
          self?.closed.resolve();
        },
      },
    });
    socket.setNoDelay(true);
    self = new RawPipeline(socket);
    return self;
  }

  send(bytes: Uint8Array): Promise<unknown> {
    const { promise, resolve } = Promise.withResolvers<unknown>();
    this.#waiters.push(resolve);
    this.#writer.write(bytes);
    return promise;
  }

  private deliver(): void {
    const w = this.#waiters[this.#head++];
    if (this.#head > 4096 && this.#head * 2 > this.#waiters.length) {
      this.#waiters.splice(0, this.#head);
      this.#head = 0;
    }
    w?.(undefined);
  }

  private drain(): void {
    this.#writer.drain();
  }

  async close(): Promise<void> {
    this.#socket.end();
    await this.closed.promise;
  }
}

/** The echo reference server: same framing, no work. The ceiling of Bun plus loopback. */
export const echoDriver: Driver = {
  name: "echo",
  async connect(port) {
    const decoder = new FrameDecoder(1 << 26);
    const p = await RawPipeline.open(port, (chunk, deliver) => decoder.push(chunk, deliver));
    return {
      set: (k) => p.send(encodeGetRequest(k)),
      get: (k) => p.send(encodeGetRequest(k)),
      close: () => p.close(),
    };
  },
};

const CRLF = "\r\n";
const enc = new TextEncoder();

function resp(parts: Uint8Array[]): Uint8Array {
  const chunks: Uint8Array[] = [enc.encode(`*${parts.length}${CRLF}`)];
  for (const p of parts) chunks.push(enc.encode(`$${p.length}${CRLF}`), p, enc.encode(CRLF));
  return new Uint8Array(Buffer.concat(chunks));
}

const GET = enc.encode("GET");
const SET = enc.encode("SET");

/**
 * Counts complete RESP2 replies in a byte stream (+simple, -error, :integer,
 * $bulk including $-1), which is all GET and SET answer.
 */
class RespCounter {
  #buf: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array, deliver: () => void): void {
    this.#buf = this.#buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#buf, chunk]);
    let pos = 0;
    for (;;) {
      const eol = this.#buf.indexOf(CRLF, pos);
      if (eol < 0) break;
      const type = this.#buf[pos];
      if (type === 0x24 /* $ */) {
        const len = Number(this.#buf.toString("latin1", pos + 1, eol));
        const end = len < 0 ? eol + 2 : eol + 2 + len + 2;
        if (end > this.#buf.length) break;
        pos = end;
      } else {
        pos = eol + 2;
      }
      deliver();
    }
    this.#buf = this.#buf.subarray(pos);
  }
}

/** redis-server over RESP: the reference a KV service is usually measured against. */
export const redisDriver: Driver = {
  name: "redis",
  async connect(port) {
    const counter = new RespCounter();
    const p = await RawPipeline.open(port, (chunk, deliver) => counter.push(chunk, deliver));
    return {
      set: (k, v) => p.send(resp([SET, k, v])),
      get: (k) => p.send(resp([GET, k])),
      close: () => p.close(),
    };
  },
};
