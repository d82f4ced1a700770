import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { type AttributeValue, GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from "@aws-sdk/client-kms";
import { KvClient } from "../../client/kv-client.js";
import { kmsClient } from "../../src/aws-clients.js";
import { open, seal } from "../../src/crypto/envelope.js";
import { deriveItemKey, type KeyRef } from "../../src/crypto/item-key.js";
import { branchKeyContext, encryptionContext } from "../../src/crypto/kms-keyring.js";
import { branchKeyPk } from "../../src/store/branch-key-store.js";
import {
  CHUNK_BYTES,
  chunkAad,
  chunkedHeadItem,
  chunkItem,
  chunkPk,
  headPk,
  parseHead,
  singleItem,
  VERSION_BYTES,
  valueAad,
} from "../../src/store/item-format.js";
import { onBackends, useBackends } from "../support/backends.js";
import { startTestServer, testConfig } from "../support/harness.js";

// Starts DynamoDB Local; tests wait on events, and this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

const backends = useBackends();
let kms: KMSClient;
beforeAll(() => {
  kms = kmsClient({ region: "us-east-1", endpoint: backends.kms.endpoint, localCredentials: true });
});
afterAll(() => kms?.destroy());

const enc = new TextEncoder();
const KEY_ID = testConfig().kmsKeyId as string;

function dynamoConfig() {
  return onBackends(backends);
}

async function sdkGet(table: string, pk: Uint8Array) {
  const out = await backends.client.send(
    new GetItemCommand({ TableName: table, Key: { pk: { B: pk } }, ConsistentRead: true }),
  );
  if (out.Item === undefined) throw new Error("item not found through the SDK");
  return out.Item;
}

/** The data key `ref` names, found with nothing but the AWS SDK: a KMS Decrypt, and for branch keys HKDF. */
async function dataKeyThroughSdk(table: string, ref: KeyRef): Promise<Uint8Array> {
  if (ref.kind === "kms") {
    const dk = await kms.send(
      new DecryptCommand({ CiphertextBlob: ref.wrapped, KeyId: KEY_ID, EncryptionContext: encryptionContext(table) }),
    );
    return dk.Plaintext as Uint8Array;
  }
  const item = await sdkGet(table, branchKeyPk(ref.version));
  const bk = await kms.send(
    new DecryptCommand({
      CiphertextBlob: item.bk?.B as Uint8Array,
      KeyId: KEY_ID,
      EncryptionContext: branchKeyContext(table, ref.version),
    }),
  );
  return deriveItemKey(bk.Plaintext as Uint8Array, ref.salt, table, ref.version);
}

/** Reads and decrypts `key` with nothing but the AWS SDK and the item format. */
async function readThroughSdk(table: string, key: Uint8Array): Promise<Uint8Array> {
  const head = parseHead(await sdkGet(table, headPk(key)));
  const dataKey = await dataKeyThroughSdk(table, head.keyRef);
  if (head.format === 1) return open(dataKey, head, valueAad(table, key));
  const out = new Uint8Array(head.size);
  for (let i = 0; i < head.count; i++) {
    const item = await sdkGet(table, chunkPk(head.ver, i));
    const plain = open(
      dataKey,
      { iv: item.iv?.B as Uint8Array, ciphertext: item.ct?.B as Uint8Array },
      chunkAad(table, key, head.ver, i, head.count, head.size),
    );
    out.set(plain, i * CHUNK_BYTES);
  }
  return out;
}

/** Encrypts and writes `value` under `key` with nothing but the AWS SDK and the item format. */
async function writeThroughSdk(table: string, key: Uint8Array, value: Uint8Array, chunked: boolean): Promise<void> {
  const dk = await kms.send(
    new GenerateDataKeyCommand({ KeyId: KEY_ID, KeySpec: "AES_256", EncryptionContext: encryptionContext(table) }),
  );
  const plaintext = dk.Plaintext as Uint8Array;
  const keyRef: KeyRef = { kind: "kms", wrapped: dk.CiphertextBlob as Uint8Array };
  const put = (item: Record<string, AttributeValue>) =>
    backends.client.send(new PutItemCommand({ TableName: table, Item: item }));
  if (!chunked) {
    const sealed = seal(plaintext, value, valueAad(table, key));
    await put(singleItem(key, { keyRef, ...sealed, expiresAt: undefined }));
    return;
  }
  const ver = new Uint8Array(randomBytes(VERSION_BYTES));
  const count = Math.max(1, Math.ceil(value.length / CHUNK_BYTES));
  for (let i = 0; i < count; i++) {
    const part = value.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES);
    const sealed = seal(plaintext, part, chunkAad(table, key, ver, i, count, value.length));
    await put(chunkItem(key, ver, i, { ...sealed, ts: Date.now(), expiresAt: undefined }));
  }
  await put(chunkedHeadItem(key, { keyRef, ver, count, size: value.length, ts: Date.now(), expiresAt: undefined }));
}

describe("the lean data-plane client and the AWS SDK store the same items", () => {
  test("values the server writes read back byte for byte through the plain SDK", async () => {
    await using server = await startTestServer(dynamoConfig());
    await using c = await KvClient.connect({ port: server.port });
    const table = server.table as string;
    const cases: [Uint8Array, Uint8Array][] = [
      [enc.encode("single"), new Uint8Array(randomBytes(1024))],
      [Uint8Array.of(0xff, 0x00, 0x80), new Uint8Array(0)],
      [enc.encode("chunked"), new Uint8Array(randomBytes(CHUNK_BYTES * 2 + 17))],
    ];
    for (const [key, value] of cases) await c.set(key, value);
    for (const [key, value] of cases) expect(await readThroughSdk(table, key)).toEqual(value);
  });

  test("values written through the plain SDK read back byte for byte through the server", async () => {
    await using server = await startTestServer(dynamoConfig());
    await using c = await KvClient.connect({ port: server.port });
    const table = server.table as string;
    const single = new Uint8Array(randomBytes(2048));
    const chunked = new Uint8Array(randomBytes(CHUNK_BYTES + 5));
    await writeThroughSdk(table, enc.encode("sdk-single"), single, false);
    await writeThroughSdk(table, enc.encode("sdk-chunked"), chunked, true);
    expect(await c.get("sdk-single")).toEqual(single);
    expect(await c.get("sdk-chunked")).toEqual(chunked);
  });
});
