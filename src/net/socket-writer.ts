/** The part of a Bun socket the writer needs. */
export interface WritableSocket {
  /** Writes what the kernel accepts now; returns that byte count, or a negative number when closed. */
  write(data: Uint8Array): number;
}

/** Default size past which queued output is written at once instead of at the end of the microtask. */
export const FLUSH_BYTES = 32 * 1024;

/** Largest single write built by concatenating small parts. */
const COALESCE_BYTES = 64 * 1024;

/**
 * Ordered output for one socket.
 *
 * Bun's `socket.write` sends what the kernel takes and keeps nothing, so this
 * owns every byte not yet accepted: the unsent rest waits for `drain()`.
 * Small parts are coalesced: output is written at the end of the current
 * microtask, or at once past {@link FLUSH_BYTES}, so a burst of pipelined
 * responses costs one syscall rather than one each. Parts are never mutated,
 * so callers may pass shared constant frames and views of values.
 */
export class SocketWriter {
  readonly #socket: WritableSocket;
  readonly #flushBytes: number;
  #parts: Uint8Array[] = [];
  #head = 0;
  #pending = 0;
  #blocked = false;
  #scheduled = false;
  #closed = false;
  readonly #onIdle: (() => void) | undefined;

  /**
   * @param onIdle called whenever the writer has written everything it held,
   *   after `drain()`; connections use it to resume reading and to finish closing.
   */
  constructor(socket: WritableSocket, options: { flushBytes?: number; onIdle?: () => void } = {}) {
    this.#socket = socket;
    this.#flushBytes = options.flushBytes ?? FLUSH_BYTES;
    this.#onIdle = options.onIdle;
  }

  /** Bytes queued and not yet accepted by the kernel. */
  get pendingBytes(): number {
    return this.#pending;
  }

  /** Queues `part` after everything queued before it. */
  write(part: Uint8Array): void {
    if (this.#closed || part.length === 0) return;
    this.#parts.push(part);
    this.#pending += part.length;
    if (this.#blocked) return;
    if (this.#pending >= this.#flushBytes) this.flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(this.#scheduledFlush);
    }
  }

  readonly #scheduledFlush = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  /** Writes as much as the kernel accepts now. */
  flush(): void {
    while (!this.#blocked && !this.#closed && this.#head < this.#parts.length) {
      const chunk = this.#nextChunk();
      const written = this.#socket.write(chunk);
      if (written < 0) {
        this.close();
        return;
      }
      this.#pending -= written;
      if (written < chunk.length) {
        // Keep the unsent rest at the head; Bun will not retry it for us.
        this.#parts[this.#head] = chunk.subarray(written);
        this.#blocked = true;
        return;
      }
      this.#head++;
    }
    if (this.#head === this.#parts.length && this.#head > 0) {
      this.#parts = [];
      this.#head = 0;
    }
  }

  /** Call on the socket's `drain` event. */
  drain(): void {
    this.#blocked = false;
    this.flush();
    if (this.#pending === 0) this.#onIdle?.();
  }

  /** Drops everything queued; later writes are ignored. */
  close(): void {
    this.#closed = true;
    this.#parts = [];
    this.#head = 0;
    this.#pending = 0;
  }

  /**
   * Removes and returns the next write: the head part, or several small parts
   * joined so a burst of responses is one syscall.
   */
  #nextChunk(): Uint8Array {
    const parts = this.#parts;
    const first = parts[this.#head] as Uint8Array;
    let end = this.#head + 1;
    let size = first.length;
    while (end < parts.length) {
      const next = (parts[end] as Uint8Array).length;
      if (size + next > COALESCE_BYTES) break;
      size += next;
      end++;
    }
    if (end === this.#head + 1) return first;
    const joined = new Uint8Array(size);
    let offset = 0;
    for (let i = this.#head; i < end; i++) {
      const part = parts[i] as Uint8Array;
      joined.set(part, offset);
      offset += part.length;
    }
    // Leave the joined chunk at the last index it covers so flush() advances past all of them.
    this.#head = end - 1;
    parts[this.#head] = joined;
    return joined;
  }
}
