import { join } from "node:path";
import type { Subprocess } from "bun";
import type { Config } from "./config.js";
import { freePort } from "./local/free-port.js";
import { startLocalServices } from "./local/local-services.js";
import type { Logger } from "./log.js";

/** Env var set on worker processes: they stop when the supervisor's pipe closes. */
export const SUPERVISED_ENV = "KV_SUPERVISED";

/** A running group of worker processes. */
export interface WorkerGroup {
  readonly port: number;
  /** The first worker's startup description. */
  readonly description: string;
  /** Settles with an exit code when every worker has exited. */
  readonly exited: Promise<number>;
  /** Asks every worker to stop gracefully. */
  stop(): void;
  /** Passes SIGHUP on to every worker: each re-reads its TLS files. */
  reload(): void;
}

/**
 * Runs `config.workers` server processes on one port with SO_REUSEPORT, so
 * the kernel spreads connections over them, one event loop per core. Local
 * services (DynamoDB Local, the KMS endpoint) run once, here, and the workers
 * share them. Workers stop when this process closes their stdin, which also
 * happens if it dies. If one worker exits on its own the group stops: a
 * supervisor above (ECS, systemd) restarts the whole task.
 */
export async function startWorkers(config: Config, argv: readonly string[], log: Logger): Promise<WorkerGroup> {
  const local = await startLocalServices(config, log);
  const port = config.port === 0 ? await freePort() : config.port;
  // Workers get this process's own flags and environment, then the overrides: a later flag wins.
  const args = [...argv, "--workers", "1", "--port", String(port), "--reuse-port"];
  // Every worker must bind the same HTTP and admin ports, so a "pick a free one" is picked here, once.
  if (config.httpPort !== undefined) args.push("--http-port", String(config.httpPort || (await freePort())));
  if (config.adminPort !== undefined) args.push("--admin-port", String(config.adminPort || (await freePort())));
  if (local.dynamodbEndpoint !== undefined) args.push("--dynamodb-endpoint", local.dynamodbEndpoint);
  if (local.kmsEndpoint !== undefined) args.push("--kms-endpoint", local.kmsEndpoint);
  const env = { ...process.env, [SUPERVISED_ENV]: "1" };
  // A `bun build --compile` binary runs itself; from source, bun runs main.ts.
  const compiled = import.meta.path.startsWith("/$bunfs/");
  const command = compiled ? [process.execPath] : [process.execPath, join(import.meta.dir, "main.ts")];
  const workers: Subprocess<"pipe", "pipe", "inherit">[] = [];
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const w of workers) {
      try {
        w.stdin.end();
      } catch {
        // Already gone.
      }
    }
  };

  const lines: Promise<string>[] = [];
  for (let i = 0; i < config.workers; i++) {
    const w = Bun.spawn([...command, ...args], { env, stdin: "pipe", stdout: "pipe", stderr: "inherit" });
    workers.push(w);
    lines.push(firstLine(w.stdout));
    void w.exited.then((code) => {
      if (!stopping) {
        log.error("worker exited; stopping the group", { pid: w.pid, code });
        stop();
      }
    });
  }
  const exited = Promise.all(workers.map((w) => w.exited)).then(async (codes) => {
    await local.stop();
    return codes.every((c) => c === 0) ? 0 : 1;
  });

  let description: string;
  try {
    const started = await Promise.all(lines);
    description = (started[0] ?? "").replace(/^kvs listening on \S+ /, "");
    if (local.startedDynamo) {
      description = description.replace(/(dynamodb=\S+)/, "$1 (embedded DynamoDB Local, shared)");
    }
    if (local.startedKms) description = description.replace(/(kms=\S+)/, "$1 (embedded local KMS, shared)");
  } catch (err) {
    stop();
    await exited;
    throw err;
  }
  const reload = () => {
    for (const w of workers) if (w.exitCode === null) w.kill("SIGHUP");
  };
  return { port, description, exited, stop, reload };
}

async function firstLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  const reader = stream.getReader();
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("a worker exited before it was listening");
    text += decoder.decode(value, { stream: true });
  }
  // Keep draining so a chatty worker never blocks on a full pipe.
  void (async () => {
    for (;;) {
      const { done } = await reader.read();
      if (done) return;
    }
  })();
  return text.slice(0, text.indexOf("\n"));
}
