import type { Server } from "bun";
import { listenError } from "../net/listener.js";
import { ErrorCode, errorMessage, isKvError } from "../wire/errors.js";
import type { Metrics } from "./prometheus.js";

/** What readiness depends on. */
export interface Readiness {
  /** True once a graceful stop has begun: load balancers must send no new connections. */
  draining(): boolean;
  /** Whether the backend answers: recent traffic, or a cheap probe. Never throws. */
  backendReady(): Promise<boolean>;
}

/** What the admin port can be asked to do. */
export interface AdminActions {
  /** Makes a new branch-key version active; resolves its number. */
  rotateKey(): Promise<number>;
  /**
   * Whether a request with this `Authorization` header may run an admin
   * action: rejects with `KV_ERR_UNAUTHENTICATED` or `KV_ERR_FORBIDDEN` and
   * the reason when not. Absent: anyone who reaches the port may.
   */
  authorize?(authorization: string | null): Promise<void>;
}

/** Admin listener settings. */
export interface AdminOptions {
  host: string;
  port: number;
  /** Share the port with other worker processes (each answers for itself). */
  reusePort: boolean;
}

/**
 * The admin HTTP port, apart from the data ports:
 * - `GET /healthz`: liveness. 200 while the process serves; it never touches
 *   DynamoDB or KMS, so a backend outage does not make a container
 *   orchestrator replace every task at once.
 * - `GET /readyz`: readiness. 503 while draining, or when DynamoDB has not
 *   answered recently and a probe fails; 200 otherwise. Point load balancer
 *   health checks here.
 * - `GET /metrics`: Prometheus text format.
 * - `POST /admin/rotate-key`: makes a new branch-key version active and
 *   answers `{"version":N}` (what `bun run client admin rotate-key` calls);
 *   500 with the reason if DynamoDB or KMS refuse. When the server
 *   authenticates clients, it needs `Authorization: Bearer …` of an
 *   identity with admin on every key (401 or 403 otherwise). Like metrics,
 *   this port must not be reachable from outside the service's network.
 */
export class AdminServer {
  readonly #server: Server<undefined>;

  private constructor(server: Server<undefined>) {
    this.#server = server;
  }

  static start(options: AdminOptions, metrics: Metrics, readiness: Readiness, actions: AdminActions): AdminServer {
    try {
      const server = Bun.serve({
        hostname: options.host,
        port: options.port,
        reusePort: options.reusePort,
        fetch: async (req) => {
          const { pathname } = new URL(req.url);
          if (pathname === "/admin/rotate-key") {
            if (req.method !== "POST") return new Response("method not allowed: POST\n", { status: 405 });
            try {
              await actions.authorize?.(req.headers.get("authorization"));
            } catch (err) {
              const status = isKvError(err, ErrorCode.Forbidden) ? 403 : 401;
              return new Response(`refused: ${errorMessage(err)}\n`, { status });
            }
            try {
              return Response.json({ version: await actions.rotateKey() });
            } catch (err) {
              return new Response(`rotation failed: ${errorMessage(err)}\n`, { status: 500 });
            }
          }
          if (req.method !== "GET" && req.method !== "HEAD")
            return new Response("method not allowed\n", { status: 405 });
          if (pathname === "/healthz") return new Response("ok\n");
          if (pathname === "/readyz") {
            if (readiness.draining()) return new Response("draining\n", { status: 503 });
            if (!(await readiness.backendReady())) return new Response("backend unavailable\n", { status: 503 });
            return new Response("ready\n");
          }
          if (pathname === "/metrics") {
            return new Response(await metrics.text(), { headers: { "content-type": metrics.contentType } });
          }
          return new Response("not found: try /healthz, /readyz, /metrics or POST /admin/rotate-key\n", {
            status: 404,
          });
        },
      });
      return new AdminServer(server);
    } catch (err) {
      throw listenError(options.host, options.port, err, "admin");
    }
  }

  /** The bound port. */
  get port(): number {
    return this.#server.port as number;
  }

  async stop(): Promise<void> {
    await this.#server.stop(true);
  }
}
