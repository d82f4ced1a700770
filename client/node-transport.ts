import { isIP, connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
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

/** OpenSSL's verification failures as Node names them: the server's certificate was not trusted. */
const VERIFY_CODES = /^(UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|CERT_|ERR_TLS_CERT_|HOSTNAME_MISMATCH)/;

/**
 * A connection over `node:net` or `node:tls`, adapted to the transport's
 * contract. Node's `write` queues whatever it is given and keeps a reference
 * to it; the shared writer reuses its staging buffer once a write returns,
 * so each write here hands Node a copy. While Node's queue is above its high
 * water mark a write takes nothing, so the writer keeps the rest and waits
 * for `drain`, as it does with Bun: output stays bounded either way.
 */
export function connectNode(target: TransportTarget, events: TransportEvents, giveUp: AbortSignal): Promise<Transport> {
  const { host, port, tls } = target;
  return new Promise<Transport>((resolve, reject) => {
    let open = false;
    const socket: Socket =
      tls === undefined
        ? netConnect({ host, port })
        : tlsConnect({
            host,
            port,
            ca: pemOf(tls.ca),
            cert: pemOf(tls.cert),
            key: pemOf(tls.key),
            servername: tls.serverName ?? (isIP(host) === 0 ? host : undefined),
            rejectUnauthorized: true,
          });
    const onConnectError = (err: Error & { code?: string }) => {
      socket.destroy();
      if (tls !== undefined && err.code !== undefined && VERIFY_CODES.test(err.code)) {
        return reject(handshakeFailed(target, err.code, err));
      }
      if (tls !== undefined && err.code === "ECONNRESET") return reject(handshakeFailed(target, err.code, err));
      reject(connectFailed(target, err));
    };
    socket.once("error", onConnectError);
    const onGiveUp = () => {
      socket.destroy();
      reject(connectTimedOut(target));
    };
    giveUp.addEventListener("abort", onGiveUp, { once: true });
    socket.once(tls === undefined ? "connect" : "secureConnect", () => {
      socket.off("error", onConnectError);
      giveUp.removeEventListener("abort", onGiveUp);
      open = true;
      socket.setNoDelay(true);
      // Probes after a minute of silence, as on Bun (see bun-transport.ts).
      socket.setKeepAlive(true, KEEPALIVE_IDLE_MS);
      socket.on("data", (chunk: Buffer) => events.data(chunk));
      socket.on("drain", () => events.drain());
      socket.on("close", () => events.close());
      socket.on("error", (err: Error & { code?: string }) => {
        // A TLS alert (a server refusing our certificate) arrives as an error naming it.
        const code = /alert|SSL routines/i.test(err.message) ? ErrorCode.Tls : ErrorCode.ConnectionClosed;
        const why = code === ErrorCode.Tls ? "the server refused the TLS session" : "socket error";
        events.error(new KvError(code, `${why}: ${err.message}`, { cause: err }));
      });
      resolve({
        write(data: Uint8Array): number {
          if (!open || socket.destroyed || !socket.writable) return -1;
          if (socket.writableNeedDrain) return 0;
          socket.write(data.slice());
          return data.length;
        },
        end() {
          socket.end();
        },
        terminate() {
          open = false;
          socket.destroy();
        },
        pause() {
          socket.pause();
        },
        resume() {
          socket.resume();
        },
        get localPort() {
          return socket.localPort ?? 0;
        },
      });
    });
  });
}

/** PEM as Node takes it (a string or a Buffer; a plain Uint8Array is not accepted everywhere). */
function pemOf(pem: string | Uint8Array | undefined): string | Buffer | undefined {
  return pem === undefined || typeof pem === "string" ? pem : Buffer.from(pem);
}
