import { Grant } from "../auth/access-policy.js";
import type { Authenticator, Principal } from "../auth/authenticator.js";
import type { Logger } from "../log.js";
import { type Answer, type AnswerSink, Deferred, type FrameHandler, type FrameStream } from "../net/frame-handler.js";
import type { Peer } from "../net/peer.js";
import type { Cancel } from "../store/kv-store.js";
import { ErrorCode, KvError } from "../wire/errors.js";
import { decodeRequest, encodeAuthOk } from "./codec.js";
import type { Caller, Dispatcher } from "./dispatch.js";

/** What an unauthenticated connection's requests are answered while authentication is required. */
const NOT_AUTHENTICATED = Grant.refusing(
  new KvError(
    ErrorCode.Unauthenticated,
    "this connection has not authenticated: send an auth_request (a token, or an IAM credential) first",
  ),
);

/**
 * One connection's identity on a server that authenticates (or refuses the
 * connection in protected mode): the {@link FrameHandler} of that one
 * connection, answering auth_request itself and handing every other request
 * to the shared dispatcher with what the connection may do.
 *
 * Invariants:
 * - Until an auth_request succeeds (or a verified client certificate names
 *   the connection), every request is answered `forbidden` with
 *   KV_ERR_UNAUTHENTICATED, and nothing reaches the store.
 * - An auth_request is answered in order: every earlier request is answered
 *   under the identity before it, every later one under the identity after
 *   it. A failed one leaves the identity as it was.
 * - After a policy or token reload, the next request is held to the new
 *   policy; a connection whose token was dropped is unauthenticated again.
 */
export class Session implements FrameHandler, Caller {
  readonly #dispatcher: Dispatcher;
  readonly #auth: Authenticator;
  readonly #peer: Peer;
  readonly #log: Logger;
  #principal: Principal | undefined;
  #grant: Grant;
  /** The authenticator's generation the grant was made under. */
  #generation: number;
  /** The client certificate's names, once looked at (they are known only after the handshake). */
  #certificateNames: string[] | undefined;
  /** Protected mode's grant for a client it refuses outright: no credential lifts it. */
  readonly #refused: Grant | undefined;

  /** A session for `peer`; with `refusal`, one that answers every request with it (protected mode). */
  constructor(dispatcher: Dispatcher, auth: Authenticator, peer: Peer, log: Logger, refusal?: KvError) {
    this.#dispatcher = dispatcher;
    this.#auth = auth;
    this.#peer = peer;
    this.#log = log;
    this.#refused = refusal === undefined ? undefined : Grant.refusing(refusal);
    this.#principal = auth.unauthenticated;
    this.#grant = this.#refused ?? this.#grantOf(this.#principal);
    this.#generation = auth.generation;
  }

  /** What the connection may do now. */
  get grant(): Grant {
    if (this.#refused !== undefined) return this.#refused;
    if (this.#generation !== this.#auth.generation || this.#certificateNames === undefined) this.#refresh();
    return this.#grant;
  }

  handle(frame: Uint8Array, sink?: AnswerSink, cancel?: Cancel): Answer | Promise<Answer> | Deferred {
    const req = decodeRequest(frame);
    if (req.kind !== "auth") return this.#dispatcher.dispatch(req, sink, cancel, this.grant);
    const { token, iam } = req;
    return new Deferred(() => this.#authenticate(token, iam));
  }

  stream(length: number, ready: () => void, cancel: Cancel): FrameStream | undefined {
    return this.#dispatcher.stream(length, ready, cancel, this);
  }

  #authenticate(token: string | undefined, iam: string | undefined): Answer | Promise<Answer> {
    const started = performance.now();
    const ok = (principal: Principal): Answer => {
      this.#principal = principal;
      this.#grant = this.#grantOf(principal);
      this.#generation = this.#auth.generation;
      this.#certificateNames ??= [];
      this.#dispatcher.ended("auth", started);
      this.#log.info("connection authenticated", {
        conn: this.#peer.id,
        identity: principal.identity,
        method: principal.method,
      });
      return encodeAuthOk(principal.identity);
    };
    const failed = (err: unknown): Answer => this.#dispatcher.fail("auth", err, started);
    if (this.#refused !== undefined) return failed(this.#refused.refusal);
    try {
      const proved = this.#auth.authenticate(token !== undefined ? { token } : { iam: iam as string });
      return proved instanceof Promise ? proved.then(ok, failed) : ok(proved);
    } catch (err) {
      return failed(err);
    }
  }

  /** The grant after a reload, or once the handshake has shown the client's certificate. */
  #refresh(): void {
    if (this.#certificateNames === undefined) {
      const names = this.#peer.certificateNames();
      this.#certificateNames = names;
      const fromCertificate = this.#auth.fromCertificate(names);
      if (fromCertificate !== undefined && this.#principal === undefined) {
        this.#principal = fromCertificate;
        this.#log.info("connection authenticated", {
          conn: this.#peer.id,
          identity: fromCertificate.identity,
          method: "cert",
        });
      }
    } else if (this.#principal !== undefined && !this.#auth.stillValid(this.#principal)) {
      this.#log.info("connection's token was revoked by a reload", {
        conn: this.#peer.id,
        identity: this.#principal.identity,
      });
      this.#principal = undefined;
    }
    this.#generation = this.#auth.generation;
    this.#grant = this.#grantOf(this.#principal);
  }

  #grantOf(principal: Principal | undefined): Grant {
    if (principal === undefined) return NOT_AUTHENTICATED;
    return this.#auth.grantOf(principal, principal.method === "cert" ? (this.#certificateNames ?? []) : []);
  }
}
