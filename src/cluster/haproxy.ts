import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { canConnect } from "../local/free-port.js";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";

/** The HAProxy backends a node is in: TCP (the protocol) and HTTP (the gateway). */
export const Backend = { tcp: "kv", http: "kv_http" } as const;
export type Backend = (typeof Backend)[keyof typeof Backend];

/** Where one node listens. */
export interface NodeAddress {
  readonly name: string;
  readonly port: number;
  readonly httpPort: number;
}

/** Settings of the load balancer. */
export interface HaproxySettings {
  /** Directory for the config and the runtime API socket. */
  readonly dir: string;
  readonly port: number;
  readonly httpPort: number;
  readonly nodes: readonly NodeAddress[];
}

/** Health checks: a node that stops accepting is out of rotation within about a second. */
const CHECK = "check inter 500ms fall 2 rise 1";

/**
 * HAProxy in front of the nodes, in TCP mode for both the protocol and the
 * HTTP gateway (a client's connection goes to one node for its life), with
 * `leastconn` (one of the algorithms that allow servers added at run time)
 * and its runtime API on a Unix socket, through which nodes are added,
 * drained and deleted without a reload.
 */
export class Haproxy implements AsyncDisposable {
  readonly #proc: Subprocess;
  readonly socketPath: string;
  readonly port: number;
  readonly httpPort: number;

  readonly #configPath: string;

  private constructor(proc: Subprocess, configPath: string, socketPath: string, port: number, httpPort: number) {
    this.#proc = proc;
    this.#configPath = configPath;
    this.socketPath = socketPath;
    this.port = port;
    this.httpPort = httpPort;
  }

  /** The haproxy binary on PATH; throws a clear message when there is none. */
  static binary(): string {
    const binary = Bun.which("haproxy");
    if (binary === null) {
      throw new KvError(
        ErrorCode.Config,
        "haproxy is not installed: on Debian or Ubuntu, `apt-get install haproxy` (the cluster needs 2.4 or later)",
      );
    }
    return binary;
  }

  /** Starts HAProxy; rejects with a clear message when the binary is missing or it does not come up. */
  static async start(settings: HaproxySettings): Promise<Haproxy> {
    const binary = Haproxy.binary();
    const socketPath = join(settings.dir, "haproxy.sock");
    const configPath = join(settings.dir, "haproxy.cfg");
    writeFileSync(configPath, haproxyConfig({ ...settings, socketPath }));
    const proc = Bun.spawn([binary, "-f", configPath, "-db"], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const lb = new Haproxy(proc, configPath, socketPath, settings.port, settings.httpPort);
    const deadline = Date.now() + 10_000;
    while (!(await canConnect("127.0.0.1", settings.port))) {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill("SIGKILL");
        const why = await new Response(proc.stderr).text();
        throw new KvError(ErrorCode.Config, `haproxy did not start: ${why.trim() || `exit ${proc.exitCode}`}`);
      }
      await Bun.sleep(20);
    }
    return lb;
  }

  /** Sends one runtime API command and resolves its answer; rejects when HAProxy answers an error. */
  async command(line: string): Promise<string> {
    const chunks: string[] = [];
    const done = Promise.withResolvers<void>();
    const decoder = new TextDecoder();
    await Bun.connect({
      unix: this.socketPath,
      socket: {
        open(s) {
          s.write(`${line}\n`);
        },
        data(_s, bytes) {
          chunks.push(decoder.decode(bytes, { stream: true }));
        },
        close() {
          done.resolve();
        },
        error(_s, err) {
          done.reject(err);
        },
      },
    });
    await done.promise;
    const answer = chunks.join("").trim();
    // Commands that change state answer nothing, or one of these, when they worked; anything else is a refusal.
    if (!line.startsWith("show ") && answer !== "" && !/^(New server registered|Server deleted)\.$/.test(answer)) {
      throw new KvError(ErrorCode.Config, `haproxy refused "${line}": ${answer}`);
    }
    return answer;
  }

