import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const root = join(import.meta.dir, "..");

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

describe("generated code", () => {
  test("src/gen is what `bun run generate` produces from proto/ now", () => {
    const out = mkdtempSync(join(tmpdir(), "kvs-gen-"));
    try {
      const run = Bun.spawnSync([process.execPath, "run", "generate", "--output", out], { cwd: root, stderr: "pipe" });
      expect(run.stderr.toString()).not.toContain("Failure");
      expect(run.exitCode).toBe(0);
      const fresh = join(out, "src/gen");
      const committed = join(root, "src/gen");
      expect(files(fresh)).toEqual(files(committed));
      for (const f of files(fresh)) {
        expect(readFileSync(join(committed, f), "utf8")).toBe(readFileSync(join(fresh, f), "utf8"));
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  test("the bytes twin is the seed schema with string fields declared bytes", () => {
    const schema = (path: string) =>
      readFileSync(join(root, path), "utf8")
        .replace(/\/\/.*$/gm, "")
        .replace(/\s+/g, " ")
        .trim();
    const seed = schema("proto/kv.proto");
    const twin = schema("proto/wire/kv_bytes.proto");
    expect(twin).toBe(seed.replace(/\bstring\b/g, "bytes").replace("package kv.proto;", "package kv.proto.wire;"));
  });

  test("proto/kv.proto keeps every message, field and enum value of the seed's schema unchanged", () => {
    const declarations = (path: string) => {
      const out: string[] = [];
      let scope: string[] = [];
      for (const raw of readFileSync(join(root, path), "utf8").split("\n")) {
        const line = raw.replace(/\/\/.*$/, "").trim();
        const open = /^(message|enum) (\w+) \{/.exec(line);
        if (open && !line.endsWith("{}")) scope = [...scope, open[2] as string];
        else if (open) continue;
        else if (line === "}") scope = scope.slice(0, -1);
        else if (line.includes("=")) out.push(`${scope.join(".")}: ${line}`);
      }
      return out;
    };
    const seed = declarations("test/seed-client/seed.proto");
    const current = new Set(declarations("proto/kv.proto"));
    expect(seed.length).toBeGreaterThan(20);
    expect(seed.filter((d) => !current.has(d))).toEqual([]);
  });
});
