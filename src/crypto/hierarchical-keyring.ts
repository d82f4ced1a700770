import { LRUCache } from "lru-cache";
import { sameBytes } from "../bytes.js";
import type { Logger } from "../log.js";
import { RepeatLimiter } from "../repeat-limiter.js";
import { ErrorCode, errorMessage, KvError } from "../wire/errors.js";
import type { BranchKeyKms, BranchKeyRecord, BranchKeyStorage } from "./branch-keys.js";
import { type ItemKey, type ItemKeyDeriver, itemKeyDeriver, type KeyRef, SALT_BYTES } from "./item-key.js";
import { randomBytes } from "./random-bytes.js";

/** How long branch keys live, in the cache and as the active version. */
export interface HierarchyLimits {
  /**
   * How long a decrypted branch key is used without asking KMS again. It
   * bounds how long this process keeps encrypting and decrypting after KMS
   * access is revoked or KMS is down.
   */
  ttlMs: number;
  /** Age at which the active version is replaced by a new one; 0: only on demand. */
  rotationMs: number;
  /** How often the active item is re-read: to adopt versions other servers made, and to rotate on schedule. */
  checkMs: number;
  /** Decrypted versions kept (least recently used go first). */
  maxVersions: number;
}

/** Defaults: 15-minute cache (as the data-key cache before it), daily rotation, a check a minute. */
export const DEFAULT_HIERARCHY_LIMITS: HierarchyLimits = {
  ttlMs: 15 * 60_000,
  rotationMs: 24 * 3_600_000,
  checkMs: 60_000,
  maxVersions: 10_000,
};

/**
 * How often to re-read the active item for a rotation period: a quarter of
 * it, within 1 s and 60 s, so a rotation elsewhere is adopted within a
 * minute and a scheduled one is late by at most a quarter period.
 */
export function checkIntervalMs(rotationMs: number): number {
  return rotationMs === 0 ? 60_000 : Math.min(60_000, Math.max(1_000, Math.floor(rotationMs / 4)));
}

interface Material {
  readonly derive: ItemKeyDeriver;
  readonly loadedAt: number;
}

/**
 * The hierarchical keyring (after the AWS Encryption SDK's, see docs/encryption.md
 * "Keys"): KMS protects a few branch keys; every item's data key is derived
 * locally from the active branch key and a random per-item salt.
 *
 * Invariants:
 * - KMS is called once per branch-key version per `ttlMs`, whatever the
 *   request volume or the age of the data: a version used in the last
 *   quarter of its time is decrypted again in the background, so steady
 *   traffic never waits on KMS.
 * - A decrypted version is never used after `ttlMs`: once KMS fails for
 *   that long, requests needing the version fail (`KV_ERR_KMS`), with a log
 *   line that says why.
 * - Concurrent misses of one version share one Decrypt.
 * - Writes use the active version only once it is decrypted: adopting a
 *   version another server made, or rotating, never makes a write wait.
 */
export class HierarchicalKeyring {
  readonly #storage: BranchKeyStorage;
  readonly #kms: BranchKeyKms;
  readonly #table: string;
  readonly #limits: HierarchyLimits;
  readonly #now: () => number;
  readonly #log: Logger;
  readonly #warn: RepeatLimiter;
  readonly #materials: LRUCache<number, Material>;
  readonly #loading = new Map<number, Promise<ItemKeyDeriver>>();
  #active: BranchKeyRecord | undefined;
  #starting: Promise<BranchKeyRecord> | undefined;
  #rotating: Promise<number> | undefined;
  #checking: Promise<void> | undefined;
  #timer: Timer | undefined;
  /** Branch-key lookups served from the cache, and those that needed KMS. */
  hits = 0;
  misses = 0;
  /** Rotations this process completed (its own or one it finished for another). */
  rotations = 0;

  constructor(
    storage: BranchKeyStorage,
    kms: BranchKeyKms,
    table: string,
    log: Logger,
    limits: Partial<HierarchyLimits> = {},
    now: () => number = Date.now,
  ) {
    this.#storage = storage;
    this.#kms = kms;
    this.#table = table;
    this.#log = log;
    this.#limits = { ...DEFAULT_HIERARCHY_LIMITS, ...limits };
    this.#now = now;
    this.#warn = new RepeatLimiter(log, 10_000, now);
    this.#materials = new LRUCache<number, Material>({ max: this.#limits.maxVersions });
  }

  /** The active version, once known. */
  get activeVersion(): number | undefined {
    return this.#active?.version;
  }

  /**
   * Finds the active version, making version 1 if the table has none, and
   * decrypts it; then checks every `checkMs`. Throws what KMS or DynamoDB
   * throws, so a wrong key or a missing permission stops the server at once.
   */
  async start(): Promise<void> {
    await this.#ensureActive();
    if (this.#limits.checkMs > 0 && this.#timer === undefined) {
      this.#timer = setInterval(() => void this.check(), this.#limits.checkMs);
      this.#timer.unref();
    }
  }

  /** Stops the periodic check. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** A fresh per-item key under the active version. */
  async encryptionKey(): Promise<ItemKey> {
    const active = this.#active ?? (await this.#ensureActive());
    const derive = await this.#material(active.version, active);
    const salt = randomBytes(SALT_BYTES);
    const plaintext = derive(salt);
    return { plaintext, ref: { kind: "branch", version: active.version, salt } };
  }

