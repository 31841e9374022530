#!/usr/bin/env bash
# Runs the whole thing locally: Postgres, Synapse on http://127.0.0.1:8008 (server name
# localhost, open registration) and the bridge on http://127.0.0.1:7025, with the
# development registration.yaml. The bus is in-process unless NATS_URL is set.
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
cargo run --release --quiet -- serve
