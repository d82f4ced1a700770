import pkg from "../package.json" with { type: "json" };
import { type Config, isAwsMode, parseConfig } from "./config.js";
import { helpText } from "./flags.js";
import { portFree } from "./local/free-port.js";
import { createLogger, type Logger } from "./log.js";
import { ensurePortFree } from "./net/listener.js";
import { loadTlsMaterial } from "./net/tls-material.js";
import { startServer } from "./server.js";
import { SUPERVISED_ENV, startWorkers } from "./supervisor.js";
import { errorMessage, isKvError } from "./wire/errors.js";

const VERSION: string = pkg.version;

/** A second stop signal this soon after the first is the same request (Ctrl-C reaches `bun run` and the server both). */
const SAME_SIGNAL_MS = 1_000;

/** A started server or worker group, as `main` drives it. */
interface Running {
  /** The startup line. */
  line: string;
  /** Starts the graceful stop. */
  stop(): void;
  /** Re-reads the TLS files (SIGHUP). */
  reload(): void;
  /** Open connections (workers: the worker count), for the stop log line. */
  count(): number;
  /** Settles with the exit code once everything has stopped. */
  exited: Promise<number>;
}

/** The admin port the client's `health`, `ready` and `admin` commands use unless told otherwise. */
const LOCAL_ADMIN_PORT = 7071;

/**
 * In local mode with no admin port asked for, the client's default one on
 * loopback, so the quick start's `bun run client health` works; when that
 * port is taken (another local server), none, with a warning.
 */
async function withLocalAdmin(config: Config, log: Logger): Promise<Config> {
  if (!config.adminPortDefaulted || config.adminPort !== undefined || isAwsMode(config) || config.reusePort) {
    return config;
  }
  const clashes = config.port === LOCAL_ADMIN_PORT || config.httpPort === LOCAL_ADMIN_PORT;
  if (clashes || !(await portFree(LOCAL_ADMIN_PORT))) {
    log.warn(`admin port 127.0.0.1:${LOCAL_ADMIN_PORT} is taken; starting without one (give --admin-port N)`);
    return config;
  }
  return { ...config, adminPort: LOCAL_ADMIN_PORT, adminHost: "127.0.0.1" };
}

async function start(config: Config, argv: readonly string[], log: Logger): Promise<Running> {
  config = await withLocalAdmin(config, log);
  // Workers share the port on purpose (SO_REUSEPORT); everyone else learns at once that it is taken.
  if (!config.reusePort) {
    if (config.port !== 0) ensurePortFree(config.host, config.port);
    if (config.adminPort) ensurePortFree(config.adminHost, config.adminPort, "admin");
    if (config.httpPort) ensurePortFree(config.host, config.httpPort, "HTTP");
  }
  if (config.workers > 1) {
    // A bad certificate fails here, before local services and workers start (startServer checks it
    // first thing itself, so a single process reads the files once).
    if (config.tls !== undefined) loadTlsMaterial(config.tls);
    const group = await startWorkers(config, argv, log);
    return {
      line: `kvs listening on ${config.host}:${group.port} workers=${config.workers} ${group.description}`,
      stop: () => group.stop(),
      reload: () => group.reload(),
      count: () => config.workers,
      exited: group.exited,
    };
  }
  const server = await startServer(config, log);
  const exited = Promise.withResolvers<number>();
  return {
    line: `kvs listening on ${server.host}:${server.port}${server.tls === undefined ? "" : ` ${server.tls}`}${server.httpPort === undefined ? "" : ` http=${server.host}:${server.httpPort}`}${server.adminPort === undefined ? "" : ` admin=${config.adminHost}:${server.adminPort}`} ${server.description}`,
    reload: () => {
      if (config.tls !== undefined) {
        try {
          server.reloadTls();
        } catch (err) {
          log.error("TLS reload failed; still serving the previous certificate", { reason: errorMessage(err) });
        }
      }
      try {
        server.reloadAuth();
      } catch (err) {
        log.error("access policy or token reload failed; still applying the previous ones", {
          reason: errorMessage(err),
        });
      }
    },
    stop: () => {
      void server.stop().then(
        () => exited.resolve(0),
        () => exited.resolve(0),
      );
    },
    count: () => server.connectionCount,
    exited: exited.promise,
  };
}

/**
 * Stops `target` gracefully on the first SIGINT/SIGTERM (or stdin EOF when
 * supervised); exits at once on a second one, unless it came within
 * {@link SAME_SIGNAL_MS}: Ctrl-C signals the whole process group and `bun run`
 * forwards it too, so one keypress arrives twice.
 */
function onStopRequest(log: Logger, target: Running): void {
  let first = 0;
  const request = (reason: string) => {
    const now = Date.now();
    if (first !== 0) {
      if (now - first < SAME_SIGNAL_MS) {
        log.debug("stop request repeated; already draining", { reason });
        return;
      }
      log.warn("second stop request; exiting now", { reason });
      process.exit(130);
    }
    first = now;
    log.info("stopping: draining connections", { reason, open: target.count() });
    target.stop();
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
}

/** Whether SIGHUP has authentication files to re-read. */
function reloadsAuth(config: Config): boolean {
  return config.auth.policyFile !== undefined || config.auth.tokensFile !== undefined;
}

/** Entry point of `bun run server`. */
async function main(): Promise<number> {
  const argv = Bun.argv.slice(2);
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(argv, process.env);
  } catch (err) {
    console.error(`kvs: ${isKvError(err) ? err.message : String(err)}`);
    return 2;
  }
  if (config === "help") {
    console.log(helpText());
    return 0;
  }
  if (config === "version") {
    console.log(`kvs ${VERSION}`);
    return 0;
  }
  const log = createLogger(config.logLevel, undefined, config.logFormat);
  let running: Running;
  try {
    running = await start(config, argv, log);
  } catch (err) {
    log.error("startup failed", { reason: errorMessage(err) });
    return 1;
  }
  // Handlers first, then the line: whoever waits for the line may signal at once.
  onStopRequest(log, running);
  // SIGHUP re-reads the certificate (certbot and cert-manager rotate files in place). Without TLS it keeps
  // its default meaning: a closed terminal stops the server.
  if (config.tls !== undefined || reloadsAuth(config)) process.on("SIGHUP", () => running.reload());
  console.log(running.line);
  const code = await running.exited;
  log.info("stopped");
  return code;
}

process.exit(await main());
