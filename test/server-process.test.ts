import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvClient } from "../client/kv-client.js";
import { portFree } from "../src/local/free-port.js";
import { encodeGetRequest } from "../src/wire/client-codec.js";
import { accepts, root, runCli, runServer, spawnServer, untilLine } from "./support/process.js";

// Starts DynamoDB Local or server processes; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "kvs-proc-"));
  dirs.push(d);
  return d;
}

/** Holds `port` on 127.0.0.1, as another program would, until disposed. */
function listenOn(port: number) {
  const listener = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
  return Promise.resolve({ [Symbol.asyncDispose]: async () => listener.stop(true) });
}

/** Waits, within a bound, until nothing listens at `endpoint` (a child's exit has no event we can observe). */
async function closedWithin(endpoint: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await accepts(endpoint))) return true;
    await Bun.sleep(50);
  }
  return false;
}

describe("bun run server flags", () => {
  test("--help lists every flag with its environment twin and exits 0", () => {
    const { code, stdout } = runServer(["--help"]);
    expect(code).toBe(0);
    for (const flag of ["--host", "--port", "--store", "--table", "--kms-key-id", "--region", "--dynamodb-endpoint"]) {
      expect(stdout).toContain(flag);
    }
    for (const env of ["KV_HOST", "KV_PORT", "KV_STORE", "KV_TABLE", "KV_KMS_KEY_ID", "AWS_REGION", "KV_DATA_DIR"]) {
      expect(stdout).toContain(env);
    }
    expect(stdout).toContain("--max-frame-bytes");
    expect(stdout).toContain("KV_KMS_ENDPOINT");
  });

  const bad: [string, string[], Record<string, string>, string][] = [
    ["an unknown flag", ["--nope"], {}, "Unknown option '--nope'"],
    ["a port that is not a number", ["--port", "abc"], {}, "--port must be a whole number"],
    ["a port out of range", ["--port", "70000"], {}, "--port must be between 0 and 65535"],
    ["an unknown store", ["--store", "redis"], {}, "--store must be dynamodb or memory"],
    [
      "a bad value from the environment, named by its variable",
      [],
      { KV_MAX_FRAME_BYTES: "-5" },
      'KV_MAX_FRAME_BYTES=-5 (from the environment): --max-frame-bytes must be a whole number, got "-5"',
    ],
    ["a bad port from the environment", [], { KV_PORT: "abc" }, "KV_PORT=abc (from the environment): --port"],
    [
      "a memory soft limit that is not a number",
      ["--memory-soft-limit-mib", "lots"],
      {},
      '--memory-soft-limit-mib must be a whole number, got "lots"',
    ],
    ["an endpoint that is not a URL", ["--kms-endpoint", "localhost"], {}, "--kms-endpoint must be a URL"],
    ["--table without --kms-key-id", ["--table", "t"], {}, "--table was given without --kms-key-id"],
    ["--kms-key-id without --table", [], { KV_KMS_KEY_ID: "alias/k" }, "--kms-key-id was given without --table"],
    [
      "the TCP and HTTP ports the same",
      ["--port", "7123", "--http-port", "7123"],
      {},
      "--port and --http-port are both 7123",
    ],
    [
      "the HTTP and admin ports the same",
      ["--http-port", "7124", "--admin-port", "7124"],
      {},
      "--http-port and --admin-port are both 7124",
    ],
  ];
  for (const [name, args, env, message] of bad) {
    test(`${name} exits 2 with a clear message`, () => {
      const { code, stderr } = runServer(args, env);
      expect(code).toBe(2);
      expect(stderr).toContain(message);
    });
  }

  test("-h prints the help, and --version the version, and both exit 0", () => {
    const help = runServer(["-h"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Usage: bun run server [flags]");
    const version = runServer(["--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^kvs \d+\.\d+\.\d+$/);
  });

  test("a port already in use fails startup at once, naming it, before any local service starts", async () => {
    await using first = await spawnServer(["--store", "memory", "--port", "0"]);
    // Local mode on DynamoDB: the port is checked before DynamoDB Local would be started.
    const dataDir = tempDir();
    const { code, stderr } = runServer(["--port", String(first.port), "--data-dir", dataDir]);
    expect(code).toBe(1);
    expect(stderr).toContain(`cannot listen on 127.0.0.1:${first.port}: the port is in use`);
    expect(readdirSync(dataDir)).toEqual([]);
    // The admin port too.
    const admin = runServer(["--port", "0", "--admin-port", String(first.port), "--data-dir", dataDir]);
    expect(admin.code).toBe(1);
    expect(admin.stderr).toContain(`cannot listen on 127.0.0.1:${first.port} (admin): the port is in use`);
    expect(readdirSync(dataDir)).toEqual([]);
  });
});

/**
 * Starts `bun run server ARGS` as a terminal's foreground job: detached, so it
 * leads its own process group, and a signal to the group reaches it, `bun run`
 * and everything they started, as Ctrl-C does.
 */
async function terminalServer(args: string[]) {
  const child = spawn(process.execPath, ["run", "server", ...args], {
    cwd: root,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, KV_HTTP_PORT: "off" },
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let err = "";
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
  });
  let out = "";
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on [^ ]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on("exit", () => reject(new Error(`server exited early: ${err}`)));
  });
  return {
    child,
    exited,
    port,
    stdout: () => out,
    stderr: () => err,
    /** Ends the whole job if a test left it running (a failed assertion before its stop). */
    async [Symbol.asyncDispose]() {
      if (child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(-(child.pid as number), "SIGKILL");
        } catch {
          // Already gone.
        }
        await exited;
      }
    },
  };
}

