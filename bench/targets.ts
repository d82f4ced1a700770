import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort, waitForPort } from "../src/local/free-port.js";

const root = join(import.meta.dir, "..");

/** A server under test, in its own process so its CPU and memory are its own. */
export interface Target extends AsyncDisposable {
  name: string;
  port: number;
  pid: number;
  /** Resident set size of the server process, in bytes. */
  rss(): number;
  /** Peak resident set size of the server process so far, in bytes. */
  peakRss(): number;
  /** CPU time (user + system) the server process and its children (workers, DynamoDB Local) have used, in ms. */
  cpuMs(): number;
  /** CPU time of the server process alone, in ms: without an embedded DynamoDB Local's. */
  ownCpuMs(): number;
  /** The startup line the server printed. */
  line: string;
  stop(): Promise<void>;
}

function statusBytes(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return kb * 1024;
}

/** utime + stime from /proc/PID/stat, in ms (clock ticks are 100 Hz on Linux). */
function ownCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** The live children of `pid`, from /proc/PID/task/TID/children. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim();
      if (text) out.push(...text.split(" ").map(Number));
    }
  } catch {
    // The process or a thread ended while being read.
  }
  return out;
}

/** CPU time of `pid` and all its live descendants (--workers runs one process per worker), in ms. */
function cpuMsOf(pid: number): number {
  let total = 0;
  try {
    total = ownCpuMs(pid);
  } catch {
    return 0;
  }
  for (const child of childrenOf(pid)) total += cpuMsOf(child);
  return total;
}

async function waitForLine(proc: Subprocess<"ignore", "pipe", "pipe">, pattern: RegExp): Promise<RegExpExecArray> {
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const match = pattern.exec(text);
    if (match) {
      void (async () => {
        for (;;) if ((await reader.read()).done) return;
      })();
      return match;
    }
    const { value, done } = await reader.read();
    if (done) throw new Error(`target exited before it was ready: ${await new Response(proc.stderr).text()}`);
    text += decoder.decode(value, { stream: true });
  }
}

function wrap(name: string, proc: Subprocess<"ignore", "pipe", "pipe">, port: number, line = ""): Target {
  void (async () => {
    // Drain stderr so a chatty target never blocks on a full pipe.
    for await (const _ of proc.stderr) {
    }
  })();
  const stop = async () => {
    proc.kill("SIGTERM");
    await proc.exited;
  };
  return {
    name,
    port,
    pid: proc.pid,
    rss: () => statusBytes(proc.pid, "VmRSS"),
    peakRss: () => statusBytes(proc.pid, "VmHWM"),
    cpuMs: () => cpuMsOf(proc.pid),
    ownCpuMs: () => {
      try {
        return ownCpuMs(proc.pid);
      } catch {
        return 0;
      }
    },
    line,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** The HTTP gateway port a kvs target printed in its startup line; throws if it runs none. */
export function httpPortOf(target: Target): number {
  const m = /http=[^:]+:(\d+)/.exec(target.line);
  if (m === null) throw new Error(`${target.name} runs no HTTP gateway: ${target.line.trim()}`);
  return Number(m[1]);
}

/** Starts `bun src/main.ts` with `args` (a free port is added; the HTTP gateway is off unless `args` set it). */
export async function startKvs(name: string, args: string[]): Promise<Target> {
  const http = args.includes("--http-port") ? [] : ["--http-port", "off"];
  const proc = Bun.spawn(
    [
      process.execPath,
      ...(process.env.KV_BENCH_PROFILE ? ["--cpu-prof-md", `--cpu-prof-dir=${process.env.KV_BENCH_PROFILE}`] : []),
      "src/main.ts",
      "--port",
      "0",
      "--max-connections",
      "1000000",
      ...http,
      ...args,
    ],
    {
      cwd: root,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  const m = await waitForLine(proc, /listening on [^ ]+:(\d+)[^\n]*\n/);
  return wrap(name, proc, Number(m[1]), m[0]);
}

/** Starts the bare HTTP reference (bench/bare-http.ts). */
export async function startBareHttp(): Promise<Target> {
  const proc = Bun.spawn([process.execPath, "bench/bare-http.ts"], {
    cwd: root,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const m = await waitForLine(proc, /bare http listening on (\d+)/);
  return wrap("bare http", proc, Number(m[1]));
}

/** Starts the echo reference server. */
export async function startEcho(): Promise<Target> {
  const proc = Bun.spawn([process.execPath, "bench/echo-server.ts"], {
    cwd: root,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const m = await waitForLine(proc, /echo listening on (\d+)/);
  return wrap("echo", proc, Number(m[1]));
}

/** Starts redis-server with persistence off, or returns undefined when it is not installed. */
export async function startRedis(tls?: { cert: string; key: string; ca: string }): Promise<Target | undefined> {
  const bin = Bun.which("redis-server");
  if (bin === null) return undefined;
  const port = await freePort();
  // With TLS, the TLS port is the only one (Debian's redis-server is built with TLS); clients need no certificate.
  const ports =
    tls === undefined
      ? ["--port", String(port)]
      : ["--port", "0", "--tls-port", String(port), "--tls-cert-file", tls.cert, "--tls-key-file", tls.key].concat([
          "--tls-ca-cert-file",
          tls.ca,
          "--tls-auth-clients",
          "no",
        ]);
  const proc = Bun.spawn(
    [bin, ...ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--maxclients", "30000"],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
  );
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
  });
  await waitForPort("127.0.0.1", port, 10_000, () => !exited);
  return wrap("redis", proc, port);
}

/**
 * Starts the in-memory DynamoDB stand-in of bench/null-dynamo.ts. After
 * `hold()` it answers no data-plane call until `release()`.
 */
export async function startNullDynamo(): Promise<
  Target & { endpoint: string; requests(): Promise<number>; hold(): Promise<void>; release(): Promise<void> }
> {
  const proc = Bun.spawn([process.execPath, "bench/null-dynamo.ts"], {
    cwd: root,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const m = await waitForLine(proc, /null-dynamo listening on (\d+)/);
  const port = Number(m[1]);
  const endpoint = `http://127.0.0.1:${port}`;
  const requests = async () => {
    const res = await fetch(endpoint, { method: "POST", headers: { "x-amz-target": "DynamoDB_20120810.Stats" } });
    const counts = (await res.json()) as Record<string, number>;
    return Object.values(counts).reduce((a, b) => a + b, 0);
  };
  const control = (op: string) => async () => {
    await fetch(endpoint, { method: "POST", headers: { "x-amz-target": `DynamoDB_20120810.${op}` } });
  };
  return { ...wrap("null-dynamo", proc, port), endpoint, requests, hold: control("Hold"), release: control("Release") };
}
