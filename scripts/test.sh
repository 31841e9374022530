#!/usr/bin/env bash
# The full test suite: unit tests and integration tests against a real Synapse (started
# here from PyPI, on port 18008), a real Postgres (a fresh database) and a real NATS.
#
#   scripts/test.sh [cargo test args...]
#
# PG_ADMIN_URL names a Postgres role that may create databases
# (default postgres://postgres:postgres@127.0.0.1:5432/postgres). TEST_SLOT=N (0–9, default
# 0) moves the database name and the ports so that two checkouts can run their suites side
# by side.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_NATS=1 scripts/services.sh

# The browser tests (tests/it/browser.rs): Debian's Chromium (and an emoji font for the
# screenshots), and playwright-core from npm (Node.js 20 or later).
if [ ! -x /usr/bin/chromium ] || [ ! -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; then
  echo "test.sh: installing Debian's chromium for the browser tests" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
fi
command -v npm >/dev/null || { echo "test.sh: the browser tests need Node.js 20+ and npm" >&2; exit 1; }
if [ ! -d tests/browser/node_modules ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

slot="${TEST_SLOT:-0}"
case "$slot" in [0-9]) ;; *) echo "test.sh: TEST_SLOT must be 0 to 9" >&2; exit 2 ;; esac
pg_admin="${PG_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
db=city_bridge_test
[ "$slot" = 0 ] || db="city_bridge_test_$slot"
synapse_port=$((18008 + slot * 100))
bridge_port=$((17025 + slot * 100))
psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export CITY_BRIDGE_TEST_DATABASE_URL="${pg_admin%/*}/$db"

work=.local/test
[ "$slot" = 0 ] || work=".local/test-$slot"
rm -rf "$work" && mkdir -p "$work"
export CITY_BRIDGE_TEST_SERVER_NAME=localhost
export CITY_BRIDGE_TEST_SYNAPSE_URL="http://127.0.0.1:$synapse_port"
export CITY_BRIDGE_TEST_BRIDGE_ADDR="127.0.0.1:$bridge_port"
export CITY_BRIDGE_TEST_NATS_URL=nats://127.0.0.1:4222
export CITY_BRIDGE_TEST_REGISTRATION="$PWD/$work/registration.yaml"
export CITY_BRIDGE_TEST_PUPPET_REGISTRATION="$PWD/$work/puppet-registration.yaml"
# The tests stop and start Synapse themselves (to see what the bridge does without it).
export CITY_BRIDGE_TEST_SYNAPSE_DIR="$PWD/$work/synapse" CITY_BRIDGE_TEST_SYNAPSE_PORT="$synapse_port"

cargo build --quiet --bin city-bridge
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/debug/city-bridge" generate-registration --server-name "$CITY_BRIDGE_TEST_SERVER_NAME" \
  --url "http://$CITY_BRIDGE_TEST_BRIDGE_ADDR" > "$CITY_BRIDGE_TEST_REGISTRATION"
"$target_dir/debug/city-bridge" generate-puppet-registration --server-name "$CITY_BRIDGE_TEST_SERVER_NAME" \
  > "$CITY_BRIDGE_TEST_PUPPET_REGISTRATION"

trap 'synapse/synapse.sh stop "$work/synapse"' EXIT
SERVER_NAME=localhost SYNAPSE_PORT="$synapse_port" REGISTRATION="$CITY_BRIDGE_TEST_REGISTRATION" \
  PUPPET_REGISTRATION="$CITY_BRIDGE_TEST_PUPPET_REGISTRATION" \
  synapse/synapse.sh start "$work/synapse"

# A failing test's own message ends the output (the last lines are what a CI log shows);
# TEST_BACKTRACE=1 adds the stack traces.
export RUST_BACKTRACE="${TEST_BACKTRACE:-0}"
cargo test "$@"
