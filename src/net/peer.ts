import type { PeerCertificate } from "node:tls";

/**
 * What a connection's handler may know of the other end: for per-connection
 * handlers (a session that authenticates), made when the socket opens.
 */
export interface Peer {
  /** The connection's id in this listener's log lines. */
  readonly id: number;
  /** The client's address as the socket sees it (a load balancer's, behind one that does not pass it through). */
  readonly remoteAddress: string;
  /**
   * The names of the client certificate the TLS handshake verified: its
   * subject CN first, then its SANs (DNS, URI, email, in the certificate's
   * order). Empty without mutual TLS, or before the handshake finished.
   */
  certificateNames(): string[];
}

/** The names of a verified peer certificate (see {@link Peer.certificateNames}). */
export function certificateNames(cert: PeerCertificate | undefined | null): string[] {
  if (cert === undefined || cert === null || typeof cert !== "object") return [];
  const names: string[] = [];
  const cn = cert.subject?.CN;
  for (const n of Array.isArray(cn) ? cn : cn === undefined ? [] : [cn]) if (n !== "") names.push(n);
  for (const entry of (cert.subjectaltname ?? "").split(",")) {
    const m = /^\s*(DNS|URI|email):(.+?)\s*$/.exec(entry);
    if (m !== null && !names.includes(m[2] as string)) names.push(m[2] as string);
  }
  return names;
}
