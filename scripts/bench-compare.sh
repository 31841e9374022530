#!/usr/bin/env bash
# Side by side, in one run, on the same load: city-bridge against peers that do the same
# durable job and peers that store nothing (bench/peers).
#
# Ingest (bench/ingest.rs: 100 m.room.message events a transaction, one in flight), each
# server in turn on the same fresh database:
#   - city-bridge, release build, relaying to JetStream (a private nats-server on a free
#     port with its own store), CPU (the bridge, and Postgres: every process working for
#     the benchmark's database plus the WAL writer, checkpointer and background writer;
#     nats-server's reported apart) counted from the start of the measured load until the
#     index, the search index and the relay (JetStream holding every event) have caught up;
#   - the durable Node peer (durable.mjs: node:http + pg, one `INSERT … SELECT FROM
#     unnest(…) ON CONFLICT (event_id) DO NOTHING` per transaction, {} after the commit);
#   - the same on FastAPI + asyncpg, one uvicorn worker (durable_fastapi.py);
#   - a bare matrix-appservice 3.x server that stores nothing (appservice.mjs);
#   for the peers, CPU (and Postgres's for the durable ones) is counted until their last
#   commit, which is their last answer.
# Fan-out (bench/presence.rs), cores pinned: the load generator and its clients on CPU 0,
# the server on CPU 1 (the bridge with one tokio worker), the bridge against a bare Node
# `ws` broadcaster (broadcaster.mjs).
#
# Installs the Node peers with npm (cache in .local/npm-cache) and the FastAPI peer with
# pip into .local/bench-venv; needs node, python3, nats-server and taskset. Prints one
# table at the end; each server's own output is in .local/bench/compare/. Its own
# database (BENCH_DB, default city_bridge_compare) and free ports.
#
#   scripts/bench-compare.sh    # BENCH_SECONDS=15 BENCH_CLIENTS=10000 BENCH_UPDATES=30
#   BENCH_ONLY=bridge-ingest scripts/bench-compare.sh   # the bridge's ingest alone (no table)
#   BENCH_ONLY=fanout scripts/bench-compare.sh          # the fan-out pair alone (no table)
#   BENCH_BRIDGE_BIN=path/to/city-bridge …               # another build of the bridge (A/B)
#   BENCH_BRIDGE_LOG=warn …                              # the bridge's warnings in its output
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"  # one descriptor per client on each side
for tool in node npm python3 nats-server taskset; do
  command -v "$tool" >/dev/null || { echo "bench-compare: $tool is required" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "bench-compare: the fan-out comparison pins two cores" >&2; exit 1; }
