import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { useBackends } from "./support/backends.js";
import { startTestServer } from "./support/harness.js";
import { root } from "./support/process.js";

// Starts DynamoDB Local or server processes; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

/**
 * Builds test/seed-client/seed_client.cc against proto/kv.proto with protoc and
 * the C++ protobuf runtime. Needs protoc, g++ and libprotobuf-dev; .ci/run
 * installs them, so in CI their absence fails the test instead of skipping it.
 */
const tools = Bun.which("protoc") !== null && Bun.which("g++") !== null;
const required = process.env.CI === "true";
const backends = useBackends();
const build = mkdtempSync(join(tmpdir(), "kvs-seed-"));
afterAll(() => rmSync(build, { recursive: true, force: true }));

function run(cmd: string[]): void {
  const out = Bun.spawnSync(cmd, { cwd: root, stderr: "pipe", stdout: "pipe" });
  if (out.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed:\n${out.stderr.toString()}`);
}

describe("a client compiled from the seed's schema by another protobuf runtime", () => {
  test.skipIf(!tools && !required)("C++ gets correct answers: pipelined, byte-exact, and past bad input", async () => {
    run(["protoc", "-Iproto", `--cpp_out=${build}`, "proto/kv.proto"]);
    const binary = join(build, "seed_client");
    run([
      "g++",
      "-std=c++17",
      "-O1",
      `-I${build}`,
      "-o",
      binary,
      "test/seed-client/seed_client.cc",
      join(build, "kv.pb.cc"),
      "-lprotobuf",
      "-pthread",
    ]);
    await using server = await startTestServer({
      store: "dynamodb",
      dynamodbEndpoint: backends.ddb.endpoint,
      kmsEndpoint: backends.kms.endpoint,
    });
    const proc = Bun.spawn([binary, String(server.port)], { stdout: "pipe", stderr: "pipe" });
    const [stdout, stderr, code] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    // libprotobuf logs that proto2 string fields carry invalid UTF-8, and sends them anyway: the case under test.
    expect(stderr).not.toContain("FAIL");
    expect(stdout).toContain("all checks passed");
    expect(code).toBe(0);
  });
});
