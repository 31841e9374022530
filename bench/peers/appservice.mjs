// The ingest peer: a bare matrix-appservice 3.x server whose handler stores nothing and
// answers {} (the library's own transaction handling). Token and port from the
// environment: BENCH_HS_TOKEN, PEER_PORT.
import pkg from "matrix-appservice";

const { AppService } = pkg;
const service = new AppService({ homeserverToken: process.env.BENCH_HS_TOKEN });
let events = 0;
service.on("event", () => {
  events += 1;
});
process.on("SIGTERM", () => {
  console.error(`appservice peer: ${events} events received`);
  process.exit(0);
});
await service.listen(Number(process.env.PEER_PORT), "127.0.0.1");
console.error(`appservice peer listening on ${process.env.PEER_PORT}`);
