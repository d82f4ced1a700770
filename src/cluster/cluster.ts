import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import type { Subprocess } from "bun";
import { type DynamoDbLocal, startDynamoDbLocal } from "../local/dynamodb-local.js";
import { freePort, portFree } from "../local/free-port.js";
import { LocalKms } from "../local/kms-endpoint.js";
import type { Logger } from "../log.js";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";
import { Haproxy, type NodeAddress } from "./haproxy.js";

/** The repository root, where `src/main.ts` is. */
const ROOT = resolve(import.meta.dir, "../..");

/** Settings of a local cluster. */
export interface ClusterOptions {
  /** Nodes to start with. */
  readonly nodes: number;
  /** Working directory: HAProxy's config and runtime socket. */
  readonly dir: string;
  /** Load balancer ports; 0 picks free ones. */
  readonly port?: number;
  readonly httpPort?: number;
  /** Extra flags for every node (`bun src/main.ts ...`). */
  readonly nodeArgs?: readonly string[];
  /**
   * A DynamoDB Local to share (its endpoint), left running when the cluster
   * stops; absent: the cluster starts one of its own and stops it.
   */
  readonly dynamodb?: { readonly endpoint: string };
  readonly log: Logger;
}

/** A node: a server process behind the load balancer. */
export interface ClusterNode extends NodeAddress {
  readonly pid: number;
}

interface RunningNode extends ClusterNode {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
}

/** Table and key the nodes share. */
const TABLE = "kvs-cluster";
const KEY = "alias/kvs-cluster";

/**
 * A multi-active cluster on one machine: one DynamoDB Local and one local
 * KMS endpoint, N stateless server nodes on them, and HAProxy in front.
 * Every node serves every key: the state is in DynamoDB, which serialises
 * the writes of each item, so no node owns anything and none replicates.
 *
 * Nodes join with {@link add} and leave with {@link remove}, in the order an
 * ECS service and its NLB target group use: a leaving node is first drained
 * in HAProxy (no new connections), then stopped gracefully (SIGTERM: it
 * answers every request it read, says goodbye, closes), then deleted from
 * HAProxy. {@link kill} is the crash, for tests.
 */
export class Cluster implements AsyncDisposable {
  readonly #options: ClusterOptions;
  readonly #ddb: Pick<DynamoDbLocal, "endpoint" | "stop">;
  readonly #kms: LocalKms;
  #haproxy: Haproxy | undefined;
  readonly #nodes = new Map<string, RunningNode>();
  #nextId = 1;
  #stopping: Promise<void> | undefined;

  private constructor(options: ClusterOptions, ddb: Pick<DynamoDbLocal, "endpoint" | "stop">, kms: LocalKms) {
    this.#options = options;
    this.#ddb = ddb;
    this.#kms = kms;
  }

