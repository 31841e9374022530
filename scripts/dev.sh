#!/usr/bin/env bash
# Runs the whole thing locally: Postgres, Synapse on http://127.0.0.1:8008 (server name
# localhost, open registration) and the bridge on http://127.0.0.1:7025, with the
# development registration.yaml. The bus is in-process unless NATS_URL is set. It prints
# a link to the city page signed in as a demo user.
# Ctrl-C stops the bridge and Synapse. State is kept in .local/dev between runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
pg_admin="${PG_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
if ! psql -tA "$pg_admin" -c "SELECT 1 FROM pg_database WHERE datname = 'city_bridge'" | grep -q 1; then
  psql -q "$pg_admin" -c "CREATE DATABASE city_bridge"
fi

trap 'synapse/synapse.sh stop .local/dev/synapse' EXIT
SERVER_NAME=localhost SYNAPSE_PORT=8008 REGISTRATION=registration.yaml PUPPET_REGISTRATION=puppet-registration.yaml \
  synapse/synapse.sh start .local/dev/synapse

export DATABASE_URL="${DATABASE_URL:-${pg_admin%/*}/city_bridge}"
export SYNAPSE_URL=http://127.0.0.1:8008
export MATRIX_SERVER_NAME=localhost
export APPSERVICE_REGISTRATION=registration.yaml
export PUPPET_REGISTRATION=puppet-registration.yaml
export LISTEN_ADDR=127.0.0.1:7025
export MATRIX_GATEWAY_SECRET="${MATRIX_GATEWAY_SECRET:-dev-gateway-secret}"
export JWT_SECRET="${JWT_SECRET:-dev-jwt-secret}"
cargo build --release --quiet --bin city-bridge
bridge="${CARGO_TARGET_DIR:-target}/release/city-bridge"
# A demo user's token for the city page (dev-token signs only with CITY_BRIDGE_DEV=1).
demo_token=$(CITY_BRIDGE_DEV=1 "$bridge" dev-token --sub user:demo)
echo "dev.sh: the city page, signed in as demo: http://$LISTEN_ADDR/?token=$demo_token"
"$bridge" serve
