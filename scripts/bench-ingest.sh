#!/usr/bin/env bash
# Ingest benchmark: the release bridge on 127.0.0.1:16125 with a fresh Postgres database
# and one mapped room; bench/ingest.rs plays Synapse against it. No Synapse is needed:
# ingestion does not call the homeserver.
#
# CPU per event is counted until the index, search and the relay (the in-process bus here;
# scripts/bench-compare.sh relays to JetStream) have caught up (BENCH_WAIT_FOR).
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
# A Prometheus scrape every 5 s while the load runs: the counters must be seen moving.
scrape() {
  curl -fsS "$BENCH_BRIDGE_URL/metrics" \
    | grep -E '^city_bridge_(transactions_total|events_total\{.*outcome="applied"|ack_seconds_count)' \
    | sed "s/^/metrics @${1}: /" || true
}
( t=0; while sleep 5; do t=$((t + 5)); scrape "${t}s"; done ) &
scraper=$!
trap 'kill $bridge $scraper 2>/dev/null || true' EXIT
BENCH_BRIDGE_PID=$bridge BENCH_ROOM_ID='!bench:localhost' BENCH_WAIT_FOR="${BENCH_WAIT_FOR:-index,search,relay}" \
  cargo bench --quiet --bench ingest
kill $scraper 2>/dev/null || true
scrape end
