import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { root } from "./support/process.js";

describe("bun run bench", () => {
  test("a short concurrency run writes JSON and an HTML report with its figures", () => {
    const dir = mkdtempSync(join(tmpdir(), "kvs-bench-"));
    try {
      const json = join(dir, "out.json");
      const html = join(dir, "out.html");
      const run = Bun.spawnSync(
        [
          process.execPath,
          "bench/main.ts",
          "--filter",
          "concurrency",
          "--held",
          "20",
          "--json",
          json,
          "--report",
          html,
        ],
        { cwd: root, stdout: "pipe", stderr: "pipe" },
      );
      expect(run.exitCode).toBe(0);
      const out = JSON.parse(readFileSync(json, "utf8")) as { results: { concurrency: Record<string, number>[] } };
      const row = out.results.concurrency[0];
      expect(row?.held).toBe(20);
      expect(row?.served).toBe(20);
      expect(readFileSync(html, "utf8")).toContain("<h2>concurrency</h2>");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a filter that matches nothing, or a bad flag, exits 2", () => {
    const none = Bun.spawnSync([process.execPath, "bench/main.ts", "--filter", "no-such-scenario"], {
      cwd: root,
      stderr: "pipe",
    });
    expect(none.exitCode).toBe(2);
    const bad = Bun.spawnSync([process.execPath, "bench/main.ts", "--connections", "a,b"], {
      cwd: root,
      stderr: "pipe",
    });
    expect(bad.exitCode).toBe(2);
  });
});
