#!/usr/bin/env bash
# Send benchmark: a throwaway Synapse on :18808 with both registrations, the release bridge
# on 127.0.0.1:16125 pointed at it; bench/send.rs alternates sends straight to Synapse and
# through the bridge's messaging API, as the same user.
#
#   scripts/bench-send.sh             # BENCH_MESSAGES=500
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-env.sh send

target/release/city-bridge generate-puppet-registration --server-name localhost \
  > .local/bench/puppet-registration.yaml
trap 'synapse/synapse.sh stop .local/bench/synapse; kill $bridge 2>/dev/null || true' EXIT
bridge=
SERVER_NAME=localhost SYNAPSE_PORT=18808 REGISTRATION=.local/bench/registration.yaml \
  PUPPET_REGISTRATION=.local/bench/puppet-registration.yaml synapse/synapse.sh start .local/bench/synapse

env $BRIDGE_ENV SYNAPSE_URL=http://127.0.0.1:18808 PUPPET_REGISTRATION=.local/bench/puppet-registration.yaml \
  MESSAGE_RATE_PER_MINUTE=100000 USER_CHANNEL_RATE_PER_MINUTE=100000 CHANNEL_RATE_PER_MINUTE=100000 \
  RUST_LOG=error target/release/city-bridge serve &
bridge=$!
wait_for_bridge
BENCH_SYNAPSE_URL=http://127.0.0.1:18808 cargo bench --quiet --bench send
