#!/usr/bin/env bash
# Where ingest's CPU goes: the release bridge with a private nats-server (JetStream) as in
# scripts/bench-compare.sh, bench/ingest.rs pushing (BENCH_WAIT_FOR=index,search,relay, no
# index-lag sampling), and `perf record` of the whole machine (DWARF call graphs: neither
# the release build nor Debian's Postgres keeps frame pointers) from the end of the
# warm-up until everything caught up, with pg_stat_activity of the database sampled every
# 10 ms (scripts/pg-activity-sample.py, in the FastAPI peer's .local/bench-venv: run
# scripts/bench-compare.sh once first). Then scripts/perf-summary.py: the bridge's share
# against Postgres's (the database's processes only), Postgres by component, the bridge by
# part and crate; and which statements Postgres was running.
#
#   scripts/bench-profile.sh     # BENCH_SECONDS=10 PERF_FREQ=199; output in .local/bench/profile/
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "bench-profile: perf is required (Debian: linux-perf)" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "bench-profile: nats-server is required" >&2; exit 1; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
BENCH_DB="${BENCH_DB:-city_bridge_profile}" BENCH_PORT="${BENCH_PORT:-$(free_port)}"
export BENCH_DB BENCH_PORT
. scripts/bench-env.sh ingest
export BENCH_SECONDS="${BENCH_SECONDS:-10}" BENCH_ROOM_ID='!bench:localhost'
out=.local/bench/profile
mkdir -p "$out"
pids=()
nats_dir="$(mktemp -d "$PWD/.local/bench/nats.XXXXXX")"
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$nats_dir"
}
trap cleanup EXIT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
nats_port="$(free_port)"
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$nats_dir" >"$out/nats-server.log" 2>&1 &
nats=$!; pids+=("$nats")
for _ in $(seq 1 100); do port_open "$nats_port" && break; sleep 0.1; done

env $BRIDGE_ENV RUST_LOG=error timeout 5 target/release/city-bridge serve || true
psql -q "$BENCH_DATABASE_URL" -c "UPDATE city_rooms SET matrix_room_id = '$BENCH_ROOM_ID' WHERE slug = 'general'"
env $BRIDGE_ENV RUST_LOG=error NATS_URL="nats://127.0.0.1:$nats_port" NATS_STREAM=BENCH_PROFILE \
  NATS_STREAM_MAX_AGE_HOURS=1 target/release/city-bridge serve &
bridge=$!; pids+=("$bridge")
wait_for_bridge

BENCH_BRIDGE_PID=$bridge BENCH_NATS_PID=$nats BENCH_NATS_URL="nats://127.0.0.1:$nats_port" \
  BENCH_NATS_STREAM=BENCH_PROFILE BENCH_WAIT_FOR=index,search,relay BENCH_INDEX_LAG=0 \
  cargo bench --quiet --bench ingest >"$out/ingest.txt" &
bench=$!
sleep 4  # the warm-up (3 s) and what it left to do
perf record -a --call-graph dwarf,16384 -F "${PERF_FREQ:-199}" -o "$out/perf.data" 2>"$out/perf-record.log" &
perf=$!
.local/bench-venv/bin/python scripts/pg-activity-sample.py "$BENCH_DATABASE_URL" --pids "$out/postgres-pids" \
  >"$out/activity.txt" &
activity=$!
wait "$bench"
kill -INT "$perf" "$activity"; wait "$perf" || true; wait "$activity" || true
cat "$out/ingest.txt"
# Whether the relay took the new messages as the indexer handed them, or read them back.
curl -fsS "$BENCH_BRIDGE_URL/metrics" | grep '^city_bridge_relay_messages_total' || true
perf script -i "$out/perf.data" --no-inline -F comm,pid,tid,ip,sym,dso 2>/dev/null \
  | python3 scripts/perf-summary.py --bridge-pid "$bridge" --postgres-pids "$out/postgres-pids" \
  | tee "$out/summary.txt"
cat "$out/activity.txt"
