import { helpText, parseConfig } from "./config.js";
import { isKvError } from "./errors.js";
import { createLogger, type Logger } from "./log.js";
import { startServer } from "./server.js";
import { SUPERVISED_ENV, startWorkers } from "./supervisor.js";

type Stoppable = { stop(): Promise<void> | void; count(): number };

/** Stops `target` gracefully on the first SIGINT/SIGTERM (or stdin EOF when supervised); exits at once on the second. */
function onStopRequest(log: Logger, target: Stoppable, done: Promise<unknown>): void {
  let requests = 0;
  const request = (reason: string) => {
    requests++;
    if (requests > 1) {
      log.warn("second stop request; exiting now", { reason });
      process.exit(130);
    }
    log.info("stopping: draining connections", { reason, open: target.count() });
    void target.stop();
  };
  process.on("SIGINT", () => request("SIGINT"));
  process.on("SIGTERM", () => request("SIGTERM"));
  if (process.env[SUPERVISED_ENV] === "1") {
    // A worker's stdin is its supervisor's pipe: EOF means stop, including when the supervisor died.
    void (async () => {
      for await (const _ of Bun.stdin.stream()) {
        // Nothing is sent on it.
      }
      request("supervisor gone");
    })();
  }
  void done;
}

/** Entry point of `bun run server`. */
async function main(): Promise<number> {
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(Bun.argv.slice(2), process.env);
  } catch (err) {
    console.error(`kvs: ${isKvError(err) ? err.message : String(err)}`);
    return 2;
  }
  if (config === "help") {
    console.log(helpText());
    return 0;
  }
  const log = createLogger(config.logLevel);

  if (config.workers > 1) {
    let group: Awaited<ReturnType<typeof startWorkers>>;
    try {
      group = await startWorkers(config, log);
    } catch (err) {
      log.error("startup failed", { reason: err instanceof Error ? err.message : String(err) });
      return 1;
    }
    console.log(`kvs listening on ${config.host}:${group.port} workers=${config.workers} ${group.description}`);
    onStopRequest(log, { stop: () => group.stop(), count: () => config.workers }, group.exited);
    const code = await group.exited;
    log.info("stopped");
    return code;
  }

  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(config, log);
  } catch (err) {
    log.error("startup failed", { reason: err instanceof Error ? err.message : String(err) });
    return 1;
  }
  console.log(`kvs listening on ${server.host}:${server.port} ${server.description}`);
  const stopped = Promise.withResolvers<void>();
  onStopRequest(
    log,
    {
      stop: () => server.stop().then(stopped.resolve, stopped.resolve),
      count: () => server.connectionCount,
    },
    stopped.promise,
  );
  await stopped.promise;
  log.info("stopped");
  return 0;
}

process.exit(await main());
