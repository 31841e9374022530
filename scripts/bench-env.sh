# Sourced by the bench scripts: services, a fresh database (BENCH_DB, default
# city_bridge_bench), the release build, and a registration for a bridge on
# 127.0.0.1:BENCH_PORT (default 16125). Exports BENCH_DATABASE_URL, BENCH_HS_TOKEN,
# BENCH_BRIDGE_URL, BENCH_BRIDGE_ADDR and BRIDGE_ENV (the bridge's environment, for
# `env $BRIDGE_ENV …`).
scripts/services.sh
pg_admin="${PG_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
db="${BENCH_DB:-city_bridge_bench}"
psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export BENCH_DATABASE_URL="${pg_admin%/*}/$db"
bench_port="${BENCH_PORT:-16125}"
export BENCH_BRIDGE_ADDR="127.0.0.1:$bench_port" BENCH_BRIDGE_URL="http://127.0.0.1:$bench_port"

# One build for both: built apart, the bench's dev-dependencies (tokio's "full") would
# give the binary a second feature set and a second release build of everything under it.
cargo build --release --quiet --bin city-bridge --bench "$1"
mkdir -p .local/bench
target/release/city-bridge generate-registration --server-name localhost \
  --url "$BENCH_BRIDGE_URL" > .local/bench/registration.yaml
export BENCH_HS_TOKEN="$(sed -n 's/^hs_token: "\(.*\)"$/\1/p' .local/bench/registration.yaml)"
export BENCH_JWT_SECRET=bench-jwt-secret
# No Synapse: the start-up ping fails (logged) and the benches play Synapse themselves.
BRIDGE_ENV="DATABASE_URL=$BENCH_DATABASE_URL SYNAPSE_URL=http://127.0.0.1:9 MATRIX_SERVER_NAME=localhost
  APPSERVICE_REGISTRATION=.local/bench/registration.yaml LISTEN_ADDR=$BENCH_BRIDGE_ADDR
  MATRIX_GATEWAY_SECRET=bench JWT_SECRET=$BENCH_JWT_SECRET"

wait_for_bridge() {
  for _ in $(seq 1 100); do curl -fsS "$BENCH_BRIDGE_URL/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "bench: the bridge did not start" >&2; exit 1
}
