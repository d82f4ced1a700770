import { byteString } from "../bytes.js";
import {
  type Cancel,
  forwardingSink,
  type KvStore,
  type ListPage,
  type ListRequest,
  readValue,
  type ValueSink,
  type ValueStream,
  type Versioned,
  type WriteCondition,
  writeValue,
} from "./kv-store.js";
import { versions } from "./version-clock.js";

/** What {@link OrderedStore} answers a read from when no write of its key is pending. */
const NO_PENDING = Symbol("no pending write");

/**
 * A write of one key: a set carrying its value, a delete, or the commit of
 * a streamed set (whose value is not held: `run` finishes writing and commits it).
 */
type Write =
  | { kind: "set"; value: Uint8Array }
  | { kind: "setIf"; value: Uint8Array; condition: WriteCondition }
  | { kind: "delete"; value?: undefined }
  | { kind: "stream"; value?: undefined; run: () => Promise<number> };

/** One requester of a queued set: given a version of its own if a later set replaces its value. */
interface SetTicket {
  replaced?: number;
}

interface Queued {
  readonly write: Write;
  /** A queued set's requesters whose value is the one it holds now or held before. */
  readonly tickets: SetTicket[];
  readonly promise: Promise<unknown>;
  readonly resolve: (result: unknown) => void;
  readonly reject: (err: unknown) => void;
}

interface KeyState {
  /** The write running for the key, and its settling. */
  running: Write;
  settled: Promise<unknown>;
  /** Writes waiting for it, in issue order. A set never directly follows a set here: they collapse. */
  readonly queue: Queued[];
}

