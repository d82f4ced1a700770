import { randomBytes } from "node:crypto";
import type { Socket } from "bun";
import { type Config, parseConfig } from "../../src/config.js";
import { silentLogger } from "../../src/log.js";
import { type KvServer, type ServerOverrides, startServer } from "../../src/server.js";
import { FrameDecoder } from "../../src/wire/frame-decoder.js";

/**
 * A config for tests: the server's own defaults (parsed from flags, ignoring
 * the environment), on a free loopback port, with a fresh table, the memory
 * store unless overridden, no periodic sweep and no HTTP gateway (give
 * `httpPort: 0` for one on a free port).
 */
export function testConfig(overrides: Partial<Config> = {}): Config {
  const args = ["--port", "0", "--store", "memory", "--table", `test-${randomBytes(6).toString("hex")}`];
  args.push(
    "--kms-key-id",
    "alias/kvs-test",
    "--region",
    "us-east-1",
    "--sweep-interval-s",
    "0",
    "--log-level",
    "error",
    "--http-port",
    "off",
  );
  const parsed = parseConfig(args, {});
  if (parsed === "help" || parsed === "version") throw new Error("unreachable: no --help or --version given");
  return { ...parsed, ...overrides };
}

/** Starts a server with a silent logger; dispose it with `await using`. */
export function startTestServer(overrides: Partial<Config> = {}, wiring: ServerOverrides = {}): Promise<KvServer> {
  return startServer(testConfig(overrides), silentLogger, wiring);
}

/**
 * A raw TCP connection for sending arbitrary bytes and reading frames back,
 * for tests of what a misbehaving peer gets.
 */
export class RawConnection implements AsyncDisposable {
  readonly #socket: Socket<undefined>;
  readonly #frames: Uint8Array[] = [];
  #waiters: ((f: Uint8Array | null) => void)[] = [];
  #isClosed = false;
  readonly closed: Promise<void>;

  private constructor(socket: Socket<undefined>, closed: Promise<void>) {
    this.#socket = socket;
    this.closed = closed;
  }

  static async open(port: number): Promise<RawConnection> {
    const decoder = new FrameDecoder(256 * 1024 * 1024);
    const closed = Promise.withResolvers<void>();
    let conn: RawConnection | undefined;
    const socket = await Bun.connect<undefined>({
      hostname: "127.0.0.1",
      port,
      socket: {
        data(_s, chunk) {
          decoder.push(chunk, (f) => conn?.deliver(f.slice()));
        },
        close() {
          conn?.markClosed();
          closed.resolve();
        },
        error() {},
      },
    });
    conn = new RawConnection(socket, closed.promise);
    return conn;
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Sends bytes as they are. Returns what the kernel took. */
  send(bytes: Uint8Array): number {
    return this.#socket.write(bytes);
  }

  /** Shuts down the write side (FIN) while still reading. */
  shutdownWrite(): void {
    this.#socket.shutdown(false);
  }

  /** The next response frame body, or null when the connection closed first. */
  next(): Promise<Uint8Array | null> {
    const f = this.#frames.shift();
    if (f !== undefined) return Promise.resolve(f);
    if (this.#isClosed) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  private deliver(frame: Uint8Array): void {
    const w = this.#waiters.shift();
    if (w) w(frame);
    else this.#frames.push(frame);
  }

  private markClosed(): void {
    this.#isClosed = true;
    for (const w of this.#waiters) w(null);
    this.#waiters = [];
  }

  close(): void {
    this.#socket.end();
  }

  /** Closes at once, without a graceful FIN exchange: the peer sees the connection gone. */
  terminate(): void {
    this.#socket.terminate();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.closed;
  }
}
