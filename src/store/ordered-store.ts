import { byteString } from "../bytes.js";
import type { Cancel, KvStore } from "./kv-store.js";

interface Pending {
  value: Uint8Array;
  readonly promise: Promise<void>;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

interface KeyState {
  /** Settles when the write now running for the key settles. */
  running: Promise<void>;
  /** The value that write stores. */
  runningValue: Uint8Array;
  /** The write waiting for `running`; later sets of the key replace its value. */
  next: Pending | null;
}

/**
 * Orders operations per key in issue order over a store whose calls may
 * otherwise overtake each other (network round trips, batches).
 *
 * Invariants:
 * - Writes of one key reach the inner store one at a time, in issue order, so
 *   the last set issued is the value that stays.
 * - A get issued while writes of its key are pending answers the value of
 *   the last set issued before it, once that set is durable, without a read.
 *   So a get pipelined behind a set on one connection sees exactly that set,
 *   never an older value and never a set issued after the get. If that write
 *   fails, the get reads the store.
 * - While a write of a key is running, further sets of that key collapse into
 *   one queued write carrying the newest value; every collapsed set is
 *   acknowledged (or failed) with that write, never before it is durable.
 * Keys with no write in flight pass straight through.
 */
export class OrderedStore implements KvStore {
  readonly #inner: KvStore;
  readonly #keys = new Map<string, KeyState>();

  constructor(inner: KvStore) {
    this.#inner = inner;
  }

  /** Keys that have a write in flight. */
  get keysInFlight(): number {
    return this.#keys.size;
  }

  async get(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | undefined> {
    const state = this.#keys.get(byteString(key));
    if (state !== undefined) {
      // Capture now: later sets may replace the queued value before it lands.
      const value = state.next ? state.next.value : state.runningValue;
      const durable = state.next ? state.next.promise : state.running;
      try {
        await durable;
        return value;
      } catch {
        // The write failed and was answered internal; the store holds whatever it holds.
      }
    }
    return this.#inner.get(key, cancel);
  }

  /**
   * Only a write that starts at once carries `cancel`: a queued write may
   * carry sets collapsed into it from other requesters, so it always runs.
   */
  set(key: Uint8Array, value: Uint8Array, cancel?: Cancel): Promise<void> {
    const id = byteString(key);
    const state = this.#keys.get(id);
    if (state === undefined) {
      const fresh: KeyState = { running: Promise.resolve(), runningValue: value, next: null };
      this.#keys.set(id, fresh);
      const running = this.#run(id, fresh, key, value, cancel);
      fresh.running = running;
      return running;
    }
    if (state.next !== null) {
      state.next.value = value;
      return state.next.promise;
    }
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    state.next = { value, promise, resolve, reject };
    return promise;
  }

  #run(id: string, state: KeyState, key: Uint8Array, value: Uint8Array, cancel?: Cancel): Promise<void> {
    const write = this.#inner.set(key, value, cancel);
    write.then(
      () => this.#advance(id, state, key),
      () => this.#advance(id, state, key),
    );
    return write;
  }

  #advance(id: string, state: KeyState, key: Uint8Array): void {
    const next = state.next;
    if (next === null) {
      this.#keys.delete(id);
      return;
    }
    state.next = null;
    state.runningValue = next.value;
    state.running = this.#run(id, state, key, next.value);
    state.running.then(next.resolve, next.reject);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}
