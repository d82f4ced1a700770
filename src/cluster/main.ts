import { existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import pkg from "../../package.json" with { type: "json" };
import { createLogger, type LogLevel } from "../log.js";
import { errorMessage } from "../wire/errors.js";
import { Cluster } from "./cluster.js";

const USAGE = `Usage:
  bun run cluster [--nodes N] [--port P] [--http-port P] [--dir DIR]   start a cluster; Ctrl-C stops it
  bun run cluster add [--dir DIR]                                       start a node and put it behind the load balancer
  bun run cluster remove NODE [--dir DIR]                               drain NODE, stop it gracefully, take it out
  bun run cluster kill NODE [--dir DIR]                                 SIGKILL NODE (a crash), take it out
  bun run cluster status [--dir DIR]                                    the load balancer, the nodes and their health

A cluster is DynamoDB Local, a local KMS endpoint, N server nodes on them and HAProxy
(apt-get install haproxy) in front, for the protocol and for HTTP. The commands talk to
the running cluster through DIR/control.sock.

  --nodes N       nodes to start with (default 3)
  --port P        load balancer port for the protocol (default: a free port)
  --http-port P   load balancer port for HTTP (default: a free port)
  --dir DIR       working directory (default .kvs-cluster)
  --log-level L   debug, info, warn or error (default info; debug shows the nodes' logs)`;

function usage(message: string): never {
  const brief = message.replace(/\. To specify a positional argument[\s\S]*$/, "");
  console.error(`cluster: ${brief} (bun run cluster --help lists the commands and flags)`);
  process.exit(2);
}

let parsed: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    args: Bun.argv.slice(2),
    allowPositionals: true,
    options: {
      nodes: { type: "string", default: "3" },
      port: { type: "string", default: "0" },
      "http-port": { type: "string", default: "0" },
      dir: { type: "string", default: ".kvs-cluster" },
      "log-level": { type: "string", default: "info" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean" },
    },
  });
}
try {
  parsed = parse();
} catch (err) {
  usage(errorMessage(err));
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
if (values.version) {
  console.log(`kvs-cluster ${pkg.version}`);
  process.exit(0);
}
const dir = resolve(values.dir);
const control = join(dir, "control.sock");
const [command = "start", ...rest] = positionals;

function whole(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65535) usage(`--${name} must be a whole number, got "${text}"`);
  return n;
}

/** Sends a command to the running cluster and prints its answer; exits 1 when there is none or it failed. */
async function send(path: string, method = "POST"): Promise<never> {
  let res: Response;
  try {
    res = await fetch(`http://cluster${path}`, { method, unix: control });
  } catch {
    console.error(`cluster: no cluster is running in ${dir} (start one with \`bun run cluster\`)`);
    process.exit(1);
  }
  const text = await res.text();
  (res.ok ? console.log : console.error)(text.trimEnd());
  process.exit(res.ok ? 0 : 1);
}

switch (command) {
  case "add":
    if (rest.length > 0) usage("add takes no NODE");
    await send("/add");
    break;
  case "remove":
  case "kill": {
    const [node, ...extra] = rest;
    if (node === undefined || extra.length > 0) usage(`${command} takes one NODE, such as node2`);
    await send(`/${command}?node=${encodeURIComponent(node)}`);
    break;
  }
  case "status":
    await send("/status", "GET");
    break;
  case "start":
    await start();
    break;
  default:
    usage(`unknown command "${command}"`);
}

async function start(): Promise<void> {
  if (rest.length > 0) usage(`unexpected "${rest.join(" ")}"`);
  const nodes = whole("nodes", values.nodes);
  if (nodes < 1) usage("--nodes must be at least 1");
  const level = values["log-level"] as LogLevel;
  if (!["debug", "info", "warn", "error"].includes(level)) usage(`unknown --log-level "${level}"`);
  const log = createLogger(level);
  if (existsSync(control)) {
    const alive = await fetch("http://cluster/status", { unix: control }).then(
      () => true,
      () => false,
    );
    if (alive) {
      console.error(`cluster: a cluster is already running in ${dir}; stop it first, or use another --dir`);
      process.exit(1);
    }
    rmSync(control); // Left by a cluster that did not stop cleanly.
  }
  let cluster: Cluster;
  try {
    cluster = await Cluster.start({
      nodes,
      dir,
      port: whole("port", values.port),
      httpPort: whole("http-port", values["http-port"]),
      log,
    });
  } catch (err) {
    console.error(`cluster: ${errorMessage(err)}`);
    process.exit(1);
  }
  const describe = () => ({
    tcp: `127.0.0.1:${cluster.port}`,
    http: `http://127.0.0.1:${cluster.httpPort}`,
    dynamodb: cluster.dynamodbEndpoint,
    nodes: cluster.nodes,
  });
  const server = Bun.serve({
    unix: control,
    async fetch(req) {
      const url = new URL(req.url);
      const node = url.searchParams.get("node") ?? "";
      try {
        switch (`${req.method} ${url.pathname}`) {
          case "GET /status":
            return Response.json({ ...describe(), health: Object.fromEntries(await cluster.servers()) });
          case "POST /add": {
            const added = await cluster.add();
            return new Response(
              `${added.name} added: 127.0.0.1:${added.port} (http ${added.httpPort}), pid ${added.pid}\n`,
            );
          }
          case "POST /remove":
            await cluster.remove(node);
            return new Response(`${node} drained, stopped and removed\n`);
          case "POST /kill":
            await cluster.kill(node);
            return new Response(`${node} killed and removed\n`);
          default:
            return new Response("unknown command\n", { status: 404 });
        }
      } catch (err) {
        return new Response(`${errorMessage(err)}\n`, { status: 409 });
      }
    },
  });
  const d = describe();
  console.log(`cluster of ${d.nodes.length} nodes: load balancer ${d.tcp} (protocol), ${d.http} (HTTP)`);
  for (const n of d.nodes) console.log(`  ${n.name}: 127.0.0.1:${n.port} (http ${n.httpPort}), pid ${n.pid}`);
  console.log(`control: bun run cluster add | remove NODE | kill NODE | status  (--dir ${values.dir}); Ctrl-C stops`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping the cluster", { signal });
    server.stop(true);
    await cluster.stop();
    rmSync(control, { force: true });
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}