  /** Starts DynamoDB Local, the KMS endpoint, `options.nodes` nodes and HAProxy; on any failure stops what it started. */
  static async start(options: ClusterOptions): Promise<Cluster> {
    if (!Number.isInteger(options.nodes) || options.nodes < 1) {
      throw new KvError(ErrorCode.Config, `--nodes must be a whole number of at least 1, got ${options.nodes}`);
    }
    Haproxy.binary(); // Before anything starts: a missing load balancer is the likeliest failure.
    // HAProxy binds with SO_REUSEPORT, so on a busy port it would start beside the other listener and split traffic.
    for (const [flag, port] of [
      ["--port", options.port],
      ["--http-port", options.httpPort],
    ] as const) {
      if (port && !(await portFree(port))) {
        throw new KvError(ErrorCode.Config, `${flag} ${port}: the port is in use (another cluster, or another server)`);
      }
    }
    mkdirSync(options.dir, { recursive: true });
    const shared = options.dynamodb;
    const ddb = shared === undefined ? await startDynamoDbLocal() : { endpoint: shared.endpoint, stop: async () => {} };
    const cluster = new Cluster(options, ddb, LocalKms.start());
    try {
      // Nodes one after another: the first creates the table and the key, the rest find them.
      const first = await cluster.#startNode();
      const rest = await Promise.all(Array.from({ length: options.nodes - 1 }, () => cluster.#startNode()));
      cluster.#haproxy = await Haproxy.start({
        dir: options.dir,
        port: options.port || (await freePort()),
        httpPort: options.httpPort || (await freePort()),
        nodes: [first, ...rest],
      });
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  /** The load balancer's TCP port. */
  get port(): number {
    return this.#lb.port;
  }

  /** The load balancer's HTTP port. */
  get httpPort(): number {
    return this.#lb.httpPort;
  }

  /** The DynamoDB Local endpoint the nodes share. */
  get dynamodbEndpoint(): string {
    return this.#ddb.endpoint;
  }

  /** The nodes running now, oldest first. */
  get nodes(): ClusterNode[] {
    return [...this.#nodes.values()].map(({ name, port, httpPort, pid }) => ({ name, port, httpPort, pid }));
  }

  /** HAProxy's view: node name → operational state (2 up, 0 down). */
  servers(): Promise<Map<string, number>> {
    return this.#lb.servers();
  }

  /** Sends no new connections to `name`; those it has go on (HAProxy's drain state). */
  async stopRouting(name: string): Promise<void> {
    this.#node(name);
    await this.#lb.drain(name);
  }

  /** Client connections HAProxy holds now: client source port → node name. */
  sessions(): Promise<Map<number, string>> {
    return this.#lb.sessions();
  }

  /** Starts a node and puts it in rotation. */
  async add(): Promise<ClusterNode> {
    const node = await this.#startNode();
    try {
      await this.#lb.add(node);
    } catch (err) {
      node.proc.kill("SIGKILL");
      this.#nodes.delete(node.name);
      throw err;
    }
    this.#options.log.info("node added", { node: node.name, port: node.port });
    return node;
  }

  /** Drains `name` in HAProxy, stops it gracefully, then deletes it from HAProxy. */
  async remove(name: string): Promise<void> {
    const node = this.#node(name);
    await this.#lb.drain(name);
    node.proc.kill("SIGTERM");
    const code = await node.proc.exited;
    this.#nodes.delete(name);
    await this.#lb.remove(name);
    this.#options.log.info("node removed", { node: name, exit: code });
    if (code !== 0) throw new KvError(ErrorCode.Config, `${name} exited ${code} while draining`);
  }

  /** Kills `name` with SIGKILL, as a crash would, then deletes it from HAProxy. */
  async kill(name: string): Promise<void> {
    const node = this.#node(name);
    node.proc.kill("SIGKILL");
    await node.proc.exited;
    this.#nodes.delete(name);
    await this.#lb.remove(name);
    this.#options.log.info("node killed", { node: name });
  }

  /** Stops every node gracefully, then HAProxy, the KMS endpoint and DynamoDB Local. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await Promise.all(
        [...this.#nodes.values()].map(async (n) => {
          n.proc.kill("SIGTERM");
          await n.proc.exited;
        }),
      );
      this.#nodes.clear();
      await this.#haproxy?.stop();
      await this.#kms.stop();
      await this.#ddb.stop();
    })();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  get #lb(): Haproxy {
    if (this.#haproxy === undefined) throw new KvError(ErrorCode.Config, "the load balancer is not running");
    return this.#haproxy;
  }

  #node(name: string): RunningNode {
    const node = this.#nodes.get(name);
    if (node === undefined) {
      const known = [...this.#nodes.keys()].join(", ") || "none";
      throw new KvError(ErrorCode.Config, `no node named ${JSON.stringify(name)} (running: ${known})`);
    }
    return node;
  }

  async #startNode(): Promise<RunningNode> {
    const name = `node${this.#nextId++}`;
    const args = [
      ...["--port", "0", "--http-port", "0", "--admin-port", "0"],
      ...["--dynamodb-endpoint", this.#ddb.endpoint, "--kms-endpoint", this.#kms.endpoint],
      ...["--table", TABLE, "--kms-key-id", KEY, "--region", "us-east-1"],
      ...(this.#options.nodeArgs ?? []),
    ];
    const proc = Bun.spawn([process.execPath, "src/main.ts", ...args], {
      cwd: ROOT,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const line = await firstLine(proc);
    const m = /listening on [^ ]+:(\d+).* http=[^ ]+:(\d+)/.exec(line);
    if (m === null) {
      proc.kill("SIGKILL");
      throw new KvError(ErrorCode.Config, `${name} did not start: ${line || (await new Response(proc.stderr).text())}`);
    }
    // Its log goes on being read, so a chatty node never blocks on a full pipe.
    void drainLines(proc.stderr, (l) => this.#options.log.debug(l, { node: name }));
    void drainLines(proc.stdout, () => {});
    const node: RunningNode = { name, port: Number(m[1]), httpPort: Number(m[2]), pid: proc.pid, proc };
    this.#nodes.set(name, node);
    return node;
  }
}

/** The first line a process writes to stdout ("" if it exits first). */
async function firstLine(proc: Subprocess<"ignore", "pipe", "pipe">): Promise<string> {
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) return text;
      text += decoder.decode(value, { stream: true });
    }
  } catch (err) {
    return `could not read its output: ${errorMessage(err)}`;
  } finally {
    reader.releaseLock();
  }
  return text.split("\n")[0] as string;
}

async function drainLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let rest = "";
  try {
    for await (const chunk of stream) {
      const lines = (rest + decoder.decode(chunk, { stream: true })).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) if (line) onLine(line);
    }
  } catch {
    // The process is gone.
  }
}