(cd bench/peers && npm ci --silent --no-audit --no-fund --cache "$PWD/../../.local/npm-cache" 2>/dev/null)
venv=.local/bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/peers/requirements.txt
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Its own database and ports: other worktrees' benchmarks may run on the defaults.
BENCH_DB="${BENCH_DB:-city_bridge_compare}" BENCH_PORT="${BENCH_PORT:-$(free_port)}"
export BENCH_DB BENCH_PORT
. scripts/bench-env.sh ingest
cargo build --release --quiet --bench presence
export BENCH_SECONDS="${BENCH_SECONDS:-15}" BENCH_CLIENTS="${BENCH_CLIENTS:-10000}" BENCH_UPDATES="${BENCH_UPDATES:-30}"
export BENCH_ROOM_ID='!bench:localhost'
out=.local/bench/compare
mkdir -p "$out"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
pids=()
nats_dir="$(mktemp -d "$PWD/.local/bench/nats.XXXXXX")"
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$nats_dir"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # port what
  for _ in $(seq 1 200); do port_open "$1" && return; sleep 0.1; done
  echo "bench-compare: $2 did not start on :$1" >&2; exit 1
}
stop() {  # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
# Between servers, outside every measurement: the previous one's vacuum and checkpoint
# done now, so that they are not counted as the next one's Postgres CPU.
settle() {
  psql -q "$BENCH_DATABASE_URL" -c "VACUUM (ANALYZE)" -c "CHECKPOINT"
  sleep 2
}
line() { grep -m1 "^  $1" "$2" || true; }
num() {  # label file: the first number after the label's colon
  line "$1" "$2" | sed -n 's/^[^:]*: *\([0-9.]*\).*/\1/p'
}
server_cpu() { line 'CPU per event  *:' "$1" | sed -n 's/^[^:]*: *\([0-9.]*\) µs server.*/\1/p'; }
postgres_cpu() { line 'CPU per event  *:' "$1" | sed -n 's/.* + \([0-9.]*\) µs Postgres.*/\1/p'; }

# A private nats-server with JetStream, its own store, on a free port.
nats_port="$(free_port)"
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$nats_dir" >"$out/nats-server.log" 2>&1 &
nats=$!; pids+=("$nats")
wait_port "$nats_port" nats-server
nats_url="nats://127.0.0.1:$nats_port"
NATS_ENV="NATS_URL=$nats_url NATS_STREAM=BENCH_COMPARE NATS_STREAM_MAX_AGE_HOURS=1"

# Migrate once, then map the room before the bridge loads its room map.
env $BRIDGE_ENV RUST_LOG=error timeout 5 target/release/city-bridge serve || true
psql -q "$BENCH_DATABASE_URL" -c "UPDATE city_rooms SET matrix_room_id = '$BENCH_ROOM_ID' WHERE slug = 'general'"

run_bridge() {  # [taskset -c N] with extra environment…
  local pin=()
  if [ "$1" = taskset ]; then pin=(taskset -c "$3"); shift 3; fi
  env $BRIDGE_ENV RUST_LOG="${BENCH_BRIDGE_LOG:-error}" "$@" "${pin[@]}" "${BENCH_BRIDGE_BIN:-target/release/city-bridge}" serve &
  bridge=$!; pids+=("$bridge")
  wait_for_bridge
}
run_peer() {  # port command…
  local port=$1; shift
  env PEER_PORT="$port" PEER_DATABASE_URL="$BENCH_DATABASE_URL" "$@" &
  peer=$!; pids+=("$peer")
  wait_port "$port" "$*"
}

echo "== load average before: $load_before ($(nproc) cores)"
if [ "${BENCH_ONLY:-}" != fanout ]; then
echo "== ingest: city-bridge (journal before the 200; index, search and the relay into JetStream counted until caught up)"
run_bridge $NATS_ENV
BENCH_BRIDGE_PID=$bridge BENCH_NATS_PID=$nats BENCH_NATS_URL=$nats_url BENCH_NATS_STREAM=BENCH_COMPARE \
  BENCH_WAIT_FOR=index,search,relay cargo bench --quiet --bench ingest | tee "$out/ingest-bridge.txt"
stop "$bridge"
if [ "${BENCH_ONLY:-}" = bridge-ingest ]; then exit 0; fi
settle

echo "== ingest: durable Node peer (node:http + pg, one unnest INSERT … ON CONFLICT per transaction)"
port=$(free_port)
run_peer "$port" node bench/peers/durable.mjs
BENCH_BRIDGE_URL=http://127.0.0.1:$port BENCH_BRIDGE_PID=$peer BENCH_STORED_IN=peer_node.events.event_id \
  cargo bench --quiet --bench ingest | tee "$out/ingest-node.txt"
stop "$peer"
settle

echo "== ingest: FastAPI + asyncpg peer (one uvicorn worker, the same statement)"
port=$(free_port)
run_peer "$port" "$venv/bin/uvicorn" --app-dir bench/peers durable_fastapi:app --workers 1 \
  --host 127.0.0.1 --port "$port" --log-level warning --no-access-log
BENCH_BRIDGE_URL=http://127.0.0.1:$port BENCH_BRIDGE_PID=$peer BENCH_STORED_IN=peer_fastapi.events.event_id \
  cargo bench --quiet --bench ingest | tee "$out/ingest-fastapi.txt"
stop "$peer"
settle

echo "== ingest: bare matrix-appservice (stores nothing)"
port=$(free_port)
run_peer "$port" node bench/peers/appservice.mjs
(unset BENCH_DATABASE_URL; BENCH_BRIDGE_URL=http://127.0.0.1:$port BENCH_BRIDGE_PID=$peer \
  cargo bench --quiet --bench ingest) | tee "$out/ingest-bare.txt"
stop "$peer"
fi
stop "$nats"

echo "== presence fan-out, cores pinned: city-bridge on CPU 1 (TOKIO_WORKER_THREADS=1), load generator on CPU 0"
run_bridge taskset -c 1 ROOM_PRESENCE_THROTTLE_MS=0 TOKIO_WORKER_THREADS=1
BENCH_BRIDGE_PID=$bridge taskset -c 0 cargo bench --quiet --bench presence | tee "$out/fanout-bridge.txt"
stop "$bridge"
echo "== presence fan-out, cores pinned: Node ws broadcaster on CPU 1, load generator on CPU 0"
port=$(free_port)
run_peer "$port" taskset -c 1 node bench/peers/broadcaster.mjs
BENCH_BRIDGE_ADDR=127.0.0.1:$port BENCH_BRIDGE_PID=$peer taskset -c 0 cargo bench --quiet --bench presence \
  | tee "$out/fanout-peer.txt"
stop "$peer"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${BENCH_ONLY:-}" = fanout ]; then exit 0; fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
row() {  # name file
  local acked completed total server pg
  acked=$(num 'events/s (acknowledged)' "$2"); completed=$(num 'events/s (completed)' "$2")
  total=$(num 'CPU per event (total)' "$2"); server=$(server_cpu "$2"); pg=$(postgres_cpu "$2")
  printf '| %s | %.0f | %.0f | **%.1f µs** (%.1f server + %.1f Postgres) |\n' \
    "$1" "$acked" "$completed" "$total" "$server" "${pg:-0}"
}
b=$out/ingest-bridge.txt n=$out/ingest-node.txt f=$out/ingest-fastapi.txt a=$out/ingest-bare.txt
best_peer=$(awk -v x="$(num 'events/s (completed)' "$n")" -v y="$(num 'events/s (completed)' "$f")" \
  'BEGIN { print (x > y ? x : y) }')
echo
echo "== side by side, one run: $BENCH_SECONDS s of ingest each, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "   load average before $load_before, after $load_after ($(nproc) cores)"
echo "| ingest: 100 m.room.message events a transaction, one in flight, not pinned | events/s acknowledged | events/s completed | CPU per event, to the end |"
echo "|---|---|---|---|"
row "city-bridge (journal, index, search, relay to JetStream)" "$b"
row "durable Node peer: node:http + pg, one unnest INSERT … ON CONFLICT per transaction" "$n"
row "FastAPI + asyncpg, one uvicorn worker, the same statement" "$f"
row "bare Node matrix-appservice (stores nothing)" "$a"
echo
echo "city-bridge: $(line 'caught up after the load' "$b" | sed 's/^ *//; s/  *:/:/'); $(line 'JetStream stream' "$b" | sed 's/^ *//; s/  *:/:/')"
echo "city-bridge: nats-server $(num 'nats-server CPU per event' "$b") µs per event besides (not in its figure); $(line 'CPU per event, to the ack' "$b" | sed 's/^ *//; s/  *:/:/')"
echo "city-bridge / best durable peer: events/s completed $(ratio "$(num 'events/s (completed)' "$b")" "$best_peer")×; CPU per event $(ratio "$(num 'CPU per event (total)' "$b")" "$(num 'CPU per event (total)' "$n")")× the Node peer's, $(ratio "$(num 'CPU per event (total)' "$b")" "$(num 'CPU per event (total)' "$f")")× the FastAPI peer's"
echo "reference, the bare peer: events/s acknowledged $(ratio "$(num 'events/s (acknowledged)' "$b")" "$(num 'events/s (acknowledged)' "$a")")×, CPU per event $(ratio "$(num 'CPU per event (total)' "$b")" "$(num 'CPU per event (total)' "$a")")×"
echo
echo "fan-out, $BENCH_CLIENTS clients, $BENCH_UPDATES updates; load generator and clients taskset -c 0, server taskset -c 1 (the bridge with TOKIO_WORKER_THREADS=1):"
bp=$(num 'delivery latency p99' "$out/fanout-bridge.txt"); pp=$(num 'delivery latency p99' "$out/fanout-peer.txt")
bd=$(num 'server CPU per delivery' "$out/fanout-bridge.txt"); pd=$(num 'server CPU per delivery' "$out/fanout-peer.txt")
printf '  city-bridge     p50 %s / p99 %s ms, server CPU per delivery %s µs\n' \
  "$(num 'delivery latency p50' "$out/fanout-bridge.txt")" "$bp" "$bd"
printf '  Node ws         p50 %s / p99 %s ms, server CPU per delivery %s µs\n' \
  "$(num 'delivery latency p50' "$out/fanout-peer.txt")" "$pp" "$pd"
printf '  bridge / peer   p99 %s×, CPU per delivery %s×\n' "$(ratio "$bp" "$pp")" "$(ratio "$bd" "$pd")"
