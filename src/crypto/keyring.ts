import type { HierarchicalKeyring } from "./hierarchical-keyring.js";
import type { ItemKey, ItemKeys, KeyRef } from "./item-key.js";
import type { DataKeyCache } from "./key-cache.js";

/** Which key format new writes use. */
export const KeyringKind = { hierarchical: "hierarchical", kms: "kms" } as const;
export type KeyringKind = (typeof KeyringKind)[keyof typeof KeyringKind];

/**
 * The store's keys: new items get keys from the keyring `writeWith` names;
 * every item reads with the keyring its own key reference names, so items of
 * both formats stay readable whichever writes (the migration in docs/encryption.md
 * "Keys" relies on this).
 */
export class Keyring implements ItemKeys {
  readonly branch: HierarchicalKeyring;
  readonly legacy: DataKeyCache;
  readonly writeWith: KeyringKind;

  constructor(branch: HierarchicalKeyring, legacy: DataKeyCache, writeWith: KeyringKind) {
    this.branch = branch;
    this.legacy = legacy;
    this.writeWith = writeWith;
  }

  async encryptionKey(messages: number, bytes: number): Promise<ItemKey> {
    if (this.writeWith === KeyringKind.hierarchical) return this.branch.encryptionKey();
    const key = await this.legacy.encryptionKey(messages, bytes);
    return { plaintext: key.plaintext, ref: { kind: "kms", wrapped: key.wrapped } };
  }

  decryptionKey(ref: KeyRef): Promise<Uint8Array> {
    return ref.kind === "kms" ? this.legacy.decryptionKey(ref.wrapped) : this.branch.decryptionKey(ref);
  }

  /** Key lookups served from cache, and those that needed KMS, over both keyrings. */
  get hits(): number {
    return this.branch.hits + this.legacy.hits;
  }

  get misses(): number {
    return this.branch.misses + this.legacy.misses;
  }
}
