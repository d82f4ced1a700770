import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { onBackends, useBackends } from "../support/backends.js";
import { makeCerts, type TestCerts } from "../support/certs.js";
import { startTestServer } from "../support/harness.js";
import { root } from "../support/process.js";
import { lacking } from "../support/system-tools.js";

// Packs, installs with npm and starts runtimes; this bound only turns a hang into a failure.
setDefaultTimeout(120_000);

const backends = useBackends();
const work = mkdtempSync(join(tmpdir(), "kvs-client-package-"));
const consumer = join(work, "consumer");
let tarball = "";
let certs: TestCerts | undefined;
const noOpenssl = lacking("the client package's TLS checks", "openssl");

function run(cmd: string[], cwd: string): { code: number; stdout: string; stderr: string } {
  const out = Bun.spawnSync(cmd, {
    cwd,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, npm_config_update_notifier: "false" },
  });
  return { code: out.exitCode, stdout: out.stdout.toString(), stderr: out.stderr.toString() };
}

/** As {@link run}, without blocking this process: the servers under test run in it. */
async function runAsync(cmd: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

beforeAll(() => {
  // What is published is what is tested: `npm pack` runs the package's prepack build.
  const packed = run(["npm", "pack", "--silent", "--pack-destination", work], join(root, "client"));
  if (packed.code !== 0) throw new Error(`npm pack failed: ${packed.stderr}`);
  tarball = join(work, packed.stdout.trim().split("\n").at(-1) as string);
  rmSync(consumer, { recursive: true, force: true });
  Bun.spawnSync(["mkdir", "-p", consumer]);
  writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  const installed = run(["npm", "install", "--offline", "--no-audit", "--no-fund", tarball], consumer);
  if (installed.code !== 0) throw new Error(`npm install failed: ${installed.stderr}`);
  for (const script of ["check.mjs", "reconnect.mjs", "auth.mjs"]) {
    copyFileSync(join(root, "test/support/package-check", script), join(consumer, script));
  }
});
afterAll(() => {
  certs?.[Symbol.dispose]();
  rmSync(work, { recursive: true, force: true });
});

function sizeOf(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    total += entry.isDirectory() ? sizeOf(path) : statSync(path).size;
  }
  return total;
}

