import type { DataKey } from "./key-cache.js";

/** One stored branch-key version: its number, its KMS ciphertext and when it was made. */
export interface BranchKeyRecord {
  readonly version: number;
  readonly wrapped: Uint8Array;
  /** Creation time, ms since the epoch: the rotation schedule counts from it. */
  readonly createdAt: number;
}

/** Largest branch-key version: items store it as a u32 in HKDF's info. */
export const MAX_BRANCH_VERSION = 0xffff_ffff;

/**
 * Where branch keys persist (the service's table, see store/branch-key-store.ts).
 * Versions are numbered 1, 2, 3... and never deleted; exactly one is active.
 */
export interface BranchKeyStorage {
  /** The active version, read strongly consistently; undefined before the first is made. */
  active(): Promise<BranchKeyRecord | undefined>;
  /** Version `version`; undefined if it was never made. */
  version(version: number): Promise<BranchKeyRecord | undefined>;
  /**
   * Makes version `expected + 1` active, creating it (made at `createdAt`,
   * ms since the epoch) with `make` unless another writer did, and returns
   * the active version afterwards. Only
   * conditional writes coordinate writers: however many rotate at once from
   * the same `expected`, one new version results and all return it.
   */
  rotate(expected: number, createdAt: number, make: (version: number) => Promise<Uint8Array>): Promise<BranchKeyRecord>;
}

/** The KMS calls a branch key needs: made once per version, decrypted once per version per cache period. */
export interface BranchKeyKms {
  generateBranchKey(version: number): Promise<DataKey>;
  decryptBranchKey(version: number, wrapped: Uint8Array): Promise<Uint8Array>;
}