describe("stopping", () => {
  test("Ctrl-C on `bun run server` in a terminal (SIGINT to the process group, twice) drains and exits 0", async () => {
    await using job = await terminalServer(["--store", "memory", "--port", "0"]);
    const { child, exited, stderr, port } = job;
    const client = await KvClient.connect({ port });
    const value = new Uint8Array(64 * 1024).fill(7);
    await client.set("big", value);
    // A client that has not read its answers yet keeps the drain going while both signals arrive.
    const answers = Promise.withResolvers<number>();
    let received = 0;
    const slow = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(socket) {
          socket.pause();
        },
        data(_socket, chunk) {
          received += chunk.length;
        },
        close() {
          answers.resolve(received);
        },
      },
    });
    const get = encodeGetRequest(new TextEncoder().encode("big"));
    slow.write(new Uint8Array(Buffer.concat(Array.from({ length: 200 }, () => get))));
    // A round trip on another connection: by then the server has taken the slow client's requests.
    expect(await client.getString("missing")).toBeUndefined();
    const sets = Array.from({ length: 3000 }, (_, i) => client.set(`k${i}`, "v"));
    await sets[0];
    process.kill(-(child.pid as number), "SIGINT");
    await new Promise<void>((resolve) => child.stderr.once("data", () => resolve()));
    slow.resume();
    const outcomes = await Promise.allSettled(sets);
    expect(await exited).toBe(0);
    expect(stderr()).not.toContain("second stop request");
    expect(stderr()).toContain("stopping: draining connections");
    // Every request the server read was answered: all 200 large answers, and the sets.
    expect(await answers.promise).toBeGreaterThanOrEqual(200 * value.length);
    const ok = outcomes.filter((o) => o.status === "fulfilled").length;
    expect(ok).toBeGreaterThan(0);
    for (const o of outcomes)
      if (o.status === "rejected") expect(o.reason).toMatchObject({ code: "KV_ERR_CONNECTION_CLOSED" });
    await client.close().catch(() => {});
  });

  test("Ctrl-C in local mode leaves DynamoDB Local to the server's own stop: no false crash, nothing left behind", async () => {
    await using job = await terminalServer(["--port", "0", "--data-dir", tempDir()]);
    const { child, exited, port, stdout, stderr } = job;
    const endpoint = /dynamodb=(http:\/\/[^ ]+)/.exec(stdout())?.[1] as string;
    const client = await KvClient.connect({ port });
    await client.set("k", "v");
    // Java runs outside the job's process group, so a terminal's signal to the group cannot reach it.
    const java = Bun.spawnSync(["pgrep", "-f", `^java .*DynamoDBLocal.jar -port ${new URL(endpoint).port} `])
      .stdout.toString()
      .trim();
    const stat = readFileSync(`/proc/${java}/stat`, "utf8");
    const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
    expect(pgrp).not.toBe(child.pid);
    process.kill(-(child.pid as number), "SIGINT");
    expect(await exited).toBe(0);
    // The terminal's SIGINT must not reach Java: the server stops it after the drain, not the keypress.
    expect(stderr()).not.toContain("DynamoDB Local exited");
    expect(await closedWithin(endpoint, 15_000)).toBe(true);
    await client.close().catch(() => {});
  });
});

