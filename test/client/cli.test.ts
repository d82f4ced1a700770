import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvClient } from "../../client/kv-client.js";
import { Counter } from "../../src/metrics.js";
import { codeOf } from "../support/code-of.js";
import { startTestServer } from "../support/harness.js";
import { root, runCli } from "../support/process.js";
import { anError, rejection } from "../support/rejection.js";
import { patterned, same } from "../support/values.js";

// Starts DynamoDB Local or server processes; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

describe("bun run client", () => {
  test("set and get round-trip a value, get prints it with a newline (--out - without), and a missing key exits 1", async () => {
    await using server = await startTestServer();
    const port = String(server.port);
    expect((await runCli(["set", "k", "v v", "--port", port])).code).toBe(0);
    const got = await runCli(["get", "k", "--port", port]);
    expect(got.code).toBe(0);
    expect(new TextDecoder().decode(got.stdout)).toBe("v v\n");
    const exact = await runCli(["get", "k", "--out", "-", "--port", port]);
    expect(new TextDecoder().decode(exact.stdout)).toBe("v v");
    const missing = await runCli(["get", "nope", "--port", port]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("not found");
  });

  test("set --if-absent and --if-version write conditionally, exit 3 on a conflict, and get --version prints the version", async () => {
    await using server = await startTestServer();
    const port = String(server.port);
    const created = await runCli(["set", "c", "one", "--if-absent", "--port", port]);
    expect(created.code).toBe(0);
    const version = Number(/ok version (\d+)/.exec(created.stderr)?.[1]);
    expect(Number.isSafeInteger(version)).toBe(true);
    expect((await runCli(["set", "c", "two", "--if-absent", "--port", port])).code).toBe(3);
    const got = await runCli(["get", "c", "--version", "--port", port]);
    expect(new TextDecoder().decode(got.stdout)).toBe("one\n");
    expect(got.stderr).toContain(`version ${version}`);
    const updated = await runCli(["set", "c", "two", "--if-version", String(version), "--port", port]);
    expect(Number(/ok version (\d+)/.exec(updated.stderr)?.[1])).not.toBe(version);
    const stale = await runCli(["set", "c", "three", "--if-version", String(version), "--port", port]);
    expect(stale.code).toBe(3);
    expect(stale.stderr).toContain(`not at version ${version}`);
    for (const bad of [
      ["set", "c", "x", "--if-version", "-1"],
      ["set", "c", "x", "--if-version", "1", "--if-absent"],
      ["get", "c", "--if-absent"],
      ["set", "c", "x", "--timeout-ms", "0"],
    ]) {
      expect({ bad, code: (await runCli([...bad, "--port", port])).code }).toEqual({ bad, code: 2 });
    }
    expect(new TextDecoder().decode((await runCli(["get", "c", "--port", port, "--timeout-ms", "5000"])).stdout)).toBe(
      "two\n",
    );
    // A bad value from the environment is named by its variable.
    const fromEnv = await runCli(["get", "c"], undefined, { KV_PORT: "abc" });
    expect(fromEnv.code).toBe(2);
    expect(fromEnv.stderr).toContain('KV_PORT=abc (from the environment): --port must be 1-65535, got "abc"');
  });

  test("set --ttl gives the value an expiry, get --version prints it, and a duration without a unit is refused", async () => {
    await using server = await startTestServer();
    const port = String(server.port);
    const before = Date.now();
    expect((await runCli(["set", "session", "s", "--ttl", "1.5h", "--port", port])).code).toBe(0);
    const got = await runCli(["get", "session", "--version", "--port", port]);
    const expires = Date.parse(/expires (\S+) \(in [\d.]+ s\)/.exec(got.stderr)?.[1] ?? "");
    expect(expires).toBeGreaterThanOrEqual(before + 5_400_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 5_400_000);
    // Without --ttl the expiry is gone.
    expect((await runCli(["set", "session", "s", "--port", port])).code).toBe(0);
    expect((await runCli(["get", "session", "--version", "--port", port])).stderr).not.toContain("expires");
    for (const bad of [
      ["set", "k", "v", "--ttl", "30"],
      ["set", "k", "v", "--ttl", "0s"],
      ["get", "k", "--ttl", "30s"],
    ]) {
      const run = await runCli([...bad, "--port", port]);
      expect({ bad, code: run.code }).toEqual({ bad, code: 2 });
      expect(run.stderr).toContain("--ttl");
    }
    // A TTL past the server's limit is the server's refusal, with its reason.
    const tooLong = await runCli(["set", "k", "v", "--ttl", "3651d", "--port", port]);
    expect(tooLong.code).toBe(1);
    expect(tooLong.stderr).toContain("at most 3650 days");
    await using c = await KvClient.connect({ port: server.port });
    expect(await c.get("k")).toBeUndefined();
  });

  test("set --file - stores stdin byte for byte", async () => {
    await using server = await startTestServer();
    const bytes = new Uint8Array(randomBytes(50_000));
    expect((await runCli(["set", "blob", "--file", "-", "--port", String(server.port)], bytes)).code).toBe(0);
    await using c = await KvClient.connect({ port: server.port });
    expect(await c.get("blob")).toEqual(bytes);
    const out = await runCli(["get", "blob", "--out", "-", "--port", String(server.port)]);
    expect(out.stdout).toEqual(bytes);
  });

  test("set --file streams a file and get --out or stdout writes the value as it arrives, byte for byte", async () => {
    await using server = await startTestServer({ streamFromBytes: 1024 });
    const port = String(server.port);
    const dir = mkdtempSync(join(tmpdir(), "kvs-cli-"));
    try {
      const value = patterned(9 * 1024 * 1024 + 3, 4);
      const input = join(dir, "in.bin");
      await Bun.write(input, value);
      expect((await runCli(["set", "file-key", "--file", input, "--port", port])).code).toBe(0);
      // The file went out as a stream, and the server took it as one.
      expect(server.counters.get(Counter.streamedFrames)).toBe(1);
      const output = join(dir, "out.bin");
      expect((await runCli(["get", "file-key", "--out", output, "--port", port])).code).toBe(0);
      expect(same(new Uint8Array(await Bun.file(output).arrayBuffer()), value)).toBe(true);
      const piped = await runCli(["get", "file-key", "--out", "-", "--port", port]);
      expect(same(piped.stdout, value)).toBe(true);
      const missing = await runCli(["get", "nope", "--out", join(dir, "none.bin"), "--port", port]);
      expect(missing.code).toBe(1);
      expect(await Bun.file(join(dir, "none.bin")).exists()).toBe(false);
      expect((await runCli(["set", "k", "--file", join(dir, "absent"), "--port", port])).code).toBe(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("verify passes against a working server and prints its table", async () => {
    await using server = await startTestServer();
    const out = await runCli(["verify", "--port", String(server.port)]);
    const text = new TextDecoder().decode(out.stdout);
    expect(text).toContain("PASS  pipelined burst");
    expect(text).toContain("9 passed, 0 failed");
    expect(out.code).toBe(0);
  });

  test("usage errors exit 2 and a refused connection exits 1, naming the address and ECONNREFUSED", async () => {
    expect((await runCli([])).code).toBe(2);
    expect((await runCli(["frobnicate"])).code).toBe(2);
    expect((await runCli(["set", "only-key"])).code).toBe(2);
    expect((await runCli(["get", "k", "--port", "x"])).code).toBe(2);
    await using server = await startTestServer();
    const port = server.port;
    await server.stop();
    const refused = await runCli(["get", "k", "--port", String(port)]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`KV_ERR_CONNECT: cannot connect to 127.0.0.1:${port}: ECONNREFUSED`);
  });
});

describe("failures say why", () => {
  test("an oversized key and an oversized value are refused with the server's code and reason, in the client and the CLI", async () => {
    await using server = await startTestServer({ maxValueBytes: 1000 });
    const port = String(server.port);
    await using c = await KvClient.connect({ port: server.port });
    const key = "k".repeat(1025);
    expect(await rejection(c.set(key, "v"))).toEqual(
      anError("server answered set with internal: KV_ERR_KEY_TOO_LARGE: key of 1025 bytes exceeds the maximum of 1024"),
    );
    expect(await rejection(c.get(key))).toEqual(
      anError("KV_ERR_KEY_TOO_LARGE: key of 1025 bytes exceeds the maximum of 1024"),
    );
    // The error's code is the server's, not a generic one.
    expect(await codeOf(c.set("k", "x".repeat(1001)))).toBe("KV_ERR_VALUE_TOO_LARGE");
    expect(await codeOf(c.get(key))).toBe("KV_ERR_KEY_TOO_LARGE");
    expect(await rejection(c.set("k", "x".repeat(1001)))).toEqual(
      anError("KV_ERR_VALUE_TOO_LARGE: value of 1001 bytes exceeds the maximum of 1000"),
    );
    const cli = await runCli(["set", "k", "x".repeat(1001), "--port", port]);
    expect(cli.code).toBe(1);
    expect(cli.stderr.trim()).toBe(
      "error: server answered set with internal: KV_ERR_VALUE_TOO_LARGE: value of 1001 bytes exceeds the maximum of 1000",
    );
    const longKey = await runCli(["get", key, "--port", port]);
    expect(longKey.code).toBe(1);
    expect(longKey.stderr).toContain("KV_ERR_KEY_TOO_LARGE: key of 1025 bytes exceeds the maximum of 1024");
    // The connection still serves.
    await c.set("k", "fine");
    expect(await c.getString("k")).toBe("fine");
  });
});

describe("the three command lines", () => {
  test("each prints its version for --version alone and exits 0", () => {
    const version = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version;
    for (const [script, name] of [
      ["server", "kvs"],
      ["client", "kvs-client"],
      ["cluster", "kvs-cluster"],
    ] as const) {
      const run = Bun.spawnSync([process.execPath, "run", "--silent", script, "--version"], { cwd: root });
      expect({ script, code: run.exitCode, out: run.stdout.toString() }).toEqual({
        script,
        code: 0,
        out: `${name} ${version}\n`,
      });
    }
  });
});

describe("usage errors", () => {
  test("are one line naming the problem and pointing at --help, exit 2, on the client and the cluster", () => {
    for (const [script, args, problem] of [
      ["client", ["--nope"], "kvs-client: Unknown option '--nope' (bun run client --help"],
      ["client", ["frob"], 'kvs-client: unknown command "frob" (bun run client --help'],
      ["client", ["set"], "kvs-client: set needs KEY (bun run client --help"],
      ["cluster", ["--nope"], "cluster: Unknown option '--nope' (bun run cluster --help"],
    ] as const) {
      const run = Bun.spawnSync([process.execPath, "run", "--silent", script, ...args], { cwd: root });
      const stderr = run.stderr.toString();
      expect({ script, args, code: run.exitCode, lines: stderr.trim().split("\n").length }).toEqual({
        script,
        args,
        code: 2,
        lines: 1,
      });
      expect(stderr).toStartWith(problem);
    }
  });
});
