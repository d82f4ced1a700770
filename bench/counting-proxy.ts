/**
 * An HTTP proxy in front of DynamoDB Local that counts requests by operation
 * (the X-Amz-Target header), so the bench measures DynamoDB requests from the
 * outside, the same way for every server configuration.
 */
export class CountingProxy {
  readonly #server: ReturnType<typeof Bun.serve>;
  readonly #counts = new Map<string, number>();

  constructor(target: string) {
    this.#server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: async (req) => {
        const op = (req.headers.get("x-amz-target") ?? "unknown").replace(/^DynamoDB_\d+\./, "");
        this.#counts.set(op, (this.#counts.get(op) ?? 0) + 1);
        const url = new URL(req.url);
        const headers = new Headers(req.headers);
        headers.delete("host");
        const res = await fetch(`${target}${url.pathname}${url.search}`, {
          method: req.method,
          headers,
          body: await req.arrayBuffer(),
        });
        const out = new Headers(res.headers);
        // fetch already decoded the body; its length and encoding headers no longer apply.
        out.delete("content-encoding");
        out.delete("content-length");
        return new Response(await res.arrayBuffer(), { status: res.status, headers: out });
      },
    });
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.#server.port}`;
  }

  /** Requests seen since the last reset, in total and by operation. */
  snapshot(): { total: number; byOp: Record<string, number> } {
    const byOp = Object.fromEntries(this.#counts);
    return { total: [...this.#counts.values()].reduce((a, b) => a + b, 0), byOp };
  }

  reset(): void {
    this.#counts.clear();
  }

  async stop(): Promise<void> {
    await this.#server.stop(true);
  }
}
