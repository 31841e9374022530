#!/usr/bin/env bash
# Presence fan-out benchmark: the release bridge on 127.0.0.1:17125 (in-process bus,
# throttle off so every change is delivered) with one mapped room; bench/presence.rs
# connects BENCH_CLIENTS WebSocket clients and plays Synapse pushing typing changes.
#
#   scripts/bench-presence.sh         # BENCH_CLIENTS=10000 BENCH_UPDATES=50
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"  # one descriptor per client on each side

scripts/services.sh
pg_admin="${PG_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
db=city_bridge_bench
psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export BENCH_DATABASE_URL="${pg_admin%/*}/$db"

cargo build --release --quiet --bin city-bridge
cargo bench --no-run --quiet --bench presence
mkdir -p .local/bench
target/release/city-bridge generate-registration --server-name localhost \
  --url http://127.0.0.1:17125 > .local/bench/registration.yaml
export BENCH_HS_TOKEN="$(sed -n 's/^hs_token: "\(.*\)"$/\1/p' .local/bench/registration.yaml)"
export BENCH_JWT_SECRET=bench-jwt-secret

# Migrate, then map the room before the bridge loads its room map.
DATABASE_URL="$BENCH_DATABASE_URL" SYNAPSE_URL=http://127.0.0.1:9 MATRIX_SERVER_NAME=localhost \
APPSERVICE_REGISTRATION=.local/bench/registration.yaml LISTEN_ADDR=127.0.0.1:17125 \
MATRIX_GATEWAY_SECRET=bench JWT_SECRET="$BENCH_JWT_SECRET" RUST_LOG=error \
  timeout 5 target/release/city-bridge serve || true
psql -q "$BENCH_DATABASE_URL" -c "UPDATE city_rooms SET matrix_room_id = '!bench:localhost' WHERE slug = 'general'"

DATABASE_URL="$BENCH_DATABASE_URL" SYNAPSE_URL=http://127.0.0.1:9 MATRIX_SERVER_NAME=localhost \
APPSERVICE_REGISTRATION=.local/bench/registration.yaml LISTEN_ADDR=127.0.0.1:17125 \
MATRIX_GATEWAY_SECRET=bench JWT_SECRET="$BENCH_JWT_SECRET" ROOM_PRESENCE_THROTTLE_MS=0 RUST_LOG=error \
  target/release/city-bridge serve &
bridge=$!
trap 'kill $bridge 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:17125/healthz >/dev/null 2>&1 && break; sleep 0.1; done
BENCH_BRIDGE_PID=$bridge cargo bench --quiet --bench presence
