#!/usr/bin/env bash
# Ingest benchmark: the release bridge on 127.0.0.1:17125 with a fresh Postgres database
# and one mapped room; bench/ingest.rs plays Synapse against it. No Synapse is needed:
# ingestion does not call the homeserver.
#
#   scripts/bench-ingest.sh            # BENCH_SECONDS=20 EVENTS_PER_TXN=100 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-env.sh ingest

env $BRIDGE_ENV RUST_LOG=error target/release/city-bridge serve &
bridge=$!
trap 'kill $bridge 2>/dev/null || true' EXIT
wait_for_bridge
# The bridge learns the mapping on the first transaction that names the room.
psql -q "$BENCH_DATABASE_URL" -c "UPDATE city_rooms SET matrix_room_id = '!bench:localhost' WHERE slug = 'general'"
BENCH_ROOM_ID='!bench:localhost' cargo bench --quiet --bench ingest
