// The HTTP reference: Bun.serve answering a constant, so the gateway's cost is what kvs adds to Bun's HTTP.
const bare = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("hello") });
console.log(`bare http listening on ${bare.port}`);
process.on("SIGTERM", () => {
  bare.stop(true);
  process.exit(0);
});
