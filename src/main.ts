import { helpText, parseConfig } from "./config.js";
import { isKvError } from "./errors.js";
import { createLogger } from "./log.js";
import { startServer } from "./server.js";

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
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(config, log);
  } catch (err) {
    log.error("startup failed", { reason: err instanceof Error ? err.message : String(err) });
    return 1;
  }
  console.log(`kvs listening on ${server.host}:${server.port} ${server.description}`);

  const stopped = Promise.withResolvers<void>();
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn("second signal; exiting now", { signal });
      process.exit(130);
    }
    log.info("stopping: draining connections", { signal, open: server.connectionCount });
    server.stop().then(stopped.resolve, stopped.resolve);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  await stopped.promise;
  log.info("stopped");
  return 0;
}

process.exit(await main());
