// Bun's WebSocket server (built on uWebSockets) as a side-by-side peer for
// `make bench-peers`: the same echo and broadcast behaviour as
// `wsloop --mode echo|broadcast`.
//
//   bun bun_server.js PORT echo|broadcast
const port = Number(process.argv[2] ?? 9201);
const mode = process.argv[3] ?? "echo";
const TOPIC = "all";

Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response("WebSocket only\n", { status: 400 });
  },
  websocket: {
    // wsbench offers no extensions; say so anyway, as wsloop negotiates none.
    perMessageDeflate: false,
    maxPayloadLength: 16 * 1024 * 1024,
    open(ws) {
      if (mode === "broadcast") ws.subscribe(TOPIC);
    },
    message(ws, message) {
      if (mode === "broadcast") {
        ws.publish(TOPIC, message); // everyone subscribed but the sender
      } else {
        ws.send(message);
      }
    },
  },
});
console.log(`bun ${Bun.version} ${mode} on ws://127.0.0.1:${port}`);
