import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** PEM files made by {@link makeCerts}, by role. */
export interface TestCerts extends Disposable {
  dir: string;
  /** The CA that signs the server and the good client. */
  ca: string;
  /** A CA nobody trusts. */
  otherCa: string;
  /** Server certificate for localhost and 127.0.0.1, signed by `ca`, and its key. */
  server: { cert: string; key: string };
  /** A second server certificate (CN kvs-rotated), for reloads. */
  rotated: { cert: string; key: string };
  /** A server certificate that expired in 2020. */
  expiredServer: { cert: string; key: string };
  /** Client certificates: signed by `ca`; by `otherCa`; by `ca` but expired in 2020. They share `clientKey`. */
  client: string;
  wrongCaClient: string;
  expiredClient: string;
  clientKey: string;
}

async function openssl(cwd: string, ...args: string[]): Promise<void> {
  const proc = Bun.spawn(["openssl", ...args], { cwd, stdout: "ignore", stderr: "pipe" });
  const [code, err] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
  if (code !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${err}`);
}

/** `openssl ca` needs a database; these settings let it sign with dates in the past. */
const CA_CONFIG = `[ca]
default_ca = ca_default
[ca_default]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
`;

/**
 * Generates, with the `openssl` binary, a CA, a second CA, server and client
 * certificates, and expired ones, in a temporary directory removed on
 * dispose. EC P-256 keys keep it under a second.
 */
export async function makeCerts(): Promise<TestCerts> {
  const dir = mkdtempSync(join(tmpdir(), "kvs-certs-"));
  const p = (name: string) => join(dir, name);
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const san = "subjectAltName=DNS:localhost,IP:127.0.0.1";
  writeFileSync(p("ca.cnf"), CA_CONFIG);
  writeFileSync(p("index.txt"), "");
  writeFileSync(p("serial"), "1000\n");
  // A self-signed CA, and a key with a signing request for each name (the server's carry localhost and 127.0.0.1).
  const ca = (name: string, cn: string) =>
    openssl(dir, "req", "-x509", ...newKey, "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", cn);
  const request = (name: string, cn: string, ...extra: string[]) =>
    openssl(dir, "req", ...newKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", cn, ...extra);
  await Promise.all([
    ca("ca", "/CN=kvs-test-ca"),
    ca("other-ca", "/CN=other-ca"),
    request("server", "/CN=localhost", "-addext", san),
    request("rotated", "/CN=kvs-rotated", "-addext", san),
    request("client", "/CN=kvs-client"),
  ]);
  const sign = (csr: string, out: string, ca = "ca") =>
    openssl(
      dir,
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      `${ca}.pem`,
      "-CAkey",
      `${ca}.key`,
      "-set_serial",
      String(Math.floor(Math.random() * 1e9)),
      "-out",
      out,
      "-days",
      "2",
      "-copy_extensions",
      "copy",
    );
  await Promise.all([
    sign("server.csr", "server.pem"),
    sign("rotated.csr", "rotated.pem"),
    sign("client.csr", "client.pem"),
    sign("client.csr", "wrong-ca-client.pem", "other-ca"),
  ]);
  // One at a time: `openssl ca` keeps its database in files.
  const expired = (csr: string, out: string) =>
    openssl(
      dir,
      "ca",
      "-batch",
      "-config",
      "ca.cnf",
      "-cert",
      "ca.pem",
      "-keyfile",
      "ca.key",
      "-in",
      csr,
      "-out",
      out,
      "-startdate",
      "20200101000000Z",
      "-enddate",
      "20200102000000Z",
      "-notext",
    );
  await expired("client.csr", "expired-client.pem");
  await expired("server.csr", "expired-server.pem");
  return {
    dir,
    ca: p("ca.pem"),
    otherCa: p("other-ca.pem"),
    server: { cert: p("server.pem"), key: p("server.key") },
    rotated: { cert: p("rotated.pem"), key: p("rotated.key") },
    expiredServer: { cert: p("expired-server.pem"), key: p("server.key") },
    client: p("client.pem"),
    wrongCaClient: p("wrong-ca-client.pem"),
    expiredClient: p("expired-client.pem"),
    clientKey: p("client.key"),
    [Symbol.dispose]() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
