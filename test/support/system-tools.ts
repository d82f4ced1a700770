/**
 * System tools some tests need besides Bun and Java, and what provides them.
 * `bun run test` (scripts/test.sh) installs the Debian ones when it can.
 */
const PROVIDERS: Record<string, string> = {
  haproxy: "sudo apt-get install -y haproxy",
  openssl: "sudo apt-get install -y openssl",
  protoc: "sudo apt-get install -y protobuf-compiler libprotobuf-dev",
  "g++": "sudo apt-get install -y g++",
  ss: "sudo apt-get install -y iproute2",
  "cfn-lint": "pip install cfn-lint",
};

/** Whether this run must have every tool (CI): then a missing one fails its tests instead of skipping them. */
export const toolsRequired = process.env.CI === "true";

/**
 * True when tests that need `tools` should be skipped: some are not on
 * PATH and this is not CI. Says so in one line, naming how to get them.
 */
export function lacking(what: string, ...tools: string[]): boolean {
  const missing = tools.filter((t) => Bun.which(t) === null);
  if (missing.length === 0 || toolsRequired) return false;
  const how = [...new Set(missing.map((t) => PROVIDERS[t] ?? `install ${t}`))].join("; ");
  console.warn(`skipping ${what}: needs ${missing.join(", ")} (bun run test installs it, or: ${how})`);
  return true;
}
