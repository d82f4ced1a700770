import { BufferPool } from "./buffer-pool.js";
import { Fifo } from "./fifo.js";

/** The part of a Bun socket the writer needs. */
export interface WritableSocket {
  /** Writes what the kernel accepts now; returns that byte count, or a negative number when closed. */
  write(data: Uint8Array): number;
}

/** Size of the reused staging buffer that small parts are copied into. */
export const STAGE_BYTES = 64 * 1024;

/** Parts at most this large are copied into the stage; larger ones are written as they are. */
const COPY_BYTES = 16 * 1024;

/**
 * Stages not in use, shared by every writer in the process: a writer holds a
 * stage only while it has staged output, so idle connections cost none, and
 * busy ones take and give back without allocating.
 */
const stages = new BufferPool(STAGE_BYTES, 256); // 16 MiB kept at most

/**
 * Ordered output for one socket.
 *
 * Bun's `socket.write` sends what the kernel takes and keeps nothing, so this
 * owns every byte not yet accepted: the unsent rest waits for `drain()`.
 *
 * Invariants:
 * - Bytes go out in the order they were written.
 * - Small parts are copied into a reused staging buffer, and everything is
 *   written at the end of the current microtask (or at once when the stage
 *   fills), so a burst of pipelined answers costs one syscall and no
 *   allocation per answer. The stage comes from a process-wide pool and goes
 *   back once its bytes are out, so an idle writer holds no buffer. Large parts are written from the caller's bytes,
 *   uncopied; callers must not mutate a part after writing it.
 * - Bytes the kernel did not take are moved out of the stage into an owned
 *   queue (copied once), so the stage is free for new output at once.
 */
export class SocketWriter {
  readonly #socket: WritableSocket;
  /** Unsent parts, older than anything in the stage. */
  readonly #queue = new Fifo<Uint8Array>();
  #stage: Uint8Array | null = null;
  #staged = 0;
  /** Bytes ever written to this writer, and ever taken by the kernel (or dropped at close); the difference is pending. */
  #queuedTotal = 0;
  #sentTotal = 0;
  /** Callers waiting for their part to be out: `end` is `#queuedTotal` just after the part. */
  readonly #sentWatch = new Fifo<{ end: number; onSent: () => void }>();
  #blocked = false;
  #scheduled = false;
  #closed = false;
  readonly #onIdle: (() => void) | undefined;
  readonly #onWritten: ((bytes: number) => void) | undefined;
  readonly #onGone: (() => void) | undefined;

  /**
   * @param onIdle called whenever the writer has written everything it held:
   *   at once from `drain()`, and in a microtask after a flush that emptied
   *   it; connections use it to resume reading and to finish closing.
   * @param onWritten told how many bytes each write put on the wire (for metrics).
   * @param onGone told once, after the writer has closed, when a write found
   *   the socket gone: Bun may tell a paused socket's owner of a peer's reset
   *   only this way, its `close` event coming late or never.
   */
  constructor(
    socket: WritableSocket,
    options: { onIdle?: () => void; onWritten?: (bytes: number) => void; onGone?: () => void } = {},
  ) {
    this.#socket = socket;
    this.#onIdle = options.onIdle;
    this.#onWritten = options.onWritten;
    this.#onGone = options.onGone;
  }

  /** Bytes queued and not yet accepted by the kernel. */
  get pendingBytes(): number {
    return this.#queuedTotal - this.#sentTotal;
  }