for (const signal of ["SIGTERM", "SIGHUP"] as const) {
  test(`${signal} to the server's whole process group (systemd, docker stop, a closed terminal) leaves no DynamoDB Local behind`, async () => {
    await using job = await terminalServer(["--port", "0", "--data-dir", tempDir()]);
    const { child, exited, port, stdout } = job;
    const endpoint = /dynamodb=(http:\/\/[^ ]+)/.exec(stdout())?.[1] as string;
    const client = await KvClient.connect({ port });
    await client.set("k", "v");
    await client.close();
    process.kill(-(child.pid as number), signal);
    await exited;
    expect(await closedWithin(endpoint, 15_000)).toBe(true);
    const java = Bun.spawnSync(["pgrep", "-f", `DynamoDBLocal.jar -port ${new URL(endpoint).port} `]);
    expect(java.stdout.toString().trim()).toBe("");
  });
}

test("SIGTERM to `bun run server` alone (not its group) reaches the server, which drains and leaves no DynamoDB Local behind", async () => {
  await using job = await terminalServer(["--port", "0", "--data-dir", tempDir()]);
  const { child, exited, port, stdout, stderr } = job;
  const endpoint = /dynamodb=(http:\/\/[^ ]+)/.exec(stdout())?.[1] as string;
  const client = await KvClient.connect({ port });
  await client.set("k", "v");
  await client.close();
  // The pid of `bun run` itself: the server is its child.
  child.kill("SIGTERM");
  expect(await exited).toBe(0);
  expect(stderr()).toContain("stopping: draining connections reason=SIGTERM");
  expect(await closedWithin(endpoint, 15_000)).toBe(true);
  const left = Bun.spawnSync(["pgrep", "-f", `DynamoDBLocal.jar -port ${new URL(endpoint).port} `]);
  expect(left.stdout.toString().trim()).toBe("");
});

