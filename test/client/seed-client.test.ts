import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { useBackends } from "../support/backends.js";
import { startTestServer } from "../support/harness.js";
import { root } from "../support/process.js";
import { lacking } from "../support/system-tools.js";

// Starts DynamoDB Local or server processes; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

/**
 * Builds test/seed-client/seed_client.cc against proto/kv.proto with protoc and
 * the C++ protobuf runtime. Needs protoc, g++ and libprotobuf-dev; .ci/run
 * installs them, so in CI their absence fails the test instead of skipping it.
 */
const noCompiler = lacking("the seed-schema C++ client tests", "protoc", "g++");
const backends = useBackends();
const build = mkdtempSync(join(tmpdir(), "kvs-seed-"));
afterAll(() => rmSync(build, { recursive: true, force: true }));

function run(cmd: string[]): void {
  const out = Bun.spawnSync(cmd, { cwd: root, stderr: "pipe", stdout: "pipe" });
  if (out.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed:\n${out.stderr.toString()}`);
}

/** Generates C++ for `proto` (saved as kv.proto, the name the clients include) and builds `source` against it. */
function buildClient(name: string, proto: string, source: string): string {
  const dir = join(build, name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(root, proto), join(dir, "kv.proto"));
  run(["protoc", `-I${dir}`, `--cpp_out=${dir}`, join(dir, "kv.proto")]);
  const binary = join(dir, name);
  run(["g++", "-std=c++17", "-O1", `-I${dir}`, "-o", binary, source, join(dir, "kv.pb.cc"), "-lprotobuf", "-pthread"]);
  return binary;
}

/** Runs a built client against a fresh server on the shared DynamoDB Local. */
async function runClient(binary: string): Promise<{ stdout: string; stderr: string; code: number }> {
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
  return { stdout, stderr, code };
}

describe("clients compiled by another protobuf runtime", () => {
  test.skipIf(noCompiler)(
    "C++ from the seed's own schema gets correct answers: pipelined, byte-exact, and past bad input",
    async () => {
      const binary = buildClient("seed_client", "test/seed-client/seed.proto", "test/seed-client/seed_client.cc");
      const { stdout, stderr, code } = await runClient(binary);
      // libprotobuf logs that proto2 string fields carry invalid UTF-8, and sends them anyway: the case under test.
      expect(stderr).not.toContain("FAIL");
      expect(stdout).toContain("all checks passed");
      expect(code).toBe(0);
    },
  );

  test.skipIf(noCompiler)(
    "C++ from the current schema deletes, tests, lists in pages and clears, pipelined with gets and sets",
    async () => {
      const binary = buildClient("api_client", "proto/kv.proto", "test/seed-client/api_client.cc");
      const { stdout, stderr, code } = await runClient(binary);
      expect(stderr).not.toContain("FAIL");
      expect(stdout).toContain("all checks passed");
      expect(code).toBe(0);
    },
  );
});