  /** Adds a node to both backends and puts it in rotation (servers added at run time start in maintenance). */
  async add(node: NodeAddress): Promise<void> {
    for (const [backend, port] of [
      [Backend.tcp, node.port],
      [Backend.http, node.httpPort],
    ] as const) {
      await this.command(`add server ${backend}/${node.name} 127.0.0.1:${port} ${CHECK}`);
      await this.command(`enable health ${backend}/${node.name}`);
      await this.command(`enable server ${backend}/${node.name}`);
    }
  }

  /** Stops sending new connections to a node; its open connections go on. */
  async drain(name: string): Promise<void> {
    for (const backend of Object.values(Backend)) await this.command(`set server ${backend}/${name} state drain`);
  }

  /** Deletes a node from both backends, closing whatever connections it still has. */
  async remove(name: string): Promise<void> {
    for (const backend of Object.values(Backend)) {
      await this.command(`set server ${backend}/${name} state maint`);
      await this.command(`shutdown sessions server ${backend}/${name}`);
      await this.#deleteServer(`${backend}/${name}`);
    }
  }

  /**
   * `del server`, once the sessions just shut down have let go: HAProxy closes
   * them on its next pass and refuses the delete until then, with nothing to
   * wait on but asking again.
   */
  async #deleteServer(server: string): Promise<void> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      try {
        await this.command(`del server ${server}`);
        return;
      } catch (err) {
        if (!/still has connections attached/.test(errorMessage(err)) || Date.now() > deadline) throw err;
        await Bun.sleep(20);
      }
    }
  }

  /** The servers of the TCP backend and their state, as HAProxy reports them: name → operational state (2 is up). */
  async servers(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const line of (await this.command(`show servers state ${Backend.tcp}`)).split("\n")) {
      const f = line.split(" ");
      if (f[1] === Backend.tcp && f[3] !== undefined) out.set(f[3], Number(f[5]));
    }
    return out;
  }

  /** Client connections now: client source port → the node it is on (connections not yet on a node left out). */
  async sessions(): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    for (const line of (await this.command("show sess")).split("\n")) {
      const src = /\bsrc=[^ ]*:(\d+)/.exec(line)?.[1];
      const srv = /\bsrv=([^ ]+)/.exec(line)?.[1];
      if (src !== undefined && srv !== undefined && srv !== "<none>") out.set(Number(src), srv);
    }
    return out;
  }

  /** Stops HAProxy and removes its configuration and runtime socket from the cluster's directory. */
  async stop(): Promise<void> {
    this.#proc.kill("SIGTERM");
    await this.#proc.exited;
    rmSync(this.#configPath, { force: true });
    rmSync(this.socketPath, { force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** The HAProxy configuration of a cluster. */
export function haproxyConfig(s: HaproxySettings & { socketPath: string }): string {
  // A frontend on `port` and its backend of every node's `nodePort`.
  const pair = (backend: Backend, port: number, nodePort: (n: NodeAddress) => number) => `frontend ${backend}_front
  bind 127.0.0.1:${port}
  default_backend ${backend}

backend ${backend}
  balance leastconn
${s.nodes.map((n) => `  server ${n.name} 127.0.0.1:${nodePort(n)} ${CHECK}`).join("\n")}
`;
  return `# Written by \`bun run cluster\`; nodes come and go through the runtime API socket.
global
  stats socket ${s.socketPath} mode 600 level admin
  # Within the file-descriptor limits of a default shell.
  maxconn 4000

defaults
  mode tcp
  # A node that refuses the connection (it crashed, and the health check has not
  # noticed yet) is retried, then another is tried: nothing was sent to it yet.
  retries 2
  option redispatch
  timeout connect 2s
  # Client connections are long-lived and may idle; the nodes end them when they drain.
  timeout client 1h
  timeout server 1h

${pair(Backend.tcp, s.port, (n) => n.port)}
${pair(Backend.http, s.httpPort, (n) => n.httpPort)}`;
}