  /** The per-item key `ref` names. */
  async decryptionKey(ref: Extract<KeyRef, { kind: "branch" }>): Promise<Uint8Array> {
    const derive = await this.#material(ref.version, undefined);
    return derive(ref.salt);
  }

  /**
   * Makes a new version active now (on demand; the schedule calls it too)
   * and returns it. Concurrent calls in this process share one rotation;
   * concurrent calls on other servers make the same single version.
   */
  rotate(): Promise<number> {
    this.#rotating ??= this.#rotate().finally(() => {
      this.#rotating = undefined;
    });
    return this.#rotating;
  }

  /**
   * Re-reads the active item: adopts a version another server made, and
   * rotates once the active version is `rotationMs` old. Failures are logged
   * and leave the current version in use: any version keeps decrypting.
   */
  check(): Promise<void> {
    this.#checking ??= this.#check().finally(() => {
      this.#checking = undefined;
    });
    return this.#checking;
  }

  async #check(): Promise<void> {
    try {
      const stored = await this.#storage.active();
      if (stored !== undefined) await this.#adopt(stored);
      const { rotationMs } = this.#limits;
      const current = this.#active;
      if (rotationMs > 0 && current !== undefined && this.#now() - current.createdAt >= rotationMs) {
        await this.rotate();
      }
    } catch (err) {
      this.#warn.warn("check", "branch-key check failed; writes keep using the current version", {
        version: this.#active?.version,
        reason: errorMessage(err),
      });
    }
  }

  async #rotate(): Promise<number> {
    const current = await this.#storage.active();
    let ours: { version: number; key: Uint8Array; wrapped: Uint8Array } | undefined;
    const active = await this.#storage.rotate(current?.version ?? 0, this.#now(), async (version) => {
      const made = await this.#kms.generateBranchKey(version);
      ours = { version, key: made.plaintext, wrapped: made.wrapped };
      return made.wrapped;
    });
    // Our key won: its plaintext is known, so adopting it costs no Decrypt.
    if (ours !== undefined && ours.version === active.version && sameBytes(ours.wrapped, active.wrapped)) {
      this.#materials.set(active.version, this.#entry(active.version, ours.key));
    }
    await this.#adopt(active);
    this.rotations++;
    this.#log.info("branch key rotated", { version: active.version });
    return active.version;
  }

  /** Uses `stored` for writes once it is decrypted, unless a later version is already in use. */
  async #adopt(stored: BranchKeyRecord): Promise<void> {
    const current = this.#active;
    if (current !== undefined && stored.version < current.version) return;
    await this.#material(stored.version, stored);
    if (this.#active === undefined || stored.version >= this.#active.version) this.#active = stored;
  }

  #ensureActive(): Promise<BranchKeyRecord> {
    this.#starting ??= (async () => {
      const stored = await this.#storage.active();
      if (stored === undefined) await this.rotate();
      else await this.#adopt(stored);
      return this.#active as BranchKeyRecord;
    })().finally(() => {
      this.#starting = undefined;
    });
    return this.#starting;
  }

  /**
   * Branch key `version`, decrypted: from the cache while younger than the
   * TTL, else one shared KMS call. `record` saves the read of the version's
   * item when the caller has it.
   */
  async #material(version: number, record: BranchKeyRecord | undefined): Promise<ItemKeyDeriver> {
    const cached = this.#materials.get(version);
    const age = cached === undefined ? Number.POSITIVE_INFINITY : this.#now() - cached.loadedAt;
    if (cached !== undefined && age < this.#limits.ttlMs) {
      this.hits++;
      // Refreshed ahead in its last quarter, so steady traffic never meets an expired key.
      if (age >= this.#limits.ttlMs * 0.75) this.#load(version, record).catch(() => {});
      return cached.derive;
    }
    this.misses++;
    return this.#load(version, record);
  }

  #load(version: number, record: BranchKeyRecord | undefined): Promise<ItemKeyDeriver> {
    let loading = this.#loading.get(version);
    if (loading === undefined) {
      loading = this.#decrypt(version, record).finally(() => this.#loading.delete(version));
      this.#loading.set(version, loading);
    }
    return loading;
  }

  #entry(version: number, branchKey: Uint8Array): Material {
    return { derive: itemKeyDeriver(branchKey, this.#table, version), loadedAt: this.#now() };
  }

  async #decrypt(version: number, known: BranchKeyRecord | undefined): Promise<ItemKeyDeriver> {
    try {
      const record = known ?? (await this.#storage.version(version));
      if (record === undefined) {
        throw new KvError(ErrorCode.Integrity, `the item names branch-key version ${version}, which does not exist`);
      }
      const entry = this.#entry(version, await this.#kms.decryptBranchKey(version, record.wrapped));
      this.#materials.set(version, entry);
      return entry.derive;
    } catch (err) {
      const cached = this.#materials.get(version);
      const valid = cached !== undefined && this.#now() - cached.loadedAt < this.#limits.ttlMs;
      const msg = valid
        ? `branch key version ${version} could not be refreshed from KMS; its cached copy serves until its TTL`
        : cached === undefined
          ? `branch key version ${version} could not be decrypted: requests that need it fail until KMS answers`
          : `branch key version ${version} expired from the cache (TTL ${this.#limits.ttlMs} ms) and could not be ` +
            "decrypted again: requests that need it fail until KMS answers";
      this.#warn.warn(`load ${version}`, msg, { version, reason: errorMessage(err) });
      throw err;
    }
  }
}
