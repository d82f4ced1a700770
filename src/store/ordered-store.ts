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

/**
 * A write of one key: a set carrying its value, a delete, or the commit of
 * a streamed set (whose value is not held: `run` finishes writing and commits it).
 */
type Write =
  | { kind: "set"; value: Uint8Array; ttlMs: number | undefined }
  | { kind: "setIf"; value: Uint8Array; condition: WriteCondition; ttlMs: number | undefined }
  | { kind: "delete" }
  | { kind: "stream"; run: () => Promise<number> };

/** A read of one key: it runs against the store when its turn comes. */
type Read = { kind: "read"; run: () => Promise<unknown> };

/** One requester of a queued set: given a version of its own if a later set replaces its value. */
interface SetTicket {
  replaced?: number;
}

interface Queued {
  readonly op: Write | Read;
  /** A queued set's requesters whose value is the one it holds now or held before. */
  readonly tickets: SetTicket[];
  readonly promise: Promise<unknown>;
  readonly resolve: (result: unknown) => void;
  readonly reject: (err: unknown) => void;
}

interface KeyState {
  /** Operations of the key running in the store: one write, or any number of reads. */
  running: number;
  writing: boolean;
  /** Operations waiting for them, in issue order. A set never directly follows a set here: they collapse. */
  readonly queue: Queued[];
}

/**
 * Orders each key's operations in issue order over a store whose calls may
 * otherwise overtake each other (network round trips, batches), as a FIFO
 * readers-writer queue per key.
 *
 * Invariants:
 * - Writes (sets and deletes) of one key reach the inner store one at a
 *   time, in issue order, so the last write issued decides what stays.
 * - A read (get, exists, versioned get) runs against the store after every
 *   write of its key issued before it has settled, and a write issued after
 *   it starts only once it has finished; reads in a row run together. So a
 *   read pipelined behind a write on one connection sees that write (or a
 *   later one from another server), and never one issued after it here.
 * - A read always reads the store, never the value of a write that just
 *   settled: another server may have written the key after that write
 *   landed and before its answer arrived, and answering the older value
 *   then would not be linearizable.
 * - While a write of a key is running, a set that would queue directly
 *   behind another queued set replaces its value instead; both are
 *   acknowledged (or failed) with that one write, never before it is durable.
 *   The replaced set answers a version of its own, never stored, so a
 *   compare-and-set on it conflicts, as it would had it landed and been
 *   overwritten at once. Deletes and conditional sets never collapse: each
 *   answers for itself.
 * Keys with nothing running pass straight through. Listing and clear are
 * not ordered here: the connection orders them (they wait for its earlier
 * requests, and its later requests wait for a clear).
 */
export class OrderedStore implements KvStore {
  readonly #inner: KvStore;
  readonly #keys = new Map<string, KeyState>();

  constructor(inner: KvStore) {
    this.#inner = inner;
  }

  /** Keys that have an operation running or waiting. */
  get keysInFlight(): number {
    return this.#keys.size;
  }

