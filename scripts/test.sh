#!/usr/bin/env bash
# The full test suite: unit tests and integration tests against a real Synapse (started
# here from PyPI, on port 18008), a real Postgres (a fresh database) and a real NATS.
#
#   scripts/test.sh [cargo test args...]
#
# PG_ADMIN_URL names a Postgres role that may create databases
# (default postgres://postgres:postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_NATS=1 scripts/services.sh

pg_admin="${PG_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
db=city_bridge_test
psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export CITY_BRIDGE_TEST_DATABASE_URL="${pg_admin%/*}/$db"

work=.local/test
rm -rf "$work" && mkdir -p "$work"
export CITY_BRIDGE_TEST_SERVER_NAME=localhost
export CITY_BRIDGE_TEST_SYNAPSE_URL=http://127.0.0.1:18008
export CITY_BRIDGE_TEST_BRIDGE_ADDR=127.0.0.1:17025
export CITY_BRIDGE_TEST_NATS_URL=nats://127.0.0.1:4222
export CITY_BRIDGE_TEST_REGISTRATION="$PWD/$work/registration.yaml"
# The tests stop and start Synapse themselves (to see what the bridge does without it).
export CITY_BRIDGE_TEST_SYNAPSE_DIR="$PWD/$work/synapse" CITY_BRIDGE_TEST_SYNAPSE_PORT=18008

cargo build --quiet --bin city-bridge
target/debug/city-bridge generate-registration --server-name "$CITY_BRIDGE_TEST_SERVER_NAME" \
  --url "http://$CITY_BRIDGE_TEST_BRIDGE_ADDR" > "$CITY_BRIDGE_TEST_REGISTRATION"

trap 'synapse/synapse.sh stop "$work/synapse"' EXIT
SERVER_NAME=localhost SYNAPSE_PORT=18008 REGISTRATION="$CITY_BRIDGE_TEST_REGISTRATION" \
  synapse/synapse.sh start "$work/synapse"

cargo test "$@"
