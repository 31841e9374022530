#!/usr/bin/env bash
# Media benchmark: a throwaway Synapse on :18808 (max_upload_size raised) with both
# registrations, the release bridge on 127.0.0.1:16125 with MEDIA_MAX_BYTES raised;
# bench/media.rs uploads and downloads one large file through the bridge and straight to
# Synapse, sampling the bridge's resident memory while it streams.
#
#   scripts/bench-media.sh            # BENCH_MEDIA_MIB=200
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-env.sh media

target/release/city-bridge generate-puppet-registration --server-name localhost \
  > .local/bench/puppet-registration.yaml
trap 'synapse/synapse.sh stop .local/bench/synapse; kill $bridge 2>/dev/null || true' EXIT
bridge=
SERVER_NAME=localhost SYNAPSE_PORT=18808 REGISTRATION=.local/bench/registration.yaml \
  PUPPET_REGISTRATION=.local/bench/puppet-registration.yaml MAX_UPLOAD_SIZE=1G \
  synapse/synapse.sh start .local/bench/synapse

env $BRIDGE_ENV SYNAPSE_URL=http://127.0.0.1:18808 PUPPET_REGISTRATION=.local/bench/puppet-registration.yaml \
  MEDIA_MAX_BYTES=1073741824 RUST_LOG=error target/release/city-bridge serve &
bridge=$!
wait_for_bridge
BENCH_SYNAPSE_URL=http://127.0.0.1:18808 BENCH_BRIDGE_PID=$bridge cargo bench --quiet --bench media
