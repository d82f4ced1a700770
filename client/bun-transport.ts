import type { Socket } from "bun";
import { ErrorCode, KvError } from "../src/wire/errors.js";
import { KEEPALIVE_IDLE_MS } from "../src/wire/keepalive.js";
import {
  connectFailed,
  connectTimedOut,
  handshakeFailed,
  type Transport,
  type TransportEvents,
  type TransportTarget,
} from "./transport.js";

/** A connection over `Bun.connect`, whose socket already has the transport's contract. */
export async function connectBun(
  target: TransportTarget,
  events: TransportEvents,
  giveUp: AbortSignal,
): Promise<Transport> {
  const { host, port } = target;
  // Never an empty object: Bun.connect treats `tls: {}` as no TLS at all, silently speaking plaintext.
  const tls =
    target.tls === undefined
      ? undefined
      : {
          ...(target.tls.ca === undefined ? {} : { ca: target.tls.ca }),
          ...(target.tls.cert === undefined ? {} : { cert: target.tls.cert, key: target.tls.key }),
          ...(target.tls.serverName === undefined ? {} : { serverName: target.tls.serverName }),
          rejectUnauthorized: true,
        };
  // Bun drops bytes written to a TLS socket before its handshake ends, so nothing is sent until then.
  const handshake = Promise.withResolvers<void>();
  // Settled on every close, awaited only with TLS.
  handshake.promise.catch(() => {});
  let open = false;
  let socket: Socket<undefined>;
  // Past the deadline: whatever is under way is closed, and connecting fails.
  const timedOut = new Promise<never>((_, reject) => {
    const onGiveUp = () => reject(connectTimedOut(target));
    if (giveUp.aborted) onGiveUp();
    else giveUp.addEventListener("abort", onGiveUp, { once: true });
  });
  timedOut.catch(() => {});
  const connecting = Bun.connect<undefined>({
    hostname: host,
    port,
    ...(tls === undefined ? {} : { tls }),
    socket: {
      handshake(_s, success, authorizationError) {
        if (success && authorizationError === null) return handshake.resolve();
        const why = (authorizationError as (Error & { code?: string }) | null)?.code ?? "handshake failed";
        handshake.reject(handshakeFailed(target, why, authorizationError));
      },
      data(_s, chunk) {
        if (open) events.data(chunk);
      },
      drain() {
        if (open) events.drain();
      },
      close() {
        handshake.reject(
          new KvError(
            ErrorCode.Tls,
            `${host}:${port} closed the connection during the TLS handshake (is it serving TLS on this port?)`,
          ),
        );
        if (open) events.close();
      },
      error(_s, err) {
        // A TLS alert (a server refusing our certificate) arrives as an error naming it.
        const code = /ALERT|SSL routines/.test(err.message) ? ErrorCode.Tls : ErrorCode.ConnectionClosed;
        const why = code === ErrorCode.Tls ? "the server refused the TLS session" : "socket error";
        if (open) events.error(new KvError(code, `${why}: ${err.message}`, { cause: err }));
      },
    },
  });
  try {
    socket = await Promise.race([connecting, timedOut]);
  } catch (err) {
    void connecting.then(
      (s) => s.terminate(),
      () => {},
    );
    throw err instanceof KvError ? err : connectFailed(target, err);
  }
  socket.setNoDelay(true);
  // Probes after a minute of silence: an idle connection stays open through the AWS NLB's 350 s idle
  // timeout, and a server host that vanished is noticed (the next request fails instead of hanging).
  socket.setKeepAlive(true, KEEPALIVE_IDLE_MS);
  if (tls !== undefined) {
    try {
      await Promise.race([handshake.promise, timedOut]);
    } catch (err) {
      socket.terminate();
      throw err;
    }
  }
  open = true;
  return socket;
}
