import { createReadStream } from "node:fs";
import { open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { ErrorCode, errorMessage, isKvError } from "../src/wire/errors.js";
import { parseDuration } from "./duration.js";
import { type ClientTlsOptions, KvClient, type KvClientOptions, parseServerUrl } from "./kv-client.js";
import pkg from "./package.json" with { type: "json" };
import { formatResults, verify } from "./verify.js";

/** How the user ran this: `bun run client` from the repository, else the installed `kvs-client`. */
const PROGRAM = /client\/cli\.ts$/.test(process.argv[1] ?? "") ? "bun run client" : "kvs-client";

const USAGE = `Usage: ${PROGRAM} <command> [--host ADDR] [--port N] [--url kvs[s]://HOST:PORT] [--tls ...]

Commands:
  set KEY VALUE        store VALUE under KEY
  set KEY --file PATH  store the bytes of PATH, streamed: never held whole (- reads stdin, held whole)
  set KEY VALUE --if-version N | --if-absent
                       conditional write: prints the new version on stderr; exit 3 on a conflict (nothing written)
  set KEY VALUE --ttl DURATION
                       the value expires after DURATION (30s, 1.5h, 250ms, 7d: units ms, s, m, h, d);
                       without --ttl it never expires, and any expiry the key had is removed
  get KEY [--out PATH] print the value and a newline, as it arrives; exit 1 if not found
                       (--out PATH writes the exact bytes to PATH, --out - to stdout)
  get KEY --version    also print the value's version, and its expiry if it has one, on stderr
                       (the value is read whole)
  --version            (alone) print this program's version
  rm KEY               delete KEY; exit 1 if it was not there
  exists KEY           exit 0 if KEY has a value, 1 if not (prints nothing to stdout)
  keys [--prefix P] [--values] [--base64]
                       print every key, one per line, as pages arrive (so \`keys | head\` works);
                       --values prints KEY<TAB>VALUE; --base64 prints both base64 (safe for any bytes)
  clear --yes          delete every key and print how many; --yes is required
  verify               run the end-to-end checks against a running server
  ping                 end-to-end check: one get through DynamoDB; exit 0 if the server answers it
  health               liveness: GET /healthz on the admin port; exit 0 on 200 (never touches DynamoDB)
  ready                readiness: GET /readyz on the admin port; exit 0 on 200
  admin rotate-key     make a new branch-key version active (POST /admin/rotate-key on the admin port)
                       and print its number; servers sharing the table adopt it within a minute

Flags:
  --host ADDR   server address (default 127.0.0.1, env KV_HOST)
  --port N      server port (default 7070, env KV_PORT)
  --url URL     server as kvs://HOST[:PORT] or, over TLS, kvss://HOST[:PORT] (port 7443); instead of --host/--port
                (env KV_URL)
  --tls         speak TLS (implied by kvss:// and by the flags below); trusts the system's CAs unless --tls-ca
  --tls-ca FILE         PEM CA bundle that signed the server's certificate (env KV_CLIENT_TLS_CA)
  --tls-cert FILE       PEM client certificate, for servers started with --tls-ca (env KV_CLIENT_TLS_CERT)
  --tls-key FILE        PEM key of --tls-cert (env KV_CLIENT_TLS_KEY)
  --tls-server-name N   name the server's certificate must carry, when it is not the host
  --token TOKEN   authenticate with a bearer token of the server's --tokens-file (env KV_TOKEN; the
                  variable keeps it out of the process list)
  --iam SERVER_ID authenticate as your AWS identity (the default credential chain) to a server started
                  with --iam-server-id SERVER_ID (env KV_IAM); signs for --region (env AWS_REGION, default
                  us-east-1)
  --region R      the STS region --iam signs for
  --admin-port N  the server's admin port, for health, ready and admin (default 7071, env KV_ADMIN_PORT)
  --prefix P      keys: only keys starting with P
  --values        keys: print values too
  --base64        keys: print keys and values as base64
  --yes           clear: confirm
  --out PATH      get: write the exact bytes to PATH (- for stdout), with no newline after them
  --ttl DURATION  set: expire the value after DURATION (no env twin: a stray variable must not expire data)
  --timeout-ms MS deadline of each request (env KV_TIMEOUT_MS); past it the command fails with KV_ERR_TIMEOUT
                  (a set may still be applied)`;

/** The key `ping` reads; nothing needs to store it. */
const PING_KEY = "__kvs_health__";

async function readInput(path: string): Promise<Uint8Array> {
  if (path === "-") {
    const chunks: Uint8Array[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Uint8Array);
    return new Uint8Array(Buffer.concat(chunks));
  }
  return new Uint8Array(await readFile(path));
}

/** Whether stdout's reader has gone (`keys | head`): EPIPE arrives as an error event. */
let stdoutClosed = false;
process.stdout.on("error", () => {
  stdoutClosed = true;
});

/** Writes to stdout, waiting until it takes more; false once its reader has gone. */
function writeOut(text: string | Uint8Array): Promise<boolean> {
  return new Promise((resolve) => {
    if (stdoutClosed) return resolve(false);
    if (process.stdout.write(text)) return resolve(!stdoutClosed);
    const done = () => {
      process.stdout.off("drain", done);
      process.stdout.off("error", done);
      resolve(!stdoutClosed);
    };
    process.stdout.on("drain", done);
    process.stdout.on("error", done);
  });
}

/**
 * Prints a listing line by line as pages arrive, a page at a time, waiting
 * for stdout to take each one. A closed stdout (`keys | head`) ends the
 * listing quietly.
 */
async function printListing(client: KvClient, prefix: string | undefined, withValues: boolean, base64: boolean) {
  const text = (b: Uint8Array) =>
    base64 ? Buffer.from(b.buffer, b.byteOffset, b.length).toString("base64") : new TextDecoder().decode(b);
  let cursor: Uint8Array | undefined;
  do {
    const page = await client.listPage({ prefix, cursor, values: withValues });
    let lines = "";
    for (const e of page.entries) {
      lines += withValues ? `${text(e.key)}\t${text(e.value ?? new Uint8Array(0))}\n` : `${text(e.key)}\n`;
    }
    if (!(await writeOut(lines))) break;
    cursor = page.cursor;
  } while (cursor !== undefined);
  return 0;
}

/** Reads a PEM file named by a flag, naming the flag if it cannot. */
async function pem(flag: string, path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new Error(`${flag}: cannot read ${path}: ${errorMessage(err)}`);
  }
}

