// The fan-out peer: a bare `ws` server. Clients connect to /ws/city/presence and get a
// snapshot; each pushed transaction's m.typing becomes one room.presence update of the
// same shape and size as the bridge's, sent to every client. PEER_PORT, BENCH_HS_TOKEN.
import http from "node:http";
import { WebSocketServer } from "ws";

const token = process.env.BENCH_HS_TOKEN;
const server = http.createServer((req, res) => {
  if (req.method !== "PUT" || !req.url.startsWith("/_matrix/app/v1/transactions/")) {
    res.writeHead(404).end();
    return;
  }
  if (req.headers.authorization !== `Bearer ${token}`) {
    res.writeHead(403).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = JSON.parse(Buffer.concat(chunks).toString());
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
    for (const e of body.ephemeral ?? []) {
      if (e.type !== "m.typing") continue;
      const update = JSON.stringify({
        type: "room.presence",
        room_slug: "general",
        matrix_room_id: e.room_id,
        matrix_room_alias: "#city_general:localhost",
        online_count: 0,
        typing_count: e.content.user_ids.length,
        typing_users: e.content.user_ids,
        last_event_ts: Date.now(),
      });
      for (const client of wss.clients) client.send(update);
    }
  });
});
const wss = new WebSocketServer({ server, path: "/ws/city/presence" });
wss.on("connection", (socket) => {
  socket.send(JSON.stringify({ type: "snapshot", rooms: [] }));
});
server.listen(Number(process.env.PEER_PORT), "127.0.0.1", () => {
  console.error(`broadcaster peer listening on ${process.env.PEER_PORT}`);
});
