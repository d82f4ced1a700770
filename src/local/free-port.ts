import { createServer } from "node:net";

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for child processes
 * that cannot bind port 0 themselves. Callers retry on a lost race.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Whether `port` on 127.0.0.1 can be bound now, exclusively: a port another
 * process holds, even with SO_REUSEPORT (as HAProxy binds), cannot.
 */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", () => resolve(false));
    srv.listen({ port, host: "127.0.0.1", exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** Whether something accepts TCP connections on `host:port` now. */
export function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s) {
          s.end();
          resolve(true);
        },
        connectError() {
          resolve(false);
        },
        data() {},
      },
    }).catch(() => resolve(false));
  });
}

/** Resolves once something accepts TCP connections on `host:port`, or rejects after `timeoutMs`. */
export async function waitForPort(host: string, port: number, timeoutMs: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 20;
  for (;;) {
    if (await canConnect(host, port)) return;
    if (!alive()) throw new Error("process exited before it accepted connections");
    if (Date.now() > deadline)
      throw new Error(`nothing accepted connections on ${host}:${port} within ${timeoutMs} ms`);
    await Bun.sleep(delay);
    delay = Math.min(delay * 2, 250);
  }
}