/** Where to connect and how, from --url or --host/--port, and the TLS flags (then their env twins). */
async function serverTarget(values: {
  host?: string;
  port?: string;
  url?: string;
  tls?: boolean;
  "tls-ca"?: string;
  "tls-cert"?: string;
  "tls-key"?: string;
  "tls-server-name"?: string;
}): Promise<KvClientOptions> {
  const env = process.env;
  const hostFlags = values.host !== undefined || values.port !== undefined;
  if (values.url !== undefined && hostFlags) throw new Error("give --url or --host/--port, not both");
  // --host/--port on the command line win over KV_URL in the environment.
  const url = values.url ?? (hostFlags ? undefined : env.KV_URL);
  let host: string;
  let port: number;
  let tlsFromUrl = false;
  if (url !== undefined) {
    ({ host, port, tls: tlsFromUrl } = parseServerUrl(url));
  } else {
    host = values.host ?? env.KV_HOST ?? "127.0.0.1";
    const portText = values.port ?? env.KV_PORT ?? "7070";
    port = Number(portText);
    if (!/^\d+$/.test(portText) || port < 1 || port > 65535) {
      throw new Error(`${fromEnv(values.port, "KV_PORT")}--port must be 1-65535, got ${JSON.stringify(portText)}`);
    }
  }
  const ca = values["tls-ca"] ?? env.KV_CLIENT_TLS_CA;
  const cert = values["tls-cert"] ?? env.KV_CLIENT_TLS_CERT;
  const key = values["tls-key"] ?? env.KV_CLIENT_TLS_KEY;
  const serverName = values["tls-server-name"];
  if ((cert === undefined) !== (key === undefined)) throw new Error("--tls-cert and --tls-key go together");
  const tls: ClientTlsOptions = {};
  if (ca !== undefined) tls.ca = await pem("--tls-ca", ca);
  if (cert !== undefined && key !== undefined) {
    tls.cert = await pem("--tls-cert", cert);
    tls.key = await pem("--tls-key", key);
  }
  if (serverName !== undefined) tls.serverName = serverName;
  const useTls = tlsFromUrl || values.tls === true || Object.keys(tls).length > 0;
  return useTls ? { host, port, tls } : { host, port };
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<
    typeof parseArgs<{
      options: {
        host: { type: "string" };
        port: { type: "string" };
        url: { type: "string" };
        tls: { type: "boolean" };
        "tls-ca": { type: "string" };
        "tls-cert": { type: "string" };
        "tls-key": { type: "string" };
        "tls-server-name": { type: "string" };
        file: { type: "string" };
        out: { type: "string" };
        "admin-port": { type: "string" };
        prefix: { type: "string" };
        values: { type: "boolean" };
        base64: { type: "boolean" };
        yes: { type: "boolean" };
        "if-version": { type: "string" };
        "if-absent": { type: "boolean" };
        version: { type: "boolean" };
        "timeout-ms": { type: "string" };
        ttl: { type: "string" };
        token: { type: "string" };
        iam: { type: "string" };
        region: { type: "string" };
        help: { type: "boolean"; short: "h" };
      };
      allowPositionals: true;
    }>
  >;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        url: { type: "string" },
        tls: { type: "boolean" },
        "tls-ca": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-server-name": { type: "string" },
        file: { type: "string" },
        out: { type: "string" },
        "admin-port": { type: "string" },
        prefix: { type: "string" },
        values: { type: "boolean" },
        base64: { type: "boolean" },
        yes: { type: "boolean" },
        "if-version": { type: "string" },
        "if-absent": { type: "boolean" },
        version: { type: "boolean" },
        "timeout-ms": { type: "string" },
        ttl: { type: "string" },
        token: { type: "string" },
        iam: { type: "string" },
        region: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    return usageLine(errorMessage(err));
  }
  const { values, positionals } = parsed;
  // `--version` alone is the program's version; after `get KEY` it asks for the value's.
  if (values.version && positionals.length === 0) {
    console.log(`kvs-client ${pkg.version}`);
    return 0;
  }
  if (values.help || positionals.length === 0) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  let target: KvClientOptions;
  try {
    target = await serverTarget(values);
  } catch (err) {
    return usageLine(errorMessage(err));
  }
  const host = target.host ?? "127.0.0.1";
  const [command, ...args] = positionals;
  const token = values.token ?? process.env.KV_TOKEN;
  const iamServerId = values.iam ?? process.env.KV_IAM;
  if (token !== undefined && iamServerId !== undefined) return usageLine("give --token or --iam, not both");
  if (values.region !== undefined && iamServerId === undefined) return usageLine("--region goes with --iam");
  credentialGiven = token !== undefined || iamServerId !== undefined;
  if (token !== undefined) target = { ...target, auth: { token } };
  if (iamServerId !== undefined) {
    const { iamAuth } = await import("./iam.js");
    const region = values.region ?? process.env.AWS_REGION ?? "us-east-1";
    target = { ...target, auth: iamAuth({ serverId: iamServerId, region }) };
  }

  const usageError = usageLine;
  const timeoutText = values["timeout-ms"] ?? process.env.KV_TIMEOUT_MS;
  if (timeoutText !== undefined) {
    const ms = Number(timeoutText);
    if (!Number.isInteger(ms) || ms < 1)
      return usageError(
        `${fromEnv(values["timeout-ms"], "KV_TIMEOUT_MS")}--timeout-ms must be a positive whole number, got ${JSON.stringify(timeoutText)}`,
      );
    target = { ...target, requestTimeoutMs: ms };
  }
  const ifVersionText = values["if-version"];
  const ifVersion = ifVersionText === undefined ? undefined : Number(ifVersionText);
  if (ifVersion !== undefined && (!/^\d+$/.test(ifVersionText as string) || !Number.isSafeInteger(ifVersion))) {
    return usageError(`--if-version must be a version from a get --version, got ${JSON.stringify(ifVersionText)}`);
  }
  const conditional = ifVersion !== undefined || values["if-absent"] === true;
  if (conditional && command !== "set") return usageError("--if-version and --if-absent go with set");
  if (values.version && command !== "get") return usageError("--version goes with get");
  if (values.ttl !== undefined && command !== "set") return usageError("--ttl goes with set");
  let ttlMs: number | undefined;
  try {
    ttlMs = values.ttl === undefined ? undefined : parseDuration(values.ttl);
  } catch (err) {
    return usageError(`--ttl: ${errorMessage(err)}`);
  }

  switch (command) {
    case "set": {
      const [key, value] = args;
      if (key === undefined) return usageError("set needs KEY");
      if ((value === undefined) === (values.file === undefined) || args.length > 2) {
        return usageError("set needs exactly one of VALUE or --file PATH");
      }
      if (ifVersion !== undefined && values["if-absent"])
        return usageError("set takes --if-version or --if-absent, not both");
      if (conditional) {
        const bytes = values.file !== undefined ? await readInput(values.file) : (value as string);
        await using client = await KvClient.connect(target);
        try {
          const condition = values["if-absent"] ? { ifAbsent: true } : { ifVersion };
          const version = await client.set(key, bytes, { ...condition, ttlMs });
          console.error(`ok version ${version}`);
          return 0;
        } catch (err) {
          if (!isKvError(err, ErrorCode.Conflict)) throw err;
          console.error(
            values["if-absent"] ? "conflict: the key has a value" : `conflict: the key is not at version ${ifVersion}`,
          );
          return 3;
        }
      }
      if (values.file !== undefined && values.file !== "-") {
        // A file is streamed: its size is known up front, and its bytes go out as they are read.
        const info = await stat(values.file).catch(() => undefined);
        if (info === undefined || !info.isFile()) {
          console.error(`cannot read ${values.file}: no such file, or not a regular file`);
          return 1;
        }
        await using client = await KvClient.connect(target);
        console.error(okVersion(await client.setFrom(key, info.size, createReadStream(values.file), { ttlMs })));
        return 0;
      }
      const bytes = values.file !== undefined ? await readInput(values.file) : (value as string);
      await using client = await KvClient.connect(target);
      console.error(okVersion(await client.set(key, bytes, { ttlMs })));
      return 0;
    }
    case "get": {
      const [key] = args;
      if (key === undefined || args.length > 1) return usageError("get needs exactly one KEY");
      // `--out -` is stdout, byte-exact; without --out a newline follows the value.
      const toFile = values.out !== undefined && values.out !== "-";
      await using client = await KvClient.connect(target);
      if (values.version) {
        const found = await client.getVersioned(key);
        if (found === undefined) {
          console.error("not found");
          return 1;
        }
        if (toFile) await writeFile(values.out as string, found.value);
        else await writeOut(found.value);
        if (values.out === undefined) await writeOut("\n");
        console.error(`version ${found.version}`);
        if (found.expiresAt !== undefined) {
          const left = Math.max(0, found.expiresAt - Date.now());
          console.error(`expires ${new Date(found.expiresAt).toISOString()} (in ${(left / 1000).toFixed(3)} s)`);
        }
        return 0;
      }
      const out = toFile ? await open(values.out as string, "w") : undefined;
      let found: boolean;
      try {
        found = await client.getTo(key, async (piece) => {
          if (out !== undefined) await out.write(piece);
          else if (!(await writeOut(piece))) throw new Error("stdout closed");
        });
      } finally {
        await out?.close();
      }
      if (!found) {
        if (toFile) await rm(values.out as string, { force: true });
        console.error("not found");
        return 1;
      }
      // On a terminal the prompt belongs on a line of its own; `--out -` gives the exact bytes.
      if (values.out === undefined) await writeOut("\n");
      return 0;
    }
    case "rm":
    case "exists": {
      const [key] = args;
      if (key === undefined || args.length > 1) return usageError(`${command} needs exactly one KEY`);
      await using client = await KvClient.connect(target);
      const found = command === "rm" ? await client.delete(key) : await client.exists(key);
      if (command === "rm") console.error(found ? "deleted" : "not found");
      return found ? 0 : 1;
    }
    case "keys": {
      if (args.length > 0) return usageError("keys takes no arguments; use --prefix");
      await using client = await KvClient.connect(target);
      return await printListing(client, values.prefix, values.values === true, values.base64 === true);
    }
    case "clear": {
      if (args.length > 0) return usageError("clear takes no arguments");
      if (values.yes !== true) return usageError("clear deletes every key: confirm with --yes");
      await using client = await KvClient.connect(target);
      console.log(await client.clear());
      return 0;
    }
    case "verify": {
      if (args.length > 0) return usageError("verify takes no arguments");
      const results = await verify(target);
      console.log(formatResults(results));
      return results.every((r) => r.ok) ? 0 : 1;
    }
    case "health":
    case "ready":
    case "admin": {
      if (command === "admin" && (args.length !== 1 || args[0] !== "rotate-key")) {
        return usageError(`admin takes one action, rotate-key; got ${JSON.stringify(args.join(" "))}`);
      }
      if (command !== "admin" && args.length > 0) return usageError(`${command} takes no arguments`);
      const adminText = values["admin-port"] ?? process.env.KV_ADMIN_PORT ?? "7071";
      if (!/^\d+$/.test(adminText) || Number(adminText) < 1 || Number(adminText) > 65535) {
        return usageError(
          `${fromEnv(values["admin-port"], "KV_ADMIN_PORT")}--admin-port must be 1-65535, got ${JSON.stringify(adminText)}`,
        );
      }
      const path = command === "health" ? "/healthz" : command === "ready" ? "/readyz" : "/admin/rotate-key";
      // A rotation makes one KMS call and a few DynamoDB writes; the server's own deadline bounds them.
      const auth = target.auth;
      const credential =
        command !== "admin" || auth === undefined ? undefined : "token" in auth ? auth.token : await auth.credential();
      const res = await fetch(`http://${host}:${adminText}${path}`, {
        method: command === "admin" ? "POST" : "GET",
        ...(credential === undefined ? {} : { headers: { authorization: `Bearer ${credential}` } }),
        signal: AbortSignal.timeout(command === "admin" ? 30_000 : 4_000),
      });
      const text = (await res.text()).trim();
      if (command === "admin" && res.status === 200) {
        console.log(`branch key version ${(JSON.parse(text) as { version: number }).version} is active`);
        return 0;
      }
      console.error(text);
      return res.status === 200 ? 0 : 1;
    }
    case "ping": {
      if (args.length > 0) return usageError("ping takes no arguments");
      await using client = await KvClient.connect(target);
      // A get exercises the whole path: socket, DynamoDB and, if the key exists, KMS.
      await client.get(PING_KEY);
      console.error("ok");
      return 0;
    }
    default:
      return usageError(`unknown command ${JSON.stringify(command)}`);
  }
}

