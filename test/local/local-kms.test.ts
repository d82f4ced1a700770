import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  type KMSClient,
  ListAliasesCommand,
} from "@aws-sdk/client-kms";
import { kmsClient } from "../../src/aws-clients.js";
import { LocalKms } from "../../src/local/kms-endpoint.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function client(kms: LocalKms): KMSClient {
  return kmsClient({ region: "us-east-1", endpoint: kms.endpoint, localCredentials: true });
}

async function errorName(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).name;
  }
  return "no error";
}

const ctx = { service: "kvs", table: "t" };

describe("local KMS endpoint through the AWS SDK", () => {
  test("creates a key and alias, then generates and decrypts data keys under a context", async () => {
    await using kms = LocalKms.start();
    const c = client(kms);
    const created = await c.send(new CreateKeyCommand({ Description: "test" }));
    const keyId = created.KeyMetadata?.KeyId as string;
    await c.send(new CreateAliasCommand({ AliasName: "alias/test", TargetKeyId: keyId }));
    const described = await c.send(new DescribeKeyCommand({ KeyId: "alias/test" }));
    expect(described.KeyMetadata?.Arn).toBe(created.KeyMetadata?.Arn);
    const aliases = await c.send(new ListAliasesCommand({}));
    expect(aliases.Aliases?.map((a) => a.AliasName)).toEqual(["alias/test"]);

    const dk = await c.send(
      new GenerateDataKeyCommand({ KeyId: "alias/test", KeySpec: "AES_256", EncryptionContext: ctx }),
    );
    expect(dk.Plaintext?.length).toBe(32);
    const back = await c.send(
      new DecryptCommand({
        CiphertextBlob: dk.CiphertextBlob,
        KeyId: created.KeyMetadata?.Arn,
        EncryptionContext: ctx,
      }),
    );
    expect(back.Plaintext).toEqual(dk.Plaintext);
    expect(kms.calls("GenerateDataKey")).toBe(1);
    c.destroy();
  });

  test("answers with KMS's own error shapes", async () => {
    await using kms = LocalKms.start();
    const c = client(kms);
    const a = (await c.send(new CreateKeyCommand({}))).KeyMetadata?.KeyId as string;
    const b = (await c.send(new CreateKeyCommand({}))).KeyMetadata?.KeyId as string;
    const blob = (
      await c.send(new EncryptCommand({ KeyId: a, Plaintext: Uint8Array.of(1, 2, 3), EncryptionContext: ctx }))
    ).CiphertextBlob as Uint8Array;

    expect(await errorName(c.send(new DescribeKeyCommand({ KeyId: "alias/missing" })))).toBe("NotFoundException");
    expect(await errorName(c.send(new GenerateDataKeyCommand({ KeyId: "nope", KeySpec: "AES_256" })))).toBe(
      "NotFoundException",
    );
    expect(
      await errorName(c.send(new DecryptCommand({ CiphertextBlob: blob, EncryptionContext: { ...ctx, table: "u" } }))),
    ).toBe("InvalidCiphertextException");
    expect(await errorName(c.send(new DecryptCommand({ CiphertextBlob: blob })))).toBe("InvalidCiphertextException");
    expect(
      await errorName(c.send(new DecryptCommand({ CiphertextBlob: blob, KeyId: b, EncryptionContext: ctx }))),
    ).toBe("IncorrectKeyException");
    const tampered = blob.slice();
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1;
    expect(await errorName(c.send(new DecryptCommand({ CiphertextBlob: tampered, EncryptionContext: ctx })))).toBe(
      "InvalidCiphertextException",
    );
    expect(await errorName(c.send(new DecryptCommand({ CiphertextBlob: Uint8Array.of(1, 2, 3) })))).toBe(
      "InvalidCiphertextException",
    );
    await c.send(new CreateAliasCommand({ AliasName: "alias/x", TargetKeyId: a }));
    expect(await errorName(c.send(new CreateAliasCommand({ AliasName: "alias/x", TargetKeyId: b })))).toBe(
      "AlreadyExistsException",
    );
    expect(await errorName(c.send(new CreateAliasCommand({ AliasName: "bad", TargetKeyId: b })))).toBe(
      "ValidationException",
    );
    c.destroy();
  });

  test("refuses requests that are not KMS JSON 1.1", async () => {
    await using kms = LocalKms.start();
    const noTarget = await fetch(kms.endpoint, { method: "POST", body: "{}" });
    expect(noTarget.status).toBe(400);
    expect(((await noTarget.json()) as { __type: string }).__type).toBe("UnknownOperationException");
    const badJson = await fetch(kms.endpoint, {
      method: "POST",
      body: "not json",
      headers: { "x-amz-target": "TrentService.Decrypt" },
    });
    expect(((await badJson.json()) as { __type: string }).__type).toBe("SerializationException");
  });

  test("master keys persist in the data directory, readable only by the owner", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kvs-kms-"));
    dirs.push(dir);
    let blob: Uint8Array;
    {
      await using kms = LocalKms.start({ dataDir: dir });
      const c = client(kms);
      const id = (await c.send(new CreateKeyCommand({}))).KeyMetadata?.KeyId as string;
      await c.send(new CreateAliasCommand({ AliasName: "alias/keep", TargetKeyId: id }));
      blob = (
        await c.send(new GenerateDataKeyCommand({ KeyId: "alias/keep", KeySpec: "AES_256", EncryptionContext: ctx }))
      ).CiphertextBlob as Uint8Array;
      c.destroy();
    }
    expect(statSync(join(dir, "kms-keys.json")).mode & 0o777).toBe(0o600);
    await using again = LocalKms.start({ dataDir: dir });
    const c = client(again);
    const out = await c.send(new DecryptCommand({ CiphertextBlob: blob, KeyId: "alias/keep", EncryptionContext: ctx }));
    expect(out.Plaintext?.length).toBe(32);
    c.destroy();
  });
});
