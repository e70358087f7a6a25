// Node's `ws` server as a side-by-side peer for `make bench-peers`: the same
// echo and broadcast behaviour as `wsloop --mode echo|broadcast`.
//
//   node node_ws_server.js PORT echo|broadcast
"use strict";
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.argv[2] ?? 9202);
const mode = process.argv[3] ?? "echo";
const wss = new WebSocketServer({
  host: "127.0.0.1",
  port,
  perMessageDeflate: false,
  maxPayload: 16 * 1024 * 1024,
});

wss.on("connection", (socket) => {
  socket.on("message", (data, isBinary) => {
    if (mode === "broadcast") {
      for (const client of wss.clients) {
        if (client !== socket && client.readyState === WebSocket.OPEN) {
          client.send(data, { binary: isBinary });
        }
      }
    } else {
      socket.send(data, { binary: isBinary });
    }
  });
});
wss.on("listening", () => console.log(`node ${process.version} ws ${mode} on ws://127.0.0.1:${port}`));
