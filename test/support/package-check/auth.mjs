// Run from a directory where the packed kvs-client is installed, under Node or Bun:
//   node auth.mjs PORT OPS_TOKEN READER_TOKEN
// The server at PORT requires tokens: OPS_TOKEN may do everything, READER_TOKEN read "public/*" only.
// Prints one JSON line of what worked; the test compares it whole.
import { KvClient, KvError } from "kvs-client";
import { iamAuth } from "kvs-client/iam";

const [port, ops, reader] = process.argv.slice(2);
const out = { runtime: typeof globalThis.Bun === "undefined" ? "node" : "bun" };
const codeOf = (p) =>
  p.then(
    () => "resolved",
    (err) => (err instanceof KvError ? err.code : String(err)),
  );

const c = await KvClient.connect({ port: Number(port), auth: { token: ops } });
out.identity = c.identity;
await c.set("public/a", "1");
await c.close();
const r = await KvClient.connect({ port: Number(port), auth: { token: reader } });
out.denied = await codeOf(r.set("public/a", "2"));
await r.close();
out.wrongToken = await codeOf(KvClient.connect({ port: Number(port), auth: { token: `${ops}x` } }));
const anonymous = await KvClient.connect({ port: Number(port) });
out.unauthenticated = await codeOf(anonymous.get("public/a"));
await anonymous.close();
// The reconnecting client authenticates each connection it opens, and does not retry a refused credential.
const rc = await KvClient.connect({ reconnect: true, port: Number(port), auth: { token: reader } });
out.reconnecting = new TextDecoder().decode(await rc.get("public/a"));
await rc.close();
out.refusedOnce = await codeOf(
  KvClient.connect({ reconnect: true, port: Number(port), auth: { token: `${reader}x` } }),
);
// kvs-client/iam signs with node:crypto alone; without credentials it needs the optional AWS peer dependency.
const credential = await iamAuth({
  serverId: "s",
  region: "eu-west-1",
  credentials: { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" },
}).credential();
out.iamSigned = credential.startsWith("kvs-iam-v1.");
out.iamWithoutSdk = await codeOf(iamAuth({ serverId: "s", region: "eu-west-1" }).credential());
console.log(JSON.stringify(out));
