import { describe, expect, test } from "bun:test";
import { silentLogger } from "../../src/log.js";
import { Counters } from "../../src/metrics.js";
import { Connection, type ConnectionSocket, FRAMES_PER_TURN } from "../../src/net/connection.js";
import type { Answer, FrameHandler } from "../../src/net/frame-handler.js";
import { InFlightShare } from "../../src/net/in-flight-share.js";
import { SocketWriter, STAGE_BYTES } from "../../src/wire/socket-writer.js";
import { writeVarint } from "../../src/wire/varint.js";

/** A socket stand-in: records writes, pauses and resumes; accepts `accept` bytes per write (Infinity: all). */
class FakeSocket implements ConnectionSocket {
  readonly remoteAddress = "test";
  readonly writes: Uint8Array[] = [];
  accept = Number.POSITIVE_INFINITY;
  pauses = 0;
  resumes = 0;
  ended = false;
  /** Writes report the socket closed (-1), as Bun's do after a peer's reset it has not reported yet. */
  gone = false;
  write(data: Uint8Array): number {
    if (this.gone) return -1;
    const n = Math.min(this.accept, data.length);
    if (n > 0) this.writes.push(data.slice(0, n));
    return n;
  }
  pause(): void {
    this.pauses++;
  }
  resume(): void {
    this.resumes++;
  }
  end(): void {
    this.ended = true;
  }
  terminate(): void {
    this.ended = true;
  }
  /** Everything written, in order. */
  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.writes));
  }
}

/** A size-delimited frame holding `body`. */
function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  const p = writeVarint(out, 0, body.length);
  out.set(body, p);
  return out.subarray(0, p + body.length);
}

function frames(n: number, size = 1): Uint8Array {
  return new Uint8Array(Buffer.concat(Array.from({ length: n }, (_, i) => frame(new Uint8Array(size).fill(i & 0xff)))));
}