/** Whether the command line (or KV_TOKEN, KV_IAM) gave a credential. */
let credentialGiven = false;

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  // A server's failure already names its code in the message: once is enough.
  const text = isKvError(err) && !err.message.includes(err.code) ? `${err.code}: ${err.message}` : errorMessage(err);
  console.error(`error: ${text}`);
  // Without a credential the hint says how to give one; with one, the server's reason says what was wrong with it.
  if (isKvError(err, ErrorCode.Unauthenticated) && !credentialGiven) {
    // Protected mode refuses with the same code, and no credential helps there: the server's reason says which it is.
    console.error(
      "(to authenticate, give --token TOKEN or --iam SERVER_ID; the reason above says if the server needs more)",
    );
  }
  process.exitCode = 1;
}

/** When a flag's value came from its environment variable instead, names the variable (`KV_PORT=abc: `). */
function fromEnv(flag: string | undefined, variable: string): string {
  const value = process.env[variable];
  return flag === undefined && value !== undefined ? `${variable}=${value} (from the environment): ` : "";
}

/** What a set prints: the version it wrote, when the server said. */
function okVersion(version: number | undefined): string {
  return version === undefined ? "ok" : `ok version ${version}`;
}

/** A usage error: one line naming the problem and where the usage is; exit status 2. */
function usageLine(problem: string): number {
  console.error(`kvs-client: ${briefly(problem)} (${PROGRAM} --help lists the commands and flags)`);
  return 2;
}

/** node:util's parse errors without their advice on positionals that start with "-". */
function briefly(problem: string): string {
  return problem.replace(/\. To specify a positional argument[\s\S]*$/, "");
}
