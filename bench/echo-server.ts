import { FrameDecoder } from "../src/wire/frame-decoder.js";
import { SocketWriter } from "../src/wire/socket-writer.js";
import { varintSize, writeVarint } from "../src/wire/varint.js";

/**
 * Reference server for the bench: reads size-delimited frames and writes each
 * back unchanged, with the same decoder and coalescing writer as the service.
 * What it reaches is the ceiling of Bun plus loopback for this framing.
 * Usage: bun bench/echo-server.ts  (prints "echo listening on PORT")
 */
interface State {
  decoder: FrameDecoder;
  writer: SocketWriter;
}

const server = Bun.listen<State | undefined>({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    open(socket) {
      socket.setNoDelay(true);
      socket.data = { decoder: new FrameDecoder(1 << 26), writer: new SocketWriter(socket) };
    },
    data(socket, chunk) {
      const state = socket.data;
      if (!state) return;
      state.decoder.push(chunk, (frame) => {
        const out = new Uint8Array(varintSize(frame.length) + frame.length);
        out.set(frame, writeVarint(out, 0, frame.length));
        state.writer.write(out);
      });
    },
    drain(socket) {
      socket.data?.writer.drain();
    },
  },
});
console.log(`echo listening on ${server.port}`);
process.on("SIGTERM", () => {
  server.stop(true);
  process.exit(0);
});
