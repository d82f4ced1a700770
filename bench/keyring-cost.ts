/**
 * KMS calls and item overhead of the two keyrings (docs/encryption.md, "Keys"): a table
 * written under `periods` distinct key periods (KMS data keys of 1 ms with
 * `--keyring kms`; one branch-key rotation per period with the hierarchical
 * keyring), then, on a fresh server with a cold cache, random gets over the
 * whole table twice and a 90/10 get/set mix. Counts come from the local KMS
 * endpoint; the table is bench/null-dynamo.ts, so the KMS figures are not
 * bounded by DynamoDB Local's speed.
 */
import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import { KvClient } from "../client/kv-client.js";
import { dynamoClient } from "../src/aws-clients.js";
import { freePort } from "../src/local/free-port.js";
import { LocalKms } from "../src/local/kms-endpoint.js";
import { headPk, itemSize } from "../src/store/item-format.js";
import type { Row } from "./scenarios.js";
import { startKvs, startNullDynamo, type Target } from "./targets.js";

/** Sizes of one keyring run. */
export interface KeyringCostSettings {
  /** Distinct key periods the table is written under (data keys, or branch-key versions). */
  periods: number;
  /** Values written per period. */
  perPeriod: number;
  /** Random gets per pass. */
  gets: number;
  /** Operations in the 90/10 get/set mix. */
  mixed: number;
  log: (line: string) => void;
}

const enc = new TextEncoder();
const VALUE = new Uint8Array(1024).fill(0x6b);
const TABLE = "keyring";
/** Requests a client keeps in flight: enough to keep one server busy. */
const WINDOW = 512;

/** Runs `count` operations from `op(i)`, `WINDOW` in flight, over `clients` round robin. */
async function drive(clients: KvClient[], count: number, op: (c: KvClient, i: number) => Promise<unknown>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: WINDOW }, async (_, lane) => {
      const c = clients[lane % clients.length] as KvClient;
      for (let i = next++; i < count; i = next++) await op(c, i);
    }),
  );
}

export async function keyringCost(s: KeyringCostSettings): Promise<Row[]> {
  const rows: Row[] = [];
  await using kms = LocalKms.start();
  const kmsCalls = () => kms.calls("GenerateDataKey") + kms.calls("Decrypt");
  const keys = s.periods * s.perPeriod;
  const key = (i: number) => `key:${i}`;
  for (const mode of ["kms", "hierarchical"] as const) {
    await using ddb = await startNullDynamo();
    const base = [
      ...["--store", "dynamodb", "--table", TABLE, "--kms-key-id", "alias/bench", "--log-level", "error"],
      ...["--dynamodb-endpoint", ddb.endpoint, "--kms-endpoint", kms.endpoint, "--keyring", mode],
    ];
    // Write the table: one period at a time.
    const adminPort = await freePort();
    const writeFlags =
      mode === "kms"
        ? ["--data-key-max-age-ms", "1"]
        : ["--admin-port", String(adminPort), "--branch-key-rotation-ms", "0"];
    const generatedBefore = kms.calls("GenerateDataKey");
    {
      await using writer = await startKvs(`${mode} writer`, [...base, ...writeFlags]);
      await using c = await KvClient.connect({ port: writer.port });
      for (let p = 0; p < s.periods; p++) {
        await Promise.all(Array.from({ length: s.perPeriod }, (_, j) => c.set(key(p * s.perPeriod + j), VALUE)));
        if (mode === "kms") await Bun.sleep(2);
        else {
          const res = await fetch(`http://127.0.0.1:${adminPort}/admin/rotate-key`, { method: "POST" });
          if (res.status !== 200) throw new Error(`rotate-key answered ${res.status}: ${await res.text()}`);
        }
      }
    }
    const periodKeys = kms.calls("GenerateDataKey") - generatedBefore;
    s.log(
      `keyring: ${mode}: ${keys} values under ${periodKeys} ${mode === "kms" ? "data keys" : "branch-key versions"}`,
    );
    const sdk = dynamoClient({ region: "us-east-1", endpoint: ddb.endpoint, localCredentials: true });
    const head = await sdk.send(
      new GetItemCommand({ TableName: TABLE, Key: { pk: { B: headPk(enc.encode(key(0))) } }, ConsistentRead: true }),
    );
    sdk.destroy();
    const headBytes = itemSize(head.Item ?? {});

    // A fresh server: every cache cold, default key settings.
    await using reader: Target = await startKvs(`${mode} reader`, base);
    const clients = await Promise.all(Array.from({ length: 8 }, () => KvClient.connect({ port: reader.port })));
    const random = () => key(Math.floor(Math.random() * keys));
    const phase = async (name: string, count: number, op: (c: KvClient, i: number) => Promise<unknown>) => {
      const calls = kmsCalls();
      const cpu = reader.cpuMs();
      const t0 = performance.now();
      await drive(clients, count, op);
      const seconds = (performance.now() - t0) / 1000;
      const kmsInPhase = kmsCalls() - calls;
      const cpuUs = ((reader.cpuMs() - cpu) * 1000) / count;
      rows.push({
        keyring: mode,
        phase: name,
        ops: count,
        "key periods": periodKeys,
        "KMS calls": kmsInPhase,
        "KMS calls / 1M ops": Math.round((kmsInPhase * 1e6) / count),
        "ops/s": Math.round(count / seconds),
        "CPU µs/op": Number(cpuUs.toFixed(1)),
        "head item bytes (1 KiB value)": headBytes,
      });
      s.log(`keyring: ${mode} ${name}: ${count} ops, ${kmsInPhase} KMS calls, ${cpuUs.toFixed(1)} µs CPU/op`);
    };
    await phase("random gets, cold cache", s.gets, (c) => c.get(random()));
    await phase("random gets, warm", s.gets, (c) => c.get(random()));
    await phase("90/10 get/set mix, steady", s.mixed, (c, i) =>
      i % 10 === 0 ? c.set(random(), VALUE) : c.get(random()),
    );
    await Promise.all(clients.map((c) => c.close()));
  }
  return rows;
}