describe("local mode", () => {
  test("starts DynamoDB Local and the KMS endpoint, serves the CLI, keeps data across restarts, and stops its children on SIGTERM", async () => {
    const dataDir = tempDir();
    let dynamodb: string;
    {
      await using server = await spawnServer(["--port", "0", "--data-dir", dataDir]);
      expect(server.line).toContain("(embedded DynamoDB Local)");
      expect(server.line).toContain("(embedded local KMS)");
      dynamodb = server.dynamodbEndpoint as string;
      const port = String(server.port);
      expect((await runCli(["set", "greeting", "hello", "--port", port])).code).toBe(0);
      const got = await runCli(["get", "greeting", "--port", port]);
      expect(got.code).toBe(0);
      expect(new TextDecoder().decode(got.stdout)).toBe("hello\n");
      const verify = await runCli(["verify", "--port", port]);
      expect(new TextDecoder().decode(verify.stdout)).toContain("9 passed, 0 failed");
      expect(verify.code).toBe(0);

      server.proc.kill("SIGTERM");
      expect(await server.proc.exited).toBe(0);
      expect(await accepts(dynamodb)).toBe(false);
    }
    {
      await using again = await spawnServer(["--port", "0", "--data-dir", dataDir]);
      const got = await runCli(["get", "greeting", "--port", String(again.port)]);
      // The whole answer, so a failure shows the exit code and the client's reason.
      expect({ code: got.code, stdout: new TextDecoder().decode(got.stdout), stderr: got.stderr }).toEqual({
        code: 0,
        stdout: "hello\n",
        stderr: "",
      });
    }
  });

  test("the admin port defaults to the client's 127.0.0.1:7071, so `client health` works; when it is taken, the server starts without one and says so", async () => {
    const dataDir = tempDir();
    // Another process may hold 7071 on a developer's machine; then only the second half can be checked.
    if (await portFree(7071)) {
      await using server = await spawnServer(["--port", "0", "--data-dir", dataDir]);
      expect(server.line).toContain("admin=127.0.0.1:7071");
      const health = await runCli(["health"]);
      expect({ code: health.code, stderr: health.stderr.trim() }).toEqual({ code: 0, stderr: "ok" });
    }
    await using holder = await listenOn(7071);
    await using second = await spawnServer(["--port", "0", "--data-dir", dataDir]);
    expect(second.line).not.toContain("admin=");
    expect(await untilLine(second.proc.stderr, /admin port/)).toContain(
      "admin port 127.0.0.1:7071 is taken; starting without one",
    );
    expect(holder).toBeDefined();
  });

  test("a DynamoDB Local that dies is restarted on its data, and requests recover by themselves", async () => {
    await using server = await spawnServer(["--port", "0", "--data-dir", tempDir()]);
    const endpoint = server.dynamodbEndpoint as string;
    const ddbPort = new URL(endpoint).port;
    await using c = await KvClient.connect({ port: server.port });
    await c.set("kept", "across a crash");
    const java = Bun.spawnSync(["pgrep", "-f", `^java .*DynamoDBLocal.jar -port ${ddbPort} `])
      .stdout.toString()
      .trim();
    expect(java).toMatch(/^\d+$/);
    process.kill(Number(java), "SIGKILL");
    const log = await untilLine(server.proc.stderr, /DynamoDB Local restarted/);
    expect(log).toContain("DynamoDB Local exited; restarting");
    expect(await c.getString("kept")).toBe("across a crash");
    await c.set("after", "the restart");
    expect(await c.getString("after")).toBe("the restart");
  });

  test("DynamoDB Local does not outlive a server killed with SIGKILL", async () => {
    const server = await spawnServer(["--port", "0", "--data-dir", tempDir()]);
    const endpoint = server.dynamodbEndpoint as string;
    expect(await accepts(endpoint)).toBe(true);
    server.proc.kill("SIGKILL");
    await server.proc.exited;
    expect(await closedWithin(endpoint, 15_000)).toBe(true);
  });
});

describe("--workers", () => {
  test("runs several processes on one port that share the local services, and stops them all on SIGTERM", async () => {
    await using group = await spawnServer(["--port", "0", "--workers", "2", "--data-dir", tempDir()]);
    expect(group.line).toContain("workers=2");
    expect(group.line).toContain("embedded DynamoDB Local");
    const port = String(group.port);
    expect((await runCli(["set", "shared", "by workers", "--port", port])).code).toBe(0);
    // Whichever worker each connection lands on, they share one table.
    for (let i = 0; i < 6; i++) {
      const got = await runCli(["get", "shared", "--port", port]);
      expect(new TextDecoder().decode(got.stdout)).toBe("by workers\n");
    }
    const dynamodb = /dynamodb=(http:\/\/[^ ]+)/.exec(group.line)?.[1] as string;
    group.proc.kill("SIGTERM");
    expect(await group.proc.exited).toBe(0);
    expect(await accepts(dynamodb)).toBe(false);
    expect(await accepts(`http://127.0.0.1:${port}`)).toBe(false);
  });
});
