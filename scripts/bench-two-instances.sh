#!/usr/bin/env bash
# Two instances: the receiver (BRIDGE_ROLE=all, 127.0.0.1:16125), to which the benches push
# as Synapse would, and an API-only instance (BRIDGE_ROLE=api, 127.0.0.1:16126) fed by NATS,
# to which every WebSocket client connects. Measures push → delivery on the API-only
# instance for a channel's messages (bench/channel.rs) and for presence (bench/presence.rs).
#
#   scripts/bench-two-instances.sh    # BENCH_CLIENTS=1000 BENCH_UPDATES=50
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"  # one descriptor per client on each side
WITH_NATS=1 scripts/services.sh
. scripts/bench-env.sh channel
cargo bench --no-run --quiet --bench presence
export BENCH_CLIENTS="${BENCH_CLIENTS:-1000}"

# Migrate once, then map the room before the instances load their room maps.
env $BRIDGE_ENV RUST_LOG=error timeout 5 target/release/city-bridge serve || true
psql -q "$BENCH_DATABASE_URL" -c "UPDATE city_rooms SET matrix_room_id = '!bench:localhost' WHERE slug = 'general'"

nats="NATS_URL=nats://127.0.0.1:4222 NATS_STREAM=BENCH_TWO NATS_STREAM_MAX_AGE_HOURS=1 ROOM_PRESENCE_THROTTLE_MS=0 RUST_LOG=error"
env $BRIDGE_ENV $nats target/release/city-bridge serve &
receiver=$!
env $BRIDGE_ENV $nats LISTEN_ADDR=127.0.0.1:16126 target/release/city-bridge serve --role api &
api=$!
trap 'kill $receiver $api 2>/dev/null || true' EXIT
wait_for_bridge
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:16126/healthz >/dev/null 2>&1 && break; sleep 0.1; done

export BENCH_WS_ADDR=127.0.0.1:16126 BENCH_BRIDGE_PID=$api
echo "== a channel's messages, pushed to the receiver, on the API-only instance"
cargo bench --quiet --bench channel
echo "== presence (typing), pushed to the receiver, on the API-only instance"
cargo bench --quiet --bench presence