/**
 * Orders writes per key in issue order over a store whose calls may
 * otherwise overtake each other (network round trips, batches).
 *
 * Invariants:
 * - Writes (sets and deletes) of one key reach the inner store one at a
 *   time, in issue order, so the last write issued decides what stays.
 * - A get or exists issued while writes of its key are pending answers from
 *   the last write issued before it, once that write has settled, without a
 *   read: the value of a set, or absence after a delete. So a read pipelined
 *   behind a write on one connection sees exactly that write, never an older
 *   state and never a write issued after it. If that write fails, the read
 *   goes to the store.
 * - While a write of a key is running, a set that would queue directly
 *   behind another queued set replaces its value instead; both are
 *   acknowledged (or failed) with that one write, never before it is durable.
 *   The replaced set answers a version of its own, never stored, so a
 *   compare-and-set on it conflicts, as it would had it landed and been
 *   overwritten at once. Deletes and conditional sets never collapse: each
 *   answers for itself.
 * - A versioned read waits for the key's pending writes, then reads the
 *   store: the version is the store's, never guessed.
 * Keys with no write in flight pass straight through. Listing and clear are
 * not ordered here: the connection orders them (they wait for its earlier
 * requests, and its later requests wait for a clear).
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
    const pending = await this.#pendingValue(key);
    return pending !== NO_PENDING ? pending : this.#inner.get(key, cancel);
  }

  /** As {@link get}, but a large value from the store comes as a stream when the store can stream it. */
  async getStream(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | ValueStream | undefined> {
    const pending = await this.#pendingValue(key);
    if (pending !== NO_PENDING) return pending;
    return readValue(this.#inner, key, cancel);
  }

  /**
   * What the last write of `key` issued so far leaves, once it has settled:
   * the value of a set, undefined after a delete; NO_PENDING when no write is
   * pending or that write failed (the store then holds whatever it holds).
   */
  async #pendingValue(key: Uint8Array): Promise<Uint8Array | undefined | typeof NO_PENDING> {
    const latest = this.#latest(key);
    if (latest === undefined) return NO_PENDING;
    // Captured now: a later set may replace a queued value before it lands.
    const { write, settled } = latest;
    const { kind, value } = write;
    try {
      await settled;
      // A streamed set's value is in the store, not here: read it from there.
      return kind === "stream" ? NO_PENDING : value;
    } catch {
      return NO_PENDING;
    }
  }

  async getVersioned(key: Uint8Array, cancel?: Cancel): Promise<Versioned | undefined> {
    await this.#pendingValue(key);
    return this.#inner.getVersioned(key, cancel);
  }

  setIf(key: Uint8Array, value: Uint8Array, condition: WriteCondition, cancel?: Cancel): Promise<number> {
    return this.#write(key, { kind: "setIf", value, condition }, cancel) as Promise<number>;
  }

  async exists(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    const pending = await this.#pendingValue(key);
    return pending !== NO_PENDING ? pending !== undefined : this.#inner.exists(key, cancel);
  }

  /**
   * Only a write that starts at once carries `cancel`: a queued set may
   * carry sets collapsed into it from other requesters, so it always runs.
   */
  set(key: Uint8Array, value: Uint8Array, cancel?: Cancel): Promise<number> {
    return this.#write(key, { kind: "set", value }, cancel) as Promise<number>;
  }

  delete(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    return this.#write(key, { kind: "delete" }, cancel) as Promise<boolean>;
  }

  /**
   * The inner store's sink, whose commit is ordered here: the write is
   * issued when `end` is called. Writing the last chunks starts at once;
   * only the commit waits for the key's earlier writes.
   */
  setStream(key: Uint8Array, size: number, cancel?: Cancel): ValueSink {
    const inner = writeValue(this.#inner, key, size, cancel);
    const write = (run: () => Promise<number>) => this.#write(key, { kind: "stream", run }) as Promise<number>;
    return forwardingSink(inner, {
      end: () => {
        if (inner.finish === undefined) return write(() => inner.end());
        const finishing = inner.finish();
        // Awaited by the write when its turn comes.
        finishing.catch(() => {});
        return write(() => finishing.then((commit) => commit()));
      },
    });
  }

  list(request: ListRequest, cancel?: Cancel): Promise<ListPage> {
    return this.#inner.list(request, cancel);
  }

  clear(): Promise<number> {
    return this.#inner.clear();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  /** The last write issued for `key`, if one is pending, and its settling. */
  #latest(key: Uint8Array): { write: Write; settled: Promise<unknown> } | undefined {
    const state = this.#keys.get(byteString(key));
    if (state === undefined) return undefined;
    const last = state.queue.at(-1);
    if (last !== undefined) return { write: last.write, settled: last.promise };
    return { write: state.running, settled: state.settled };
  }

  #write(key: Uint8Array, write: Write, cancel?: Cancel): Promise<unknown> {
    const id = byteString(key);
    const state = this.#keys.get(id);
    if (state === undefined) {
      const fresh: KeyState = { running: write, settled: Promise.resolve(), queue: [] };
      this.#keys.set(id, fresh);
      fresh.settled = this.#run(id, fresh, key, write, cancel);
      return fresh.settled;
    }
    const last = state.queue.at(-1);
    if (last !== undefined && last.write.kind === "set" && write.kind === "set") {
      last.write.value = write.value;
      // Every earlier requester was given its version at the collapse after it: only the newest lacks one.
      const newest = last.tickets.at(-1);
      if (newest !== undefined) newest.replaced = versions.next();
      return ticketed(last);
    }
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    const queued: Queued = { write, tickets: [], promise, resolve, reject };
    state.queue.push(queued);
    return write.kind === "set" ? ticketed(queued) : promise;
  }

  #run(id: string, state: KeyState, key: Uint8Array, write: Write, cancel?: Cancel): Promise<unknown> {
    const done: Promise<unknown> =
      write.kind === "set"
        ? this.#inner.set(key, write.value, cancel)
        : write.kind === "setIf"
          ? this.#inner.setIf(key, write.value, write.condition, cancel)
          : write.kind === "delete"
            ? this.#inner.delete(key, cancel)
            : write.run();
    const advance = () => this.#advance(id, state, key);
    done.then(advance, advance);
    return done;
  }

  #advance(id: string, state: KeyState, key: Uint8Array): void {
    const next = state.queue.shift();
    if (next === undefined) {
      this.#keys.delete(id);
      return;
    }
    state.running = next.write;
    state.settled = this.#run(id, state, key, next.write);
    state.settled.then(next.resolve, next.reject);
  }
}

/** A new requester of queued set `q`: its write's version, or its own if its value is replaced before it lands. */
function ticketed(q: Queued): Promise<unknown> {
  const ticket: SetTicket = {};
  q.tickets.push(ticket);
  return q.promise.then((version) => ticket.replaced ?? version);
}
