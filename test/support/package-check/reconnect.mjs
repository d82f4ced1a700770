// Run from a directory where the packed kvs-client is installed, under Node or Bun:
//   node reconnect.mjs PORT
// Keeps 20 gets of one key in flight through a KvClient with reconnect; prints "running" once they flow,
// then, when a line comes on stdin (the test has drained the server and started another on PORT),
// reads on through the new server and prints one JSON line of what happened.
import { createInterface } from "node:readline";
import { KvClient } from "kvs-client";

const [port] = process.argv.slice(2);
const dec = new TextDecoder();
const events = { connects: 0, disconnects: 0 };
const rc = await KvClient.connect({
  reconnect: true,
  port: Number(port),
  requestTimeoutMs: 20_000,
  reconnectTimeoutMs: 20_000,
  onConnect: () => events.connects++,
  onDisconnect: () => events.disconnects++,
});
await rc.set("k", "1");
let stop = false;
let answered = 0;
let wrong = 0;
const failures = [];
const loops = Array.from({ length: 20 }, async () => {
  while (!stop) {
    try {
      const value = await rc.get("k");
      if (value !== undefined && dec.decode(value) === "1") answered++;
      else wrong++;
    } catch (err) {
      failures.push(err?.code ?? String(err));
    }
  }
});
while (answered < 100) await rc.get("k");
console.log("running");
const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once("line", resolve));
lines.close();
const before = answered;
// Some answers through the new server before stopping.
for (let i = 0; i < 50; i++) await rc.get("k");
stop = true;
await Promise.all(loops);
await rc.close();
console.log(
  JSON.stringify({
    runtime: typeof globalThis.Bun === "undefined" ? "node" : "bun",
    reconnected: rc.reconnects >= 1 && events.connects >= 2 && events.disconnects >= 1,
    answeredAfter: answered > before,
    wrong,
    failures,
  }),
);
