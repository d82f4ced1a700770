import { LRUCache } from "lru-cache";
import { byteString } from "../bytes.js";

/** A data key: the plaintext for AES, and the KMS-wrapped form stored beside the data. */
export interface DataKey {
  readonly plaintext: Uint8Array;
  readonly wrapped: Uint8Array;
}

/** Where data keys come from: KMS in production. */
export interface DataKeyProvider {
  /** A fresh data key (KMS GenerateDataKey). */
  generate(): Promise<DataKey>;
  /** The plaintext of a wrapped data key (KMS Decrypt). */
  unwrap(wrapped: Uint8Array): Promise<Uint8Array>;
}

/** Limits on how long and how much one data key encrypts, and how many unwrapped keys stay cached. */
export interface KeyCacheLimits {
  /**
   * Age after which a data key no longer encrypts. 0 disables caching: every
   * encryption generates a key and every decryption calls KMS (the naive
   * baseline the bench compares against).
   */
  maxAgeMs: number;
  /** Messages (values or chunks) one data key may encrypt. */
  maxMessages: number;
  /** Plaintext bytes one data key may encrypt. */
  maxBytes: number;
  /** Unwrapped keys kept for reads. */
  maxDecryptKeys: number;
  /** How long an unwrapped key stays cached for reads. */
  decryptTtlMs: number;
  /**
   * How long before its maximum age a key's successor is generated in the
   * background, so a slow or stalled KMS delays no set while the current key
   * is still good.
   */
  refreshAheadMs: number;
}

/**
 * Defaults: a key encrypts for 5 minutes, 2^24 messages or 64 GiB, whichever
 * comes first. 2^24 random 96-bit IVs keep the GCM collision probability
 * below 2^-48; steady traffic costs one GenerateDataKey per 5 minutes per process.
 */
export const DEFAULT_KEY_CACHE_LIMITS: KeyCacheLimits = {
  maxAgeMs: 5 * 60_000,
  maxMessages: 2 ** 24,
  maxBytes: 64 * 2 ** 30,
  maxDecryptKeys: 10_000,
  decryptTtlMs: 15 * 60_000,
  refreshAheadMs: 60_000,
};

interface ActiveKey {
  readonly key: DataKey;
  readonly createdAt: number;
  messages: number;
  bytes: number;
}

/**
 * Caches data keys so steady traffic makes no KMS call per request.
 *
 * Invariants:
 * - One data key encrypts until its age, message or byte limit is reached;
 *   the next encryption then generates a new one.
 * - Concurrent requests that find no usable key share one GenerateDataKey;
 *   concurrent reads of the same wrapped key share one Decrypt.
 * - A generated key is also cached for reads, so reading back what this
 *   process wrote costs no Decrypt.
 * - A failed KMS call is not cached: the next request tries again.
 * - Once a key is within `refreshAheadMs` of its maximum age, its successor
 *   is generated in the background while it keeps encrypting; a failed
 *   background call is tried again by the next encryption.
 */
export class DataKeyCache {
  readonly #provider: DataKeyProvider;
  readonly #limits: KeyCacheLimits;
  readonly #now: () => number;
  #active: ActiveKey | null = null;
  #generating: Promise<ActiveKey> | null = null;
  readonly #decrypt: LRUCache<string, Uint8Array, Uint8Array>;
  /** Decryptions served from the cache, and those that needed KMS (for /metrics). */
  hits = 0;
  misses = 0;

  constructor(provider: DataKeyProvider, limits: Partial<KeyCacheLimits> = {}, now: () => number = Date.now) {
    this.#provider = provider;
    this.#limits = { ...DEFAULT_KEY_CACHE_LIMITS, ...limits };
    this.#now = now;
    this.#decrypt = new LRUCache<string, Uint8Array, Uint8Array>({
      max: this.#limits.maxDecryptKeys,
      ttl: this.#limits.decryptTtlMs,
      // perf.now-based TTL checks are skipped when an injected clock is used in tests.
      ttlAutopurge: false,
      fetchMethod: (_id, _stale, { context }) => this.#provider.unwrap(context),
    });
  }

  /**
   * A key to encrypt `messages` messages totalling `bytes` plaintext bytes.
   * The usage is charged to the key before it is returned.
   */
  async encryptionKey(messages = 1, bytes = 0): Promise<DataKey> {
    for (;;) {
      const active = this.#active;
      if (active !== null && this.#usable(active, messages, bytes)) {
        if (this.#generating === null && this.#dueForRefresh(active)) {
          this.#generating = this.#generate();
          // Failure is not this request's: it still has a good key. The next one tries again.
          this.#generating.catch(() => {});
        }
        return this.#charge(active, messages, bytes);
      }
      this.#generating ??= this.#generate();
      const fresh = await this.#generating;
      // The first request served by a new key always fits, however large, so nothing loops forever.
      if (fresh.messages === 0) return this.#charge(fresh, messages, bytes);
    }
  }

  #charge(active: ActiveKey, messages: number, bytes: number): DataKey {
    active.messages += messages;
    active.bytes += bytes;
    return active.key;
  }

  /** The plaintext of `wrapped`, from cache or one shared KMS call. */
  async decryptionKey(wrapped: Uint8Array): Promise<Uint8Array> {
    if (this.#limits.maxAgeMs === 0) return this.#provider.unwrap(wrapped);
    const id = byteString(wrapped);
    // A plain get first: a hit, the steady state, skips the fetch machinery.
    const cached = this.#decrypt.get(id);
    if (cached !== undefined) {
      this.hits++;
      return cached;
    }
    this.misses++;
    const plaintext = await this.#decrypt.fetch(id, { context: wrapped });
    if (plaintext === undefined) throw new Error("unreachable: fetchMethod never resolves undefined");
    return plaintext;
  }

  /** Forgets every key. */
  clear(): void {
    this.#active = null;
    this.#decrypt.clear();
  }

  #dueForRefresh(active: ActiveKey): boolean {
    const { maxAgeMs, refreshAheadMs } = this.#limits;
    return refreshAheadMs > 0 && this.#now() - active.createdAt >= maxAgeMs - Math.min(refreshAheadMs, maxAgeMs / 2);
  }

  #usable(active: ActiveKey, messages: number, bytes: number): boolean {
    const limits = this.#limits;
    if (this.#now() - active.createdAt >= limits.maxAgeMs) return false;
    return active.messages + messages <= limits.maxMessages && active.bytes + bytes <= limits.maxBytes;
  }

  async #generate(): Promise<ActiveKey> {
    try {
      const key = await this.#provider.generate();
      const active: ActiveKey = { key, createdAt: this.#now(), messages: 0, bytes: 0 };
      if (this.#limits.maxAgeMs > 0) this.#decrypt.set(byteString(key.wrapped), key.plaintext);
      this.#active = active;
      return active;
    } finally {
      this.#generating = null;
    }
  }
}
