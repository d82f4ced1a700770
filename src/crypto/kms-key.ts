import { CreateAliasCommand, CreateKeyCommand, DescribeKeyCommand, type KMSClient } from "@aws-sdk/client-kms";

/**
 * Makes sure `keyId` names a usable key. When it is a missing alias, creates a
 * key and the alias (local endpoints only: on AWS the key belongs to
 * template.yaml). Returns the key's ARN.
 */
export async function ensureKey(kms: KMSClient, keyId: string, create: boolean): Promise<string> {
  try {
    const out = await kms.send(new DescribeKeyCommand({ KeyId: keyId }));
    const arn = out.KeyMetadata?.Arn;
    if (!arn) throw new Error(`DescribeKey ${keyId} returned no ARN`);
    if (out.KeyMetadata?.Enabled === false) throw new Error(`KMS key ${arn} is disabled`);
    return arn;
  } catch (err) {
    if (!(create && err instanceof Error && err.name === "NotFoundException" && keyId.startsWith("alias/"))) throw err;
  }
  const created = await kms.send(new CreateKeyCommand({ Description: `kvs data keys (${keyId})` }));
  const arn = created.KeyMetadata?.Arn;
  const id = created.KeyMetadata?.KeyId;
  if (!arn || !id) throw new Error("CreateKey returned no key");
  try {
    await kms.send(new CreateAliasCommand({ AliasName: keyId, TargetKeyId: id }));
  } catch (err) {
    // Another process created the alias first; use its key.
    if (err instanceof Error && err.name === "AlreadyExistsException") return ensureKey(kms, keyId, false);
    throw err;
  }
  return arn;
}
