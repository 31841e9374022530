// The durable ingest peer: the obvious design of an appservice that keeps what Synapse
// pushes. Plain node:http and pg; each `PUT /_matrix/app/v1/transactions/{txnId}` (the
// hs_token as a bearer) stores its m.room.message events with ONE statement,
// `INSERT … SELECT FROM unnest(…) ON CONFLICT (event_id) DO NOTHING`, and answers {} once
// it has committed (autocommit: the statement is the transaction). A repeated transaction
// stores nothing twice. Its own schema, created on start: PEER_SCHEMA (default
// peer_node), in PEER_DATABASE_URL. PEER_PORT, BENCH_HS_TOKEN.
import http from "node:http";
import pg from "pg";

const token = process.env.BENCH_HS_TOKEN;
const schema = process.env.PEER_SCHEMA ?? "peer_node";
if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`bad PEER_SCHEMA ${schema}`);
const pool = new pg.Pool({ connectionString: process.env.PEER_DATABASE_URL, max: 4 });

// The same shape as the FastAPI peer's: an event-id key, stream order by an identity
// column, a (room_id, seq) index for history pages.
await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
await pool.query(`CREATE TABLE IF NOT EXISTS ${schema}.events (
  event_id TEXT PRIMARY KEY,
  seq      BIGINT GENERATED ALWAYS AS IDENTITY,
  room_id  TEXT NOT NULL,
  sender   TEXT NOT NULL,
  ts       TIMESTAMPTZ NOT NULL,
  body     TEXT NOT NULL
)`);
await pool.query(`CREATE INDEX IF NOT EXISTS events_room_seq ON ${schema}.events (room_id, seq)`);
const insert = `INSERT INTO ${schema}.events (event_id, room_id, sender, ts, body)
  SELECT e, r, s, to_timestamp(t / 1000.0), b
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) AS u(e, r, s, t, b)
  ON CONFLICT (event_id) DO NOTHING`;

const json = (res, status, body) =>
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
let events = 0;

const server = http.createServer((req, res) => {
  if (req.method !== "PUT" || !req.url.startsWith("/_matrix/app/v1/transactions/")) {
    json(res, 404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" });
    return;
  }
  if (req.headers.authorization !== `Bearer ${token}`) {
    json(res, 403, { errcode: "M_FORBIDDEN", error: "Bad token" });
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString());
    } catch {
      json(res, 400, { errcode: "M_NOT_JSON", error: "Not JSON" });
      return;
    }
    const ids = [], rooms = [], senders = [], stamps = [], bodies = [];
    for (const e of body.events ?? []) {
      if (e.type !== "m.room.message" || typeof e.content?.body !== "string") continue;
      ids.push(e.event_id);
      rooms.push(e.room_id);
      senders.push(e.sender);
      stamps.push(e.origin_server_ts);
      bodies.push(e.content.body);
    }
    try {
      if (ids.length > 0) await pool.query(insert, [ids, rooms, senders, stamps, bodies]);
      events += ids.length;
      json(res, 200, {});
    } catch (error) {
      // Synapse retries the transaction: nothing is acknowledged that is not committed.
      console.error(`durable peer: ${error.message}`);
      json(res, 500, { errcode: "M_UNKNOWN", error: "Not stored" });
    }
  });
});
process.on("SIGTERM", () => {
  console.error(`durable peer: ${events} events stored`);
  process.exit(0);
});
server.listen(Number(process.env.PEER_PORT), "127.0.0.1", () => {
  console.error(`durable peer listening on ${process.env.PEER_PORT}`);
});
