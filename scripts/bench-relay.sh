#!/usr/bin/env bash
# Outbox relay benchmark: the release bridge on 127.0.0.1:16125 with NATS (JetStream, the
# stream BENCH_EVENTS) and one mapped room; bench/relay.rs plays Synapse and measures how
# fast the relay gets messages into JetStream, and push → subscriber latency.
#
#   scripts/bench-relay.sh            # BENCH_EVENTS=50000 BENCH_SINGLES=300
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_NATS=1 scripts/services.sh
. scripts/bench-env.sh relay

# Migrate once, then map the room before the bridge loads its room map.
env $BRIDGE_ENV RUST_LOG=error timeout 5 target/release/city-bridge serve || true
psql -q "$BENCH_DATABASE_URL" -c "UPDATE city_rooms SET matrix_room_id = '!bench:localhost' WHERE slug = 'general'"

env $BRIDGE_ENV NATS_URL=nats://127.0.0.1:4222 NATS_STREAM=BENCH_EVENTS NATS_STREAM_MAX_AGE_HOURS=1 \
  RUST_LOG=error target/release/city-bridge serve &
bridge=$!
trap 'kill $bridge 2>/dev/null || true' EXIT
wait_for_bridge
cargo bench --quiet --bench relay
