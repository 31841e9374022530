#!/usr/bin/env bash
# Channel list benchmark: the release bridge on 127.0.0.1:16125 with a fresh Postgres
# database; bench/unread.rs loads one channel of 100,000 messages and 20 of 1,000 with COPY,
# a reader who has joined them all, then lists the channels with the reader's unread and
# mention counts through the bridge's REST API.
#
#   scripts/bench-unread.sh            # BENCH_REQUESTS=1000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-env.sh unread

env $BRIDGE_ENV RUST_LOG=error target/release/city-bridge serve &
bridge=$!
trap 'kill $bridge 2>/dev/null || true' EXIT
wait_for_bridge
cargo bench --quiet --bench unread
