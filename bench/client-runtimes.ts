import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BenchSettings, pipelineLoad, type Row } from "./scenarios.js";
import { startKvs } from "./targets.js";

const root = join(import.meta.dir, "..");
/** Gets each client keeps in flight on its one connection. */
const DEPTH = 64;

/** The driver each runtime runs: pipelined gets of one key through kvs-client for `seconds`. */
const DRIVER = `import { KvClient } from "./index.js";
const [port, ms, depth, warm] = process.argv.slice(2).map(Number);
const c = await KvClient.connect({ port });
await c.set("k", new Uint8Array(24));
for (let i = 0; i < warm; i++) await c.get("k");
let done = 0;
const until = performance.now() + ms;
const lane = async () => { while (performance.now() < until) { await c.get("k"); done++; } };
const t0 = performance.now();
await Promise.all(Array.from({ length: depth }, lane));
console.log(JSON.stringify({ ops: done, seconds: (performance.now() - t0) / 1000 }));
await c.close();
`;

/**
 * Pipelined gets/s one kvs-client process drives on one connection against
 * the memory store, under Node and under Bun (the package's own build for
 * Node, bundled as npm users get it), beside the bench's lean load generator
 * at the same shape: the ceiling of what the server answers.
 */
export async function clientRuntimes(s: BenchSettings): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), "kvs-client-bench-"));
  try {
    const built = await Bun.build({
      entrypoints: [join(root, "client/index.ts")],
      target: "node",
      format: "esm",
      outdir: dir,
      naming: "index.js",
    });
    if (!built.success) throw new Error(`building the client failed: ${built.logs.join("; ")}`);
    writeFileSync(join(dir, "driver.mjs"), DRIVER);
    await using target = await startKvs("kvs memory", ["--store", "memory", "--log-level", "error"]);
    const ms = s.quick ? 300 : Math.max(3000, s.durationMs);
    const warm = s.quick ? 2000 : 20000;
    const ceiling = await pipelineLoad("kvs", target.port, 1, DEPTH, "get", ms, 24);
    const generator = ceiling.ops / ceiling.seconds;
    const rows: Row[] = [
      { client: "bench/pipeline-load.ts (ceiling)", runtime: "bun", "gets/s": Math.round(generator) },
    ];
    const rates: Record<string, number> = {};
    for (const runtime of ["bun", "node"] as const) {
      const bin = runtime === "bun" ? process.execPath : "node";
      const proc = Bun.spawn([bin, "driver.mjs", String(target.port), String(ms), String(DEPTH), String(warm)], {
        cwd: dir,
        stdout: "pipe",
        stderr: "pipe",
      });
      const [out, err, code] = await Promise.all([
        new Response(proc.stdout).text(),
        new Response(proc.stderr).text(),
        proc.exited,
      ]);
      if (code !== 0) throw new Error(`the ${runtime} client failed (${code}): ${err}`);
      const r = JSON.parse(out.trim()) as { ops: number; seconds: number };
      rates[runtime] = r.ops / r.seconds;
      s.log(`client runtimes: ${runtime}: ${Math.round(rates[runtime])} gets/s`);
    }
    for (const runtime of ["bun", "node"] as const) {
      const rate = rates[runtime] as number;
      rows.push({
        client: "kvs-client",
        runtime,
        "gets/s": Math.round(rate),
        "÷ Bun client": Number((rate / (rates.bun as number)).toFixed(2)),
        "÷ ceiling": Number((rate / generator).toFixed(2)),
      });
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
