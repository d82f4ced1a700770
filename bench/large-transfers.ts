/**
 * Sets and gets one large value back to back until killed, printing a line
 * per transfer: the load beside which the large-values scenario times small
 * gets. A process of its own, so the small gets' latency is the server's,
 * not this client's encoding and decoding 64 MiB frames on the same event loop.
 *
 * Usage: bun bench/large-transfers.ts PORT MIB
 */
import { KvClient } from "../client/kv-client.js";

const [port, mib] = process.argv.slice(2).map(Number);
if (!port || !mib) throw new Error("usage: bun bench/large-transfers.ts PORT MIB");
await using client = await KvClient.connect({ port });
const value = new Uint8Array(mib * 2 ** 20).fill(7);
for (;;) {
  await client.set("large", value);
  const got = await client.get("large");
  if (got?.length !== value.length) throw new Error("the large value came back wrong");
  console.log("transfer");
}
