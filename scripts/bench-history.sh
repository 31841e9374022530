#!/usr/bin/env bash
# History benchmark: the release bridge on 127.0.0.1:16125 with a fresh Postgres database;
# bench/history.rs loads 1,000,000 messages into 10 channels with COPY, then reads pages of
# 50 (the newest, and deep ones by cursor) through the bridge's REST API.
#
#   scripts/bench-history.sh            # BENCH_REQUESTS=2000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-env.sh history

env $BRIDGE_ENV RUST_LOG=error target/release/city-bridge serve &
bridge=$!
trap 'kill $bridge 2>/dev/null || true' EXIT
wait_for_bridge
cargo bench --quiet --bench history
