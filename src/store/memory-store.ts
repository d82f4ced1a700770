import { byteString } from "../bytes.js";
import type { KvStore } from "./kv-store.js";

/**
 * A process-local store for tests and benchmarks. Not durable and not shared
 * between processes; values are copied so a stored value never pins a socket chunk.
 */
export class MemoryStore implements KvStore {
  readonly #map = new Map<string, Uint8Array>();
  readonly appliesInOrder = true;

  readonly getSync = (key: Uint8Array): Uint8Array | undefined => this.#map.get(byteString(key));

  readonly setSync = (key: Uint8Array, value: Uint8Array): void => {
    // The one copy the store keeps (new Uint8Array(view) copies; Buffer#slice would not):
    // the frame's bytes belong to the socket's read buffer.
    this.#map.set(byteString(key), new Uint8Array(value));
  };

  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return Promise.resolve(this.getSync(key));
  }

  set(key: Uint8Array, value: Uint8Array): Promise<void> {
    this.setSync(key, value);
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