  get(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | undefined> {
    return this.#read(key, () => this.#inner.get(key, cancel)) as Promise<Uint8Array | undefined>;
  }

  /** As {@link get}, but a large value from the store comes as a stream when the store can stream it. */
  getStream(key: Uint8Array, cancel?: Cancel): Promise<Uint8Array | ValueStream | undefined> {
    return this.#read(key, () => readValue(this.#inner, key, cancel)) as Promise<Uint8Array | ValueStream | undefined>;
  }

  getVersioned(key: Uint8Array, cancel?: Cancel): Promise<Versioned | undefined> {
    return this.#read(key, () => this.#inner.getVersioned(key, cancel)) as Promise<Versioned | undefined>;
  }

  exists(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    return this.#read(key, () => this.#inner.exists(key, cancel)) as Promise<boolean>;
  }

  setIf(
    key: Uint8Array,
    value: Uint8Array,
    condition: WriteCondition,
    cancel?: Cancel,
    ttlMs?: number,
  ): Promise<number> {
    return this.#write(key, { kind: "setIf", value, condition, ttlMs }, cancel) as Promise<number>;
  }

  /**
   * Only a write that starts at once carries `cancel`: a queued set may
   * carry sets collapsed into it from other requesters, so it always runs.
   */
  set(key: Uint8Array, value: Uint8Array, cancel?: Cancel, ttlMs?: number): Promise<number> {
    return this.#write(key, { kind: "set", value, ttlMs }, cancel) as Promise<number>;
  }

  delete(key: Uint8Array, cancel?: Cancel): Promise<boolean> {
    return this.#write(key, { kind: "delete" }, cancel) as Promise<boolean>;
  }

  /**
   * The inner store's sink, whose commit is ordered here: the write is
   * issued when `end` is called. Writing the last chunks starts at once;
   * only the commit waits for the key's earlier operations.
   */
  setStream(key: Uint8Array, size: number, cancel?: Cancel, ttlMs?: number): ValueSink {
    const inner = writeValue(this.#inner, key, size, cancel, ttlMs);
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

  #read(key: Uint8Array, run: () => Promise<unknown>): Promise<unknown> {
    const id = byteString(key);
    const state = this.#stateOf(id);
    // Reads join running reads only while no write waits: a queued write keeps its place.
    if (!state.writing && state.queue.length === 0) return this.#start(id, state, key, { kind: "read", run });
    return this.#enqueue(state, { kind: "read", run });
  }

  #write(key: Uint8Array, write: Write, cancel?: Cancel): Promise<unknown> {
    const id = byteString(key);
    const state = this.#stateOf(id);
    if (state.running === 0) return this.#start(id, state, key, write, cancel);
    const last = state.queue.at(-1);
    if (last !== undefined && last.op.kind === "set" && write.kind === "set") {
      last.op.value = write.value;
      last.op.ttlMs = write.ttlMs;
      // Every earlier requester was given its version at the collapse after it: only the newest lacks one.
      const newest = last.tickets.at(-1);
      if (newest !== undefined) newest.replaced = versions.next();
      return ticketed(last);
    }
    const queued = this.#enqueue(state, write);
    return write.kind === "set" ? ticketed(state.queue.at(-1) as Queued) : queued;
  }

  /** The key's state; a key with nothing running has none, and gets a fresh one. */
  #stateOf(id: string): KeyState {
    let state = this.#keys.get(id);
    if (state === undefined) {
      state = { running: 0, writing: false, queue: [] };
      this.#keys.set(id, state);
    }
    return state;
  }

  #enqueue(state: KeyState, op: Write | Read): Promise<unknown> {
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    state.queue.push({ op, tickets: [], promise, resolve, reject });
    return promise;
  }

  #start(id: string, state: KeyState, key: Uint8Array, op: Write | Read, cancel?: Cancel): Promise<unknown> {
    state.running++;
    state.writing = op.kind !== "read";
    let done: Promise<unknown>;
    try {
      done =
        op.kind === "read"
          ? op.run()
          : op.kind === "set"
            ? this.#inner.set(key, op.value, cancel, op.ttlMs)
            : op.kind === "setIf"
              ? this.#inner.setIf(key, op.value, op.condition, cancel, op.ttlMs)
              : op.kind === "delete"
                ? this.#inner.delete(key, cancel)
                : op.run();
    } catch (err) {
      done = Promise.reject(err);
    }
    const finished = () => this.#finished(id, state, key);
    done.then(finished, finished);
    return done;
  }

  #finished(id: string, state: KeyState, key: Uint8Array): void {
    if (--state.running > 0) return;
    state.writing = false;
    const head = state.queue[0];
    if (head === undefined) {
      this.#keys.delete(id);
      return;
    }
    if (head.op.kind !== "read") {
      state.queue.shift();
      this.#start(id, state, key, head.op).then(head.resolve, head.reject);
      return;
    }
    // Every read at the head of the queue runs now, together.
    while (state.queue[0]?.op.kind === "read") {
      const next = state.queue.shift() as Queued;
      this.#start(id, state, key, next.op).then(next.resolve, next.reject);
    }
  }
}

/** A new requester of queued set `q`: its write's version, or its own if its value is replaced before it lands. */
function ticketed(q: Queued): Promise<unknown> {
  const ticket: SetTicket = {};
  q.tickets.push(ticket);
  return q.promise.then((version) => ticket.replaced ?? version);
}
