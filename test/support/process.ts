import { join } from "node:path";
import type { Subprocess } from "bun";
import { canConnect } from "../../src/local/free-port.js";

export const root = join(import.meta.dir, "../..");

/** A `bun run server` child process; disposing it kills it and waits for the exit. */
export interface ServerProcess extends AsyncDisposable {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** The startup line. */
  line: string;
  port: number;
  /** The DynamoDB endpoint named in the startup line, if any. */
  dynamodbEndpoint: string | undefined;
  stderr(): Promise<string>;
}

/**
 * Starts `src/main.ts` with `args` and resolves once it printed its startup
 * line. The HTTP gateway is off unless `env` or `args` turn it on: its
 * default port is fixed, and test files run side by side.
 */
export async function spawnServer(args: string[], env: Record<string, string> = {}): Promise<ServerProcess> {
  const proc = Bun.spawn([process.execPath, "src/main.ts", ...args], {
    cwd: root,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, KV_HTTP_PORT: "off", ...env },
  });
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) {
      throw new Error(`server exited before listening: ${await new Response(proc.stderr).text()}`);
    }
    text += decoder.decode(value, { stream: true });
  }
  reader.releaseLock();
  const line = text.split("\n")[0] as string;
  const port = Number(/listening on [^ ]+:(\d+)/.exec(line)?.[1]);
  const dynamodbEndpoint = /dynamodb=(http:\/\/[^ ]+)/.exec(line)?.[1];
  return {
    proc,
    line,
    port,
    dynamodbEndpoint,
    stderr: () => new Response(proc.stderr).text(),
    async [Symbol.asyncDispose]() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

/** Runs the client CLI; resolves its exit code and output. */
export async function runCli(
  args: string[],
  stdin?: Uint8Array,
  env?: Record<string, string>,
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const proc = Bun.spawn([process.execPath, "client/cli.ts", ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdin: stdin ? new Blob([stdin]) : "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).arrayBuffer(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout: new Uint8Array(stdout), stderr };
}

/** Whether something accepts TCP connections at `endpoint`'s port now. */
export function accepts(endpoint: string): Promise<boolean> {
  const url = new URL(endpoint);
  return canConnect(url.hostname, Number(url.port));
}

/** Runs `bun run server` with `args` to its exit (for startup failures, --help); returns its exit code and output. */
export function runServer(args: string[], env: Record<string, string> = {}) {
  const out = Bun.spawnSync([process.execPath, "src/main.ts", ...args], {
    cwd: root,
    env: { ...process.env, KV_HTTP_PORT: "off", ...env },
  });
  return { code: out.exitCode, stdout: out.stdout.toString(), stderr: out.stderr.toString() };
}

/** Reads `stream` until its text so far matches `pattern`; resolves with that text. */
export async function untilLine(stream: ReadableStream<Uint8Array>, pattern: RegExp): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (!pattern.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended before ${pattern}: ${text}`);
      text += decoder.decode(value, { stream: true });
    }
    return text;
  } finally {
    reader.releaseLock();
  }
}
