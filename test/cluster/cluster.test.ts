import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { clusterStress } from "../../bench/cluster-stress.js";
import { KvClient } from "../../client/kv-client.js";
import { Cluster } from "../../src/cluster/cluster.js";
import { silentLogger } from "../../src/log.js";
import { root, untilLine } from "../support/process.js";
import { lacking } from "../support/system-tools.js";

// Starts DynamoDB Local, HAProxy and several servers; this bound only turns a hang into a failure.
setDefaultTimeout(180_000);

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "kvs-cluster-test-"));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits until HAProxy reports exactly `names`, all up; each look is a runtime API round trip. */
async function untilServers(cluster: Cluster, names: string[]): Promise<void> {
  for (;;) {
    const servers = await cluster.servers();
    const up = [...servers].filter(([, state]) => state === 2).map(([name]) => name);
    if (servers.size === names.length && up.sort().join() === [...names].sort().join()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const noHaproxy = lacking("the cluster tests", "haproxy");

describe.skipIf(noHaproxy)("the local cluster", () => {
  test("starts nodes behind HAProxy, serves every key through any node, and stops leaving no process behind", async () => {
    const dir = tempDir();
    try {
      const cluster = await Cluster.start({ nodes: 2, dir, log: silentLogger });
      const pids = cluster.nodes.map((n) => n.pid);
      await untilServers(cluster, ["node1", "node2"]);
      await using c = await KvClient.connect({ reconnect: true, port: cluster.port });
      await c.set("shared", "one value");
      // Through each node directly: the state is in DynamoDB, not in a node.
      for (const node of cluster.nodes) {
        await using direct = await KvClient.connect({ reconnect: true, port: node.port });
        expect(await direct.getString("shared")).toBe("one value");
      }
      // And over HTTP through the load balancer.
      expect(await (await fetch(`http://127.0.0.1:${cluster.httpPort}/v1/keys/shared`)).text()).toBe("one value");
      await c.close();
      await cluster.stop();
      expect(pids.filter(alive)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("add puts a node in rotation and remove drains it under load with no client-visible error", async () => {
    const dir = tempDir();
    try {
      await using cluster = await Cluster.start({ nodes: 2, dir, log: silentLogger });
      await untilServers(cluster, ["node1", "node2"]);
      const added = await cluster.add();
      await untilServers(cluster, ["node1", "node2", "node3"]);

      // Eight clients writing and reading through the load balancer while node1 leaves.
      const clients = await Promise.all(
        Array.from({ length: 8 }, () => KvClient.connect({ reconnect: true, port: cluster.port })),
      );
      let running = true;
      let done = 0;
      const errors: unknown[] = [];
      const load = clients.map(async (c, i) => {
        for (let n = 0; running; n++) {
          try {
            await c.set(`c${i}`, `${n}`);
            expect(await c.getString(`c${i}`)).toBe(`${n}`);
            done++;
          } catch (err) {
            errors.push(err);
          }
        }
      });
      const leaving = cluster.nodes.find((n) => n.name === "node1");
      while (done < 200) await new Promise((resolve) => setImmediate(resolve));
      await cluster.remove("node1");
      const after = done;
      while (done < after + 200) await new Promise((resolve) => setImmediate(resolve));
      running = false;
      await Promise.all(load);
      expect(errors).toEqual([]);
      expect(alive(leaving?.pid as number)).toBe(false);
      expect([...(await cluster.servers()).keys()].sort()).toEqual(["node2", added.name].sort());
      await Promise.all(clients.map((c) => c.close()));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a short stress run with a graceful remove, an add and a SIGKILL passes the linearizability check", async () => {
    const dir = tempDir();
    try {
      const r = await clusterStress({ ops: 3000, clients: 16, keys: 50, nodes: 3, dir, log: () => {} });
      expect(r.verdict).toMatchObject({ ok: true });
      expect(r.events.map((e) => e.what.split(" ")[0])).toEqual(["remove", "add", "SIGKILL"]);
      expect(r.errorSamples).toEqual([]);
      expect(r.errorsElsewhere).toBe(0);
      expect(r.finalReads).toBe(2 * 50);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the same run on nodes that each keep their own store fails the check", async () => {
    const dir = tempDir();
    try {
      const r = await clusterStress({
        ops: 1500,
        clients: 8,
        keys: 20,
        nodes: 3,
        dir,
        nodeArgs: ["--store", "memory"],
        log: () => {},
      });
      expect(r.verdict.ok).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(noHaproxy)("bun run cluster", () => {
  test("starts, takes add, status and remove from another shell, and stops on Ctrl-C leaving nothing behind", async () => {
    const dir = tempDir();
    const run = (...args: string[]) =>
      Bun.spawnSync([process.execPath, "src/cluster/main.ts", ...args, "--dir", dir], { cwd: root });
    const proc = Bun.spawn([process.execPath, "src/cluster/main.ts", "--nodes", "1", "--dir", dir], {
      cwd: root,
      stdout: "pipe",
      stderr: "pipe",
    });
    try {
      const banner = await untilLine(proc.stdout, /\ncontrol:/);
      expect(banner).toMatch(/cluster of 1 nodes: load balancer 127\.0\.0\.1:\d+/);
      const added = run("add");
      expect(added.exitCode).toBe(0);
      expect(added.stdout.toString()).toMatch(/^node2 added: 127\.0\.0\.1:\d+/);
      const status = JSON.parse(run("status").stdout.toString()) as { nodes: { name: string; pid: number }[] };
      expect(status.nodes.map((n) => n.name)).toEqual(["node1", "node2"]);
      expect(run("remove", "node1").exitCode).toBe(0);
      const unknown = run("remove", "node9");
      expect(unknown.exitCode).toBe(1);
      expect(unknown.stderr.toString()).toContain('no node named "node9" (running: node2)');
      expect(run("frobnicate").exitCode).toBe(2);
      proc.kill("SIGINT");
      expect(await proc.exited).toBe(0);
      expect(status.nodes.map((n) => n.pid).filter(alive)).toEqual([]);
      // HAProxy's configuration and runtime socket, and the control socket, are gone with it.
      expect(readdirSync(dir)).toEqual([]);
      // With no cluster running, a command says so.
      const none = run("status");
      expect(none.exitCode).toBe(1);
      expect(none.stderr.toString()).toContain("no cluster is running");
    } finally {
      proc.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a load-balancer port already in use fails at once, naming the port, before starting anything", async () => {
    // Held exclusively, as another program's listener would be.
    const busy = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = String(busy.port);
    const dir = tempDir();
    try {
      const proc = Bun.spawnSync([process.execPath, "src/cluster/main.ts", "--port", port, "--dir", dir], {
        cwd: root,
        timeout: 30_000,
      });
      expect(proc.exitCode).toBe(1);
      expect(proc.stderr.toString()).toContain(`--port ${port}: the port is in use`);
      // Nothing was started: no DynamoDB Local log, no HAProxy configuration.
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      busy.stop(true);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("bun run cluster without HAProxy", () => {
  test("it exits 1 when haproxy is not on PATH saying how to install it, before starting anything", async () => {
    const proc = Bun.spawnSync([process.execPath, "src/cluster/main.ts", "--dir", join(tmpdir(), "kvs-no-haproxy")], {
      cwd: root,
      env: { ...process.env, PATH: "/nonexistent" },
    });
    expect(proc.exitCode).toBe(1);
    expect(proc.stderr.toString()).toContain("apt-get install haproxy");
  });
});
