import { randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** One symmetric master key of the local KMS. */
export interface MasterKey {
  keyId: string;
  arn: string;
  /** 32 bytes of AES-256 key material; never leaves this process except into its own file. */
  material: Uint8Array;
  description: string;
  createdAt: number;
  enabled: boolean;
}

interface StoredKey {
  keyId: string;
  arn: string;
  material: string;
  description: string;
  createdAt: number;
  enabled: boolean;
}

interface StoredFile {
  version: 1;
  keys: StoredKey[];
  aliases: Record<string, string>;
}

/** Account id the local endpoint reports in ARNs. */
export const LOCAL_ACCOUNT = "000000000000";

/**
 * Master keys and aliases of the local KMS endpoint. With a directory they
 * persist in `<dir>/kms-keys.json` (mode 0600, replaced atomically), so data
 * written in one run decrypts in the next; without one they live in memory.
 */
export class KmsKeyStore {
  readonly #file: string | undefined;
  readonly #region: string;
  readonly #keys = new Map<string, MasterKey>();
  readonly #aliases = new Map<string, string>();

  constructor(region: string, dir?: string) {
    this.#region = region;
    if (dir !== undefined) {
      mkdirSync(dir, { recursive: true });
      this.#file = join(dir, "kms-keys.json");
      this.#load();
    }
  }

  /** Creates a key. */
  create(description = ""): MasterKey {
    const keyId = randomUUID();
    const key: MasterKey = {
      keyId,
      arn: `arn:aws:kms:${this.#region}:${LOCAL_ACCOUNT}:key/${keyId}`,
      material: new Uint8Array(randomBytes(32)),
      description,
      createdAt: Date.now(),
      enabled: true,
    };
    this.#keys.set(keyId, key);
    this.#save();
    return key;
  }

  /** Points `alias` (with its `alias/` prefix) at a key. Returns false if the alias exists. */
  createAlias(alias: string, keyId: string): boolean {
    if (this.#aliases.has(alias)) return false;
    this.#aliases.set(alias, keyId);
    this.#save();
    return true;
  }

  /** Aliases and the key ids they point to. */
  aliases(): [string, string][] {
    return [...this.#aliases];
  }

  /** Finds a key by id, key ARN, alias name or alias ARN. */
  resolve(ref: string): MasterKey | undefined {
    let id = ref;
    const arnAlias = /^arn:aws[a-z-]*:kms:[^:]*:[^:]*:(alias\/.+)$/.exec(ref);
    const arnKey = /^arn:aws[a-z-]*:kms:[^:]*:[^:]*:key\/(.+)$/.exec(ref);
    if (arnAlias?.[1]) id = this.#aliases.get(arnAlias[1]) ?? "";
    else if (arnKey?.[1]) id = arnKey[1];
    else if (ref.startsWith("alias/")) id = this.#aliases.get(ref) ?? "";
    return this.#keys.get(id);
  }

  /** Finds a key by its bare id. */
  byId(keyId: string): MasterKey | undefined {
    return this.#keys.get(keyId);
  }

  #load(): void {
    const file = this.#file as string;
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    const parsed = JSON.parse(text) as StoredFile;
    if (parsed.version !== 1) throw new Error(`${file}: unknown version ${parsed.version}`);
    for (const k of parsed.keys) {
      this.#keys.set(k.keyId, { ...k, material: new Uint8Array(Buffer.from(k.material, "base64")) });
    }
    for (const [alias, id] of Object.entries(parsed.aliases)) this.#aliases.set(alias, id);
  }

  #save(): void {
    if (this.#file === undefined) return;
    const stored: StoredFile = {
      version: 1,
      keys: [...this.#keys.values()].map((k) => ({ ...k, material: Buffer.from(k.material).toString("base64") })),
      aliases: Object.fromEntries(this.#aliases),
    };
    const tmp = `${this.#file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(stored, null, 2), { mode: 0o600 });
    renameSync(tmp, this.#file);
  }
}
