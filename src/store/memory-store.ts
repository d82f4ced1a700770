import { byteString } from "../bytes.js";
import type { KvStore } from "./kv-store.js";

/**
 * A process-local store for tests and benchmarks. Not durable and not shared
 * between processes; values are copied so a stored value never pins a socket chunk.
 */
export class MemoryStore implements KvStore {
  readonly #map = new Map<string, Uint8Array>();
  readonly appliesInOrder = true;

  /** Number of keys held. */
  get size(): number {
    return this.#map.size;
  }

  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return Promise.resolve(this.#map.get(byteString(key)));
  }

  set(key: Uint8Array, value: Uint8Array): Promise<void> {
    // new Uint8Array(view) copies; Buffer#slice would not.
    this.#map.set(byteString(key), new Uint8Array(value));
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
