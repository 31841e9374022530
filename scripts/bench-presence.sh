#!/usr/bin/env bash
# Presence fan-out benchmark: the release bridge on 127.0.0.1:16125 (in-process bus,
# throttle off so every change is delivered) with one mapped room; bench/presence.rs
# connects BENCH_CLIENTS WebSocket clients and plays Synapse pushing typing changes.
#
#   scripts/bench-presence.sh         # BENCH_CLIENTS=10000 BENCH_UPDATES=50
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"  # one descriptor per client on each side
. scripts/bench-env.sh presence

# Migrate once, then map the room before the bridge loads its room map.
env $BRIDGE_ENV RUST_LOG=error timeout 5 target/release/city-bridge serve || true
psql -q "$BENCH_DATABASE_URL" -c "UPDATE city_rooms SET matrix_room_id = '!bench:localhost' WHERE slug = 'general'"

env $BRIDGE_ENV ROOM_PRESENCE_THROTTLE_MS=0 RUST_LOG=error target/release/city-bridge serve &
bridge=$!
trap 'kill $bridge 2>/dev/null || true' EXIT
wait_for_bridge
BENCH_BRIDGE_PID=$bridge cargo bench --quiet --bench presence
