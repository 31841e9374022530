#!/usr/bin/env bash
# Side by side, in one run, on the same load: city-bridge against the peers that store
# nothing (bench/peers: a bare matrix-appservice 3.x server answering {}, a bare Node `ws`
# broadcaster), for ingest (bench/ingest.rs) and presence fan-out (bench/presence.rs).
# Installs the peers with npm (cache in .local/npm-cache) and prints the ratios.
#
#   scripts/bench-compare.sh          # BENCH_SECONDS=15 BENCH_CLIENTS=10000 BENCH_UPDATES=30
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"  # one descriptor per client on each side
command -v node >/dev/null || { echo "bench-compare: node and npm are required" >&2; exit 1; }
(cd bench/peers && npm ci --silent --no-audit --no-fund --cache "$PWD/../../.local/npm-cache")
. scripts/bench-env.sh ingest
cargo bench --no-run --quiet --bench presence
export BENCH_SECONDS="${BENCH_SECONDS:-15}" BENCH_CLIENTS="${BENCH_CLIENTS:-10000}" BENCH_UPDATES="${BENCH_UPDATES:-30}"
out=.local/bench/compare
mkdir -p "$out"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

# Migrate once, then map the room before the bridge loads its room map.
env $BRIDGE_ENV RUST_LOG=error timeout 5 target/release/city-bridge serve || true
psql -q "$BENCH_DATABASE_URL" -c "UPDATE city_rooms SET matrix_room_id = '!bench:localhost' WHERE slug = 'general'"

run_bridge() {  # extra environment…
  env $BRIDGE_ENV RUST_LOG=error "$@" target/release/city-bridge serve &
  bridge=$!; pids+=("$bridge")
  wait_for_bridge
}
run_peer() {  # script port
  PEER_PORT="$2" node "bench/peers/$1" &
  peer=$!; pids+=("$peer")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.1; done
  echo "bench-compare: the peer $1 did not start" >&2; exit 1
}
field() { sed -n "s/^  $1 *: *\([0-9.]*\).*/\1/p" "$2"; }

echo "== ingest: city-bridge (every event durably journaled before its 200, then indexed)"
run_bridge
BENCH_BRIDGE_PID=$bridge BENCH_ROOM_ID='!bench:localhost' cargo bench --quiet --bench ingest \
  | tee "$out/ingest-bridge.txt"
kill "$bridge"; wait "$bridge" 2>/dev/null || true
echo "== ingest: bare matrix-appservice (stores nothing)"
run_peer appservice.mjs 16135
(unset BENCH_DATABASE_URL; BENCH_BRIDGE_URL=http://127.0.0.1:16135 BENCH_BRIDGE_PID=$peer \
  cargo bench --quiet --bench ingest) \
  | tee "$out/ingest-peer.txt"
kill "$peer"; wait "$peer" 2>/dev/null || true

echo "== presence fan-out: city-bridge"
run_bridge ROOM_PRESENCE_THROTTLE_MS=0
BENCH_BRIDGE_PID=$bridge cargo bench --quiet --bench presence | tee "$out/fanout-bridge.txt"
kill "$bridge"; wait "$bridge" 2>/dev/null || true
echo "== presence fan-out: bare ws broadcaster"
run_peer broadcaster.mjs 16136
BENCH_BRIDGE_ADDR=127.0.0.1:16136 BENCH_BRIDGE_PID=$peer cargo bench --quiet --bench presence \
  | tee "$out/fanout-peer.txt"
kill "$peer"; wait "$peer" 2>/dev/null || true

bi=$(field 'events\/s (sustained)' "$out/ingest-bridge.txt"); pi=$(field 'events\/s (sustained)' "$out/ingest-peer.txt")
bc=$(sed -n 's/.*= *\([0-9.]*\) µs$/\1/p' "$out/ingest-bridge.txt"); pc=$(sed -n 's/^  CPU per event *: *\([0-9.]*\) µs server$/\1/p' "$out/ingest-peer.txt")
bp=$(field 'delivery latency p99' "$out/fanout-bridge.txt"); pp=$(field 'delivery latency p99' "$out/fanout-peer.txt")
echo "== side by side"
printf 'ingest events/s        city-bridge %8.0f   matrix-appservice %8.0f   ratio %.2f\n' "$bi" "$pi" "$(awk -v a="$bi" -v b="$pi" 'BEGIN { print a / b }')"
printf 'ingest CPU per event   city-bridge %6.1f µs (with Postgres)   matrix-appservice %6.1f µs\n' "$bc" "$pc"
printf 'fan-out p99 (%s clients)  city-bridge %6.1f ms   ws broadcaster %6.1f ms\n' "$BENCH_CLIENTS" "$bp" "$pp"
