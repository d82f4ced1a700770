import { parseArgs } from "node:util";
import { runMicro } from "./micro.js";

const USAGE = `Usage: bun run bench [--filter REGEX] [--time MS] [--json FILE]

  --filter REGEX  run only cases whose name matches (env KV_BENCH_FILTER; default all)
  --time MS       measuring time per case (env KV_BENCH_TIME_MS; default 1000)
  --json FILE     also write the results as JSON`;

const { values } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    filter: { type: "string" },
    time: { type: "string" },
    json: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
  strict: true,
});
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const filter = new RegExp(values.filter ?? process.env.KV_BENCH_FILTER ?? ".", "i");
const timeMs = Number(values.time ?? process.env.KV_BENCH_TIME_MS ?? 1000);
if (!Number.isFinite(timeMs) || timeMs <= 0) {
  console.error(`--time must be a positive number of milliseconds\n\n${USAGE}`);
  process.exit(2);
}

console.log(`bun ${Bun.version} on ${process.platform}/${process.arch}, ${navigator.hardwareConcurrency} cores`);
const results = await runMicro(filter, timeMs);
if (results.length === 0) {
  console.error(`no case matches ${filter}`);
  process.exit(2);
}
console.table(results);
if (values.json) await Bun.write(values.json, `${JSON.stringify({ micro: results }, null, 2)}\n`);