/** A handler whose answers the test completes by hand, tracking how many are outstanding at once. */
class HeldHandler implements FrameHandler {
  readonly pending: { frame: Uint8Array; answer: (a: Answer) => void }[] = [];
  calls = 0;
  maxOutstanding = 0;
  #outstanding = 0;
  handle(f: Uint8Array): Promise<Answer> {
    this.calls++;
    this.#outstanding++;
    this.maxOutstanding = Math.max(this.maxOutstanding, this.#outstanding);
    const { promise, resolve } = Promise.withResolvers<Answer>();
    this.pending.push({
      frame: f.slice(),
      answer: (a) => {
        this.#outstanding--;
        resolve(a);
      },
    });
    return promise;
  }
}

const options = { maxFrameBytes: 1 << 20, maxInFlight: 8, highWaterBytes: 4096 };
/** One microtask: the writer flushes at the end of the microtask it was written in. */
const tick = () => new Promise<void>((resolve) => queueMicrotask(resolve));
/**
 * Waits until every promise reaction and the writer's end-of-microtask flush
 * have run, however long their chains: the event loop reaches its check
 * phase only once the microtask queue is empty. No time passes.
 */
function settle(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

describe("Connection backpressure, per frame", () => {
  test("requests in flight never exceed maxInFlight, however many frames one read holds", async () => {
    const socket = new FakeSocket();
    const handler = new HeldHandler();
    const conn = new Connection(socket, handler, silentLogger, new Counters(), options);
    conn.onData(frames(100));
    expect(handler.calls).toBe(8);
    expect(conn.inFlight).toBe(8);
    expect(socket.pauses).toBe(1);
    // Answering down to half the limit lets more frames in from what was held, never past the limit.
    for (let round = 0; round < 30 && handler.calls < 100; round++) {
      for (const p of handler.pending.splice(0, 5)) p.answer(Uint8Array.of(1));
      await settle();
      expect(conn.inFlight).toBeLessThanOrEqual(8);
    }
    for (const p of handler.pending.splice(0)) p.answer(Uint8Array.of(1));
    await settle();
    expect(handler.calls).toBe(100);
    expect(handler.maxOutstanding).toBe(8);
    // The socket resumes only once everything held was parsed.
    expect(socket.resumes).toBe(1);
    expect(socket.bytes().length).toBe(100);
  });

  test("answers completed out of order are written in request order", async () => {
    const socket = new FakeSocket();
    const handler = new HeldHandler();
    const conn = new Connection(socket, handler, silentLogger, new Counters(), options);
    conn.onData(frames(4));
    const [a, b, c, d] = handler.pending;
    d?.answer(Uint8Array.of(4));
    b?.answer(Uint8Array.of(2));
    await settle();
    expect(socket.bytes()).toEqual(new Uint8Array(0));
    a?.answer(Uint8Array.of(1));
    await settle();
    expect(socket.bytes()).toEqual(Uint8Array.of(1, 2));
    c?.answer([Uint8Array.of(3), Uint8Array.of(33)]);
    await settle();
    expect(socket.bytes()).toEqual(Uint8Array.of(1, 2, 3, 33, 4));
    expect(conn.inFlight).toBe(0);
  });

  test("answers stay in order while the ring grows from its first slots to hundreds in flight", async () => {
    const socket = new FakeSocket();
    const handler = new HeldHandler();
    const conn = new Connection(socket, handler, silentLogger, new Counters(), { ...options, maxInFlight: 300 });
    conn.onData(frames(300));
    // Taken FRAMES_PER_TURN at a time, a turn of the event loop apart.
    while (conn.inFlight < 300) await settle();
    expect(conn.inFlight).toBe(300);
    // Complete them back to front: nothing may be written until the first is done.
    const pending = handler.pending.splice(0);
    for (let i = pending.length - 1; i >= 1; i--) pending[i]?.answer(Uint8Array.of(i & 0xff));
    await settle();
    expect(socket.writes).toEqual([]);
    pending[0]?.answer(Uint8Array.of(0));
    await settle();
    expect(socket.bytes()).toEqual(Uint8Array.from({ length: 300 }, (_, i) => i & 0xff));
  });

  test("unsent answers past the high-water mark stop reading; drain lets it go on", async () => {
    const socket = new FakeSocket();
    socket.accept = 0;
    const kib = new Uint8Array(1024).fill(5);
    const handler: FrameHandler = { handle: () => kib };
    const conn = new Connection(socket, handler, silentLogger, new Counters(), options);
    conn.onData(frames(20));
    await settle();
    // Four 1 KiB answers reach the 4 KiB mark: the fifth frame waits unparsed.
    expect(socket.pauses).toBe(1);
    expect(conn.busy).toBe(true);
    socket.accept = Number.POSITIVE_INFINITY;
    conn.onDrain();
    await settle();
    conn.onDrain();
    await settle();
    expect(socket.bytes().length).toBe(20 * 1024);
    expect(socket.resumes).toBe(1);
  });

  test("a synchronous answer that must wait behind a pending one is copied, not read later from scratch", async () => {
    const socket = new FakeSocket();
    const scratch = new Uint8Array(1);
    let n = 0;
    const first = Promise.withResolvers<Answer>();
    const handler: FrameHandler = {
      handle: () => {
        n++;
        if (n === 1) return first.promise;
        scratch[0] = n;
        return scratch;
      },
    };
    const conn = new Connection(socket, handler, silentLogger, new Counters(), options);
    conn.onData(frames(3));
    first.resolve(Uint8Array.of(1));
    await settle();
    expect(socket.bytes()).toEqual(Uint8Array.of(1, 2, 3));
    expect(conn.inFlight).toBe(0);
  });

  test("frames held unparsed when the socket closes are dropped, never handed to the handler", async () => {
    const socket = new FakeSocket();
    const handler = new HeldHandler();
    const conn = new Connection(socket, handler, silentLogger, new Counters(), options);
    conn.onData(frames(50));
    expect(handler.calls).toBe(8);
    conn.onClose();
    for (const p of handler.pending.splice(0)) p.answer(Uint8Array.of(1));
    await settle();
    expect(handler.calls).toBe(8);
    expect(socket.writes).toEqual([]);
  });

  test("a graceful shutdown answers every request already read, held ones included, then ends", async () => {
    const socket = new FakeSocket();
    const handler = new HeldHandler();
    const conn = new Connection(socket, handler, silentLogger, new Counters(), options);
    conn.onData(frames(20));
    void conn.shutdown();
    // The socket reads on (so that a peer's reset is seen), and what arrives now is dropped, never handled.
    expect(socket.resumes).toBe(1);
    conn.onData(frames(5));
    for (let round = 0; round < 20 && !socket.ended; round++) {
      for (const p of handler.pending.splice(0)) p.answer(Uint8Array.of(7));
      await settle();
    }
    expect(handler.calls).toBe(20);
    expect(socket.bytes().length).toBe(20);
    expect(socket.ended).toBe(true);
  });

  test("a handler that throws closes the connection after answering what it accepted", async () => {
    const socket = new FakeSocket();
    let n = 0;
    const handler: FrameHandler = {
      handle: () => {
        if (++n === 3) throw new Error("not an envelope");
        return Uint8Array.of(n);
      },
    };
    const conn = new Connection(socket, handler, silentLogger, new Counters(), options);
    conn.onData(frames(5));
    await settle();
    expect(n).toBe(3);
    expect(socket.bytes()).toEqual(Uint8Array.of(1, 2));
    expect(socket.ended).toBe(true);
    expect(conn.inFlight).toBe(0);
  });
});

describe("Turns: one read of many frames against the other sockets", () => {
  test("a read of thousands of frames answered at once is taken FRAMES_PER_TURN at a time, yielding to the event loop between", async () => {
    const socket = new FakeSocket();
    let calls = 0;
    const handler: FrameHandler = {
      handle: () => {
        calls++;
        return Uint8Array.of(1);
      },
    };
    const conn = new Connection(socket, handler, silentLogger, new Counters(), { ...options, maxInFlight: 8 });
    conn.onData(frames(3000));
    expect(calls).toBe(FRAMES_PER_TURN);
    expect(socket.pauses).toBe(1);
    let turns = 1;
    while (calls < 3000) {
      await settle();
      turns++;
      expect(calls).toBeLessThanOrEqual(turns * FRAMES_PER_TURN);
    }
    expect(turns).toBe(Math.ceil(3000 / FRAMES_PER_TURN));
    // Every answer written, in order, and reading resumed once the read was used up.
    await settle();
    expect(socket.bytes().length).toBe(3000);
    expect(socket.resumes).toBe(1);
    expect(conn.inFlight).toBe(0);
  });
});

describe("InFlightShare: many pipelining connections against one quiet one", () => {
  const connect = (share: InFlightShare) => {
    const socket = new FakeSocket();
    const handler = new HeldHandler();
    const conn = new Connection(socket, handler, silentLogger, new Counters(), { ...options, maxInFlight: 100, share });
    return { socket, handler, conn };
  };

  test("once the listener's total reaches its pool, a connection past its minimum share takes no more, and one under it still does", async () => {
    const share = new InFlightShare(20, 4);
    const greedy = connect(share);
    greedy.conn.onData(frames(50));
    // Alone it may take up to the pool, not its own limit of 100.
    expect(greedy.handler.calls).toBe(20);
    expect(greedy.socket.pauses).toBe(1);
    const other = connect(share);
    other.conn.onData(frames(10));
    // Under its minimum share it is read, however full the pool.
    expect(other.handler.calls).toBe(4);
    expect(share.total).toBe(24);
    // Answering the quiet one lets it in again, while the greedy one still holds its 20.
    for (const p of other.handler.pending.splice(0)) p.answer(Uint8Array.of(1));
    await settle();
    expect(other.handler.calls).toBe(8);
    expect(greedy.handler.calls).toBe(20);
    // The greedy one goes on once the total falls below half the pool.
    for (const p of greedy.handler.pending.splice(0, 15)) p.answer(Uint8Array.of(1));
    await settle();
    expect(greedy.handler.calls).toBeGreaterThan(20);
    expect(share.total).toBe(greedy.conn.inFlight + other.conn.inFlight);
  });

  test("a closed connection takes what it held out of the total, and answers after its close count nothing", async () => {
    const share = new InFlightShare(20, 4);
    const gone = connect(share);
    gone.conn.onData(frames(30));
    const other = connect(share);
    other.conn.onData(frames(10));
    expect(share.total).toBe(24);
    gone.conn.onClose();
    expect(share.total).toBe(4);
    for (const p of gone.handler.pending.splice(0)) p.answer(Uint8Array.of(1));
    await settle();
    expect(share.total).toBe(4);
    // With the pool free again, the other connection takes all it has.
    for (const p of other.handler.pending.splice(0)) p.answer(Uint8Array.of(1));
    await settle();
    expect(other.handler.calls).toBe(10);
    for (const p of other.handler.pending.splice(0)) p.answer(Uint8Array.of(1));
    await settle();
    expect(share.total).toBe(0);
  });
});

describe("A socket found gone by a write", () => {
  test("closes the connection: frames it held unparsed are never handled, and its share is given back", async () => {
    const socket = new FakeSocket();
    const handler = new HeldHandler();
    const share = new InFlightShare(1000, 4);
    const conn = new Connection(socket, handler, silentLogger, new Counters(), { ...options, share });
    let closed = false;
    void conn.closed.then(() => {
      closed = true;
    });
    conn.onData(frames(100));
    expect(handler.calls).toBe(8);
    expect(share.total).toBe(8);
    // The peer reset the socket while it was paused; Bun reports it only by failing the next write.
    socket.gone = true;
    for (const p of handler.pending.splice(0, 5)) p.answer(Uint8Array.of(1));
    await settle();
    expect(closed).toBe(true);
    expect(conn.aborted).toBe(true);
    expect(socket.ended).toBe(true);
    expect(share.total).toBe(0);
    // Answering made room before the failed write was flushed: at most one more round was taken.
    const atClose = handler.calls;
    expect(atClose).toBeLessThanOrEqual(16);
    // Its other answers come and go nowhere, and nothing more of the 100 is handed to the handler.
    for (const p of handler.pending.splice(0)) p.answer(Uint8Array.of(1));
    await settle();
    expect(handler.calls).toBe(atClose);
  });

  test("found gone by a write made while a read is parsed, stops handling that read's frames at once", () => {
    const socket = new FakeSocket();
    socket.gone = true;
    let calls = 0;
    // An answer this large is written at once, inside the call that made it, not at the end of the microtask.
    const large = new Uint8Array(64 * 1024);
    const handler: FrameHandler = {
      handle: () => {
        calls++;
        return large;
      },
    };
    const wide = { ...options, maxInFlight: 1000, highWaterBytes: 1 << 30 };
    const conn = new Connection(socket, handler, silentLogger, new Counters(), wide);
    conn.onData(frames(100));
    expect(calls).toBe(1);
    expect(conn.aborted).toBe(true);
    expect(socket.ended).toBe(true);
    // The rest of the read, held again when the closed connection stopped the decoder, is dropped too.
    expect(conn.busy).toBe(false);
  });
});

describe("SocketWriter", () => {
  test("small writes in one tick go out in one socket write, in order", async () => {
    const socket = new FakeSocket();
    const w = new SocketWriter(socket);
    for (let i = 0; i < 100; i++) w.write(Uint8Array.of(i));
    expect(socket.writes).toEqual([]);
    await tick();
    expect(socket.writes.length).toBe(1);
    expect(socket.bytes()).toEqual(Uint8Array.from({ length: 100 }, (_, i) => i));
  });

  test("a large part is written from the caller's bytes, uncopied, after what came before it", async () => {
    const seen: Uint8Array[] = [];
    const w = new SocketWriter({
      write: (d) => {
        seen.push(d);
        return d.length;
      },
    });
    const large = new Uint8Array(STAGE_BYTES).fill(9);
    w.write(Uint8Array.of(1));
    w.write(large);
    await tick();
    expect(seen.length).toBe(2);
    expect(seen[0]).toEqual(Uint8Array.of(1));
    expect(seen[1]).toBe(large);
  });

  test("a partial write keeps the unsent rest, and drain sends it before anything newer", async () => {
    const socket = new FakeSocket();
    let idle = 0;
    const w = new SocketWriter(socket, { onIdle: () => idle++ });
    socket.accept = 3;
    w.write(Uint8Array.of(1, 2, 3, 4, 5));
    await tick();
    expect(socket.bytes()).toEqual(Uint8Array.of(1, 2, 3));
    expect(w.pendingBytes).toBe(2);
    socket.accept = 0;
    w.write(Uint8Array.of(6));
    const large = new Uint8Array(20_000).fill(7);
    w.write(large);
    w.write(Uint8Array.of(8));
    await tick();
    expect(w.pendingBytes).toBe(2 + 1 + 20_000 + 1);
    socket.accept = Number.POSITIVE_INFINITY;
    w.drain();
    expect(w.pendingBytes).toBe(0);
    expect(idle).toBe(1);
    expect(socket.bytes()).toEqual(
      new Uint8Array(Buffer.concat([Uint8Array.of(1, 2, 3, 4, 5, 6), large, Uint8Array.of(8)])),
    );
  });

  test("a large part the kernel takes in pieces arrives whole, one drain at a time", async () => {
    const socket = new FakeSocket();
    const w = new SocketWriter(socket);
    const large = Uint8Array.from({ length: 50_000 }, (_, i) => i % 251);
    socket.accept = 7_000;
    w.write(large);
    w.write(Uint8Array.of(1));
    await tick();
    for (let i = 0; i < 20 && w.pendingBytes > 0; i++) w.drain();
    expect(w.pendingBytes).toBe(0);
    expect(socket.bytes()).toEqual(new Uint8Array(Buffer.concat([large, Uint8Array.of(1)])));
  });

  test("reserved bytes are never sent before the caller fills them, even when they fill the stage", async () => {
    const socket = new FakeSocket();
    const w = new SocketWriter(socket);
    // Small parts (copied into the stage) up to 10 bytes short of full.
    for (let left = STAGE_BYTES - 10; left > 0; left -= Math.min(left, 16_384)) {
      w.write(new Uint8Array(Math.min(left, 16_384)).fill(1));
    }
    const at = w.reserve(10);
    expect(socket.writes).toEqual([]);
    w.stage.fill(2, at, at + 10);
    const next = w.reserve(5);
    w.stage.fill(3, next, next + 5);
    await tick();
    const expected = new Uint8Array(STAGE_BYTES + 5).fill(1);
    expected.fill(2, STAGE_BYTES - 10, STAGE_BYTES);
    expected.fill(3, STAGE_BYTES);
    expect(socket.bytes()).toEqual(expected);
  });

  test("onSent says when a part is no longer read: at once when copied, after the kernel took its last byte when not", async () => {
    const socket = new FakeSocket();
    const w = new SocketWriter(socket);
    const told: string[] = [];
    w.write(Uint8Array.of(1, 2), () => told.push("small"));
    expect(told).toEqual(["small"]);
    socket.accept = 10_000;
    const large = new Uint8Array(25_000).fill(9);
    w.write(large, () => told.push("large"));
    w.write(new Uint8Array(20_000).fill(8), () => told.push("second"));
    await tick();
    expect(told).toEqual(["small"]);
    w.drain(); // 20,002 of 45,002 taken: the first large part is not out yet
    expect(told).toEqual(["small"]);
    w.drain(); // 30,002: the first large part is out
    expect(told).toEqual(["small", "large"]);
    socket.accept = Number.POSITIVE_INFINITY;
    w.drain();
    expect(told).toEqual(["small", "large", "second"]);
  });

  test("closing tells onSent for parts it dropped, since nothing reads them any more", async () => {
    const socket = new FakeSocket();
    const w = new SocketWriter(socket);
    socket.accept = 0;
    let told = 0;
    w.write(new Uint8Array(30_000), () => told++);
    await tick();
    expect(told).toBe(0);
    w.close();
    expect(told).toBe(1);
    w.write(new Uint8Array(30_000), () => told++);
    expect(told).toBe(2);
  });

  test("after close, queued bytes are dropped and writes are ignored", async () => {
    const socket = new FakeSocket();
    const w = new SocketWriter(socket);
    w.write(Uint8Array.of(1));
    w.close();
    w.write(Uint8Array.of(2));
    await tick();
    expect(socket.writes).toEqual([]);
    expect(w.pendingBytes).toBe(0);
  });
});