  /**
   * Queues `part` after everything queued before it. `onSent` is called once
   * the writer no longer reads `part`: at once when it was copied, else when
   * the kernel has taken all of it or the writer was closed. A caller that
   * reuses its buffers waits for it.
   */
  write(part: Uint8Array, onSent?: () => void): void {
    const n = part.length;
    if (this.#closed || n === 0) {
      onSent?.();
      return;
    }
    this.#queuedTotal += n;
    if (n <= COPY_BYTES) {
      const stage = this.#room(n);
      stage.set(part, this.#staged);
      this.#staged += n;
      onSent?.();
      this.#schedule(true);
    } else {
      this.#spillStage();
      this.#queue.push(part);
      if (onSent !== undefined) this.#sentWatch.push({ end: this.#queuedTotal, onSent });
      this.#schedule(true);
    }
  }

  /**
   * The reused buffer that {@link reserve} hands out space in. Read it only
   * right after `reserve`: it may be replaced by a later write.
   */
  get stage(): Uint8Array {
    return this.#stage ?? this.#room(0);
  }

  /**
   * Reserves `n` bytes at the end of the output, in {@link stage}, for the
   * caller to fill before anything else is written: an answer encoded there
   * costs no allocation and no further copy. Returns the offset, or -1 when
   * `n` is too large to stage (the caller then writes its own buffer).
   */
  reserve(n: number): number {
    if (n > COPY_BYTES || this.#closed) return -1;
    this.#room(n);
    const at = this.#staged;
    this.#staged += n;
    this.#queuedTotal += n;
    // Never flush here: the caller has not filled the bytes yet.
    this.#schedule(false);
    return at;
  }

  /** Writes as much as the kernel accepts now. */
  flush(): void {
    if (this.#blocked || this.#closed) return;
    const before = this.pendingBytes;
    this.#writeOut();
    // No drain event follows a write the kernel took whole, so say here that all is out.
    if (before > 0 && this.pendingBytes === 0 && this.#onIdle !== undefined) queueMicrotask(this.#onIdle);
  }

  /** Writes `bytes`; returns how many the kernel took, or -1 (and closes) when the socket is gone. */
  #send(bytes: Uint8Array): number {
    const written = this.#socket.write(bytes);
    if (written < 0) {
      this.close();
      this.#onGone?.();
      return -1;
    }
    this.#sentTotal += written;
    this.#onWritten?.(written);
    this.#tellSent();
    return written;
  }

  #writeOut(): void {
    for (let part = this.#queue.peek(); part !== undefined; part = this.#queue.peek()) {
      const written = this.#send(part);
      if (written < 0) return;
      if (written < part.length) {
        // Keep the unsent rest at the front; Bun will not retry it for us.
        this.#queue.setFront(part.subarray(written));
        this.#blocked = true;
        return;
      }
      this.#queue.shift();
    }
    const stage = this.#stage;
    if (stage === null) return;
    if (this.#staged === 0) {
      this.#releaseStage();
      return;
    }
    const staged = stage.subarray(0, this.#staged);
    const written = this.#send(staged);
    if (written < 0) return;
    if (written < staged.length) {
      this.#queue.push(staged.slice(written));
      this.#blocked = true;
    }
    this.#staged = 0;
    this.#releaseStage();
  }

  /** Call on the socket's `drain` event. */
  drain(): void {
    this.#blocked = false;
    if (!this.#closed) this.#writeOut();
    if (this.pendingBytes === 0) this.#onIdle?.();
  }

  /** Drops everything queued; later writes are ignored. */
  close(): void {
    this.#closed = true;
    this.#queue.drain();
    this.#staged = 0;
    this.#releaseStage();
    this.#sentTotal = this.#queuedTotal;
    this.#tellSent();
  }

  #tellSent(): void {
    for (let w = this.#sentWatch.peek(); w !== undefined && w.end <= this.#sentTotal; w = this.#sentWatch.peek()) {
      this.#sentWatch.shift();
      w.onSent();
    }
  }

  /** A stage with room for `n` more bytes: taken from the pool, or emptied into the queue first. */
  #room(n: number): Uint8Array {
    if (this.#stage !== null && this.#staged + n > this.#stage.length) this.#spillStage();
    this.#stage ??= stages.take();
    return this.#stage;
  }

  #releaseStage(): void {
    if (this.#stage === null || this.#staged > 0) return;
    stages.give(this.#stage);
    this.#stage = null;
  }

  #schedule(mayFlushNow: boolean): void {
    if (this.#blocked) return;
    const full = this.#stage !== null && this.#staged >= this.#stage.length;
    if (mayFlushNow && (full || this.#queue.length > 0)) {
      this.flush();
    } else if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(this.#scheduledFlush);
    }
  }

  readonly #scheduledFlush = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  /** Moves the staged bytes into the queue (one copy), freeing the stage. */
  #spillStage(): void {
    if (this.#stage === null || this.#staged === 0) return;
    this.#queue.push(this.#stage.slice(0, this.#staged));
    this.#staged = 0;
  }
}
