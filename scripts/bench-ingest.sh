#!/usr/bin/env bash
# Ingest benchmark: the release bridge on 127.0.0.1:17125 with a fresh Postgres database
# and one mapped room; bench/ingest.rs plays Synapse against it. No Synapse is needed:
# the bridge's start-up ping fails (logged) and ingestion does not call the homeserver.
#
#   scripts/bench-ingest.sh            # BENCH_SECONDS=20 EVENTS_PER_TXN=100 by default
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
pg_admin="${PG_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
db=city_bridge_bench
psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export BENCH_DATABASE_URL="${pg_admin%/*}/$db"

cargo build --release --quiet --bin city-bridge
cargo bench --no-run --quiet --bench ingest
mkdir -p .local/bench
target/release/city-bridge generate-registration --server-name localhost \
  --url http://127.0.0.1:17125 > .local/bench/registration.yaml
export BENCH_HS_TOKEN="$(sed -n 's/^hs_token: "\(.*\)"$/\1/p' .local/bench/registration.yaml)"

DATABASE_URL="$BENCH_DATABASE_URL" SYNAPSE_URL=http://127.0.0.1:9 MATRIX_SERVER_NAME=localhost \
APPSERVICE_REGISTRATION=.local/bench/registration.yaml LISTEN_ADDR=127.0.0.1:17125 \
MATRIX_GATEWAY_SECRET=bench RUST_LOG=warn target/release/city-bridge serve &
bridge=$!
trap 'kill $bridge 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:17125/healthz >/dev/null 2>&1 && break; sleep 0.1; done
psql -q "$BENCH_DATABASE_URL" -c "UPDATE city_rooms SET matrix_room_id = '!bench:localhost' WHERE slug = 'general'"
# The bridge learns the mapping on the first transaction that names the room.
BENCH_ROOM_ID='!bench:localhost' cargo bench --quiet --bench ingest