describe("the kvs-client package", () => {
  test("npm pack makes an installable tarball of a few hundred KiB with no runtime dependency", () => {
    expect(statSync(tarball).size).toBeLessThan(100 * 1024);
    const installed = join(consumer, "node_modules", "kvs-client");
    expect(sizeOf(installed)).toBeLessThan(512 * 1024);
    const manifest = JSON.parse(Bun.spawnSync(["cat", join(installed, "package.json")]).stdout.toString());
    expect(manifest.dependencies).toBeUndefined();
    // npm installed it alone: no AWS SDK, no DynamoDB Local, nothing of the server.
    expect(readdirSync(join(consumer, "node_modules")).filter((d) => !d.startsWith("."))).toEqual(["kvs-client"]);
  });

  for (const runtime of ["node", "bun"] as const) {
    test(`installed from the tarball, it works on ${runtime === "node" ? "Node" : "Bun"}: pipelining, large values, versions, expiry, batches, aborts, errors, listing${noOpenssl ? "" : ", mutual TLS"}`, async () => {
      await using server = await startTestServer(onBackends(backends));
      const args = [String(server.port)];
      let tlsServer: Awaited<ReturnType<typeof startTestServer>> | undefined;
      if (!noOpenssl) {
        certs ??= await makeCerts();
        tlsServer = await startTestServer({ tls: { cert: certs.server.cert, key: certs.server.key, ca: certs.ca } });
        args.push(String(tlsServer.port), certs.ca, certs.client, certs.clientKey);
      }
      try {
        const bin = runtime === "node" ? "node" : process.execPath;
        const out = await runAsync([bin, "check.mjs", ...args], consumer);
        expect(out.stderr).toBe("");
        expect(JSON.parse(out.stdout)).toEqual({
          runtime,
          pipelined: true,
          large: true,
          stream: true,
          absentStream: true,
          afterCancel: "v7",
          conflict: "KV_ERR_CONFLICT",
          cas: "ok",
          tooLong: "KV_ERR_KEY_TOO_LARGE",
          expiry: true,
          batch: true,
          aborted: "KV_ERR_ABORTED",
          listed: 1111,
          refused: "KV_ERR_CONNECT",
          ...(noOpenssl ? {} : { mtls: "yes", untrusted: "KV_ERR_TLS" }),
          handshakeTimeout: "KV_ERR_CONNECT",
          gaveUpInTime: true,
          codes: true,
        });
      } finally {
        await tlsServer?.stop();
      }
    });
  }

  for (const runtime of ["node", "bun"] as const) {
    test(`installed from the tarball, its KvClient with reconnect carries on across a graceful drain on ${runtime === "node" ? "Node" : "Bun"}, losing no request`, async () => {
      const settings = onBackends(backends, `pkg-${randomBytes(4).toString("hex")}`);
      const first = await startTestServer(settings);
      const port = first.port;
      const proc = Bun.spawn([runtime === "node" ? "node" : process.execPath, "reconnect.mjs", String(port)], {
        cwd: consumer,
        stdin: "pipe",
        stdout: "pipe",
        stderr: "pipe",
      });
      try {
        const reader = proc.stdout.getReader();
        let text = "";
        while (!text.includes("running\n")) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`reconnect.mjs ended early: ${await new Response(proc.stderr).text()}`);
          text += new TextDecoder().decode(value);
        }
        // Drained while 20 gets are in flight: what it read it answers, the rest go again elsewhere.
        await first.stop();
        await using second = await startTestServer({ ...settings, port });
        proc.stdin.write("go\n");
        await proc.stdin.end();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          text += new TextDecoder().decode(value);
        }
        expect(await proc.exited).toBe(0);
        expect(JSON.parse(text.slice(text.indexOf("running\n") + "running\n".length))).toEqual({
          runtime,
          reconnected: true,
          answeredAfter: true,
          wrong: 0,
          failures: [],
        });
        expect(second.port).toBe(port);
      } finally {
        proc.kill();
        await first.stop();
      }
    });
  }

  for (const runtime of ["node", "bun"] as const) {
    test(`installed from the tarball, it authenticates with tokens on ${runtime === "node" ? "Node" : "Bun"}, and kvs-client/iam signs with no AWS package installed`, async () => {
      const ops = randomBytes(32).toString("hex");
      const reader = randomBytes(32).toString("hex");
      const policyFile = join(work, `policy-${runtime}.json`);
      writeFileSync(
        policyFile,
        JSON.stringify({
          rules: [
            { identity: "token:ops", read: ["*"], write: ["*"] },
            { identity: "token:reader", read: ["public/*"] },
          ],
        }),
      );
      await using server = await startTestServer({
        ...onBackends(backends),
        auth: { policyFile, tokensText: `ops=${ops},reader=${reader}` },
      });
      const bin = runtime === "node" ? "node" : process.execPath;
      const out = await runAsync([bin, "auth.mjs", String(server.port), ops, reader], consumer);
      expect(out.stderr).toBe("");
      expect(JSON.parse(out.stdout)).toEqual({
        runtime,
        identity: "token:ops",
        denied: "KV_ERR_FORBIDDEN",
        wrongToken: "KV_ERR_UNAUTHENTICATED",
        unauthenticated: "KV_ERR_UNAUTHENTICATED",
        reconnecting: "1",
        refusedOnce: "KV_ERR_UNAUTHENTICATED",
        iamSigned: true,
        iamWithoutSdk: "KV_ERR_CONFIG",
      });
    });
  }

  test("its CLI is an npm bin that runs on Node: --version, set, get with a newline, a file streamed in and out", async () => {
    await using server = await startTestServer(onBackends(backends));
    const bin = join(consumer, "node_modules", ".bin", "kvs-client");
    const port = ["--port", String(server.port)];
    const version = await runAsync([bin, "--version"], consumer);
    expect(version).toMatchObject({ code: 0, stdout: "kvs-client 0.1.0\n" });
    expect(await runAsync([bin, "set", "cli-key", "from node", ...port], consumer)).toMatchObject({ code: 0 });
    expect(await runAsync([bin, "get", "cli-key", ...port], consumer)).toMatchObject({
      code: 0,
      stdout: "from node\n",
    });
    const input = join(work, "in.bin");
    const bytes = new Uint8Array(5 * 1024 * 1024).map((_, i) => (i * 7) % 256);
    writeFileSync(input, bytes);
    expect(await runAsync([bin, "set", "cli-file", "--file", input, ...port], consumer)).toMatchObject({ code: 0 });
    const output = join(work, "out.bin");
    expect(await runAsync([bin, "get", "cli-file", "--out", output, ...port], consumer)).toMatchObject({ code: 0 });
    expect(Buffer.compare(Buffer.from(await Bun.file(output).arrayBuffer()), Buffer.from(bytes))).toBe(0);
    const usage = await runAsync([bin, "frob"], consumer);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("(kvs-client --help lists the commands and flags)");
  });

  test("its type declarations serve a strict TypeScript consumer, kvs-client/iam and the auth option included", () => {
    writeFileSync(
      join(consumer, "consumer.ts"),
      `import { KvClient, type KvClientOptions, KvError } from "kvs-client";
import { iamAuth } from "kvs-client/iam";
const options: KvClientOptions = { port: 7070 };
export const withToken: KvClientOptions = { port: 7070, auth: { token: "t" } };
export const withIam: KvClientOptions = { port: 7070, auth: iamAuth({ serverId: "kvs", region: "eu-west-1" }) };
export async function run(): Promise<string | undefined> {
  const c: KvClient = await KvClient.connect(options);
  try {
    const v: Uint8Array | undefined = await c.get("k");
    const version: number | undefined = await c.set("k", "v", { ifAbsent: true });
    return v === undefined ? String(version) : new TextDecoder().decode(v);
  } catch (e) {
    if (e instanceof KvError) return e.code;
    throw e;
  } finally {
    await c.close();
  }
}
`,
    );
    const tsc = join(root, "node_modules", ".bin", "tsc");
    const flags = [
      "--noEmit",
      "--strict",
      "--module",
      "nodenext",
      "--moduleResolution",
      "nodenext",
      "--target",
      "es2022",
    ];
    const checked = run(
      [tsc, ...flags, "--types", "node", "--typeRoots", join(root, "node_modules", "@types"), "consumer.ts"],
      consumer,
    );
    expect(checked.stdout + checked.stderr).toBe("");
    expect(checked.code).toBe(0);
  });
});
