#!/usr/bin/env bash
# Runs a local Synapse for development and tests.
#
#   synapse/synapse.sh install                 # pinned Synapse from PyPI into synapse/.venv
#   synapse/synapse.sh start DATA_DIR          # write config from the template, start, wait
#   synapse/synapse.sh stop DATA_DIR
#
# start reads SERVER_NAME (default localhost), SYNAPSE_PORT (default 8008), MAX_UPLOAD_SIZE
# (default 50M, Synapse's own) and
# REGISTRATION (the appservice registration file, required) and PUPPET_REGISTRATION (the
# registration through which the bridge sends as the homeserver's users; optional).
set -euo pipefail

SYNAPSE_VERSION=1.163.2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"

install() {
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('matrix-synapse') != '$SYNAPSE_VERSION')" 2>/dev/null; then
    return
  fi
  echo "synapse.sh: installing Synapse $SYNAPSE_VERSION into $venv" >&2
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "matrix-synapse==$SYNAPSE_VERSION"
}

start() {
  local data_dir="$1"
  : "${REGISTRATION:?REGISTRATION must name the appservice registration file}"
  export SERVER_NAME="${SERVER_NAME:-localhost}" SYNAPSE_PORT="${SYNAPSE_PORT:-8008}"
  # Synapse's own default; the media benchmark raises it.
  export MAX_UPLOAD_SIZE="${MAX_UPLOAD_SIZE:-50M}"
  export DATA_DIR REGISTRATION APP_SERVICE_FILES PUBLICATION_RULES
  # Anyone may publish rooms to the directory (the bridge lists public city rooms), unless
  # SYNAPSE_STOCK_DIRECTORY=1 asks for Synapse's default rules (the check's test).
  if [ "${SYNAPSE_STOCK_DIRECTORY:-0}" = 1 ]; then
    PUBLICATION_RULES="# room_list_publication_rules: Synapse's default"
  else
    PUBLICATION_RULES="room_list_publication_rules:
  - action: allow"
  fi
  DATA_DIR="$(mkdir -p "$data_dir" && cd "$data_dir" && pwd)"
  REGISTRATION="$(cd "$(dirname "$REGISTRATION")" && pwd)/$(basename "$REGISTRATION")"
  APP_SERVICE_FILES="  - \"$REGISTRATION\""
  if [ -n "${PUPPET_REGISTRATION:-}" ]; then
    PUPPET_REGISTRATION="$(cd "$(dirname "$PUPPET_REGISTRATION")" && pwd)/$(basename "$PUPPET_REGISTRATION")"
    APP_SERVICE_FILES="$APP_SERVICE_FILES
  - \"$PUPPET_REGISTRATION\""
  fi
  install
  if [ ! -f "$DATA_DIR/secrets.env" ]; then
    printf 'MACAROON_SECRET=%s\nFORM_SECRET=%s\n' "$(head -c 32 /dev/urandom | base64 | tr -dc A-Za-z0-9)" \
      "$(head -c 32 /dev/urandom | base64 | tr -dc A-Za-z0-9)" > "$DATA_DIR/secrets.env"
  fi
  set -a; . "$DATA_DIR/secrets.env"; set +a
  "$venv/bin/python" - "$here/homeserver.yaml.template" "$DATA_DIR/homeserver.yaml" <<'PY'
import os, string, sys
text = string.Template(open(sys.argv[1]).read()).substitute(os.environ)
open(sys.argv[2], "w").write(text)
PY
  cat > "$DATA_DIR/log.config" <<LOG
version: 1
formatters:
  precise: {format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'}
handlers:
  file: {class: logging.FileHandler, formatter: precise, filename: '$DATA_DIR/homeserver.log'}
root: {level: WARNING, handlers: [file]}
disable_existing_loggers: false
LOG
  stop "$DATA_DIR" 2>/dev/null || true
  "$venv/bin/python" -m synapse.app.homeserver -c "$DATA_DIR/homeserver.yaml" --generate-keys >/dev/null
  "$venv/bin/python" -m synapse.app.homeserver -c "$DATA_DIR/homeserver.yaml" --daemonize
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$SYNAPSE_PORT/_matrix/client/versions" >/dev/null 2>&1; then
      echo "synapse.sh: Synapse $SYNAPSE_VERSION up at http://127.0.0.1:$SYNAPSE_PORT (server name $SERVER_NAME)" >&2
      return
    fi
    sleep 0.5
  done
  echo "synapse.sh: Synapse did not come up; see $DATA_DIR/homeserver.log" >&2
  tail -20 "$DATA_DIR/homeserver.log" >&2 || true
  exit 1
}

stop() {
  local pid_file="$1/homeserver.pid"
  [ -f "$pid_file" ] || return 0
  local pid; pid="$(cat "$pid_file")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pid_file"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?data dir}" ;;
  stop) stop "${2:?data dir}" ;;
  *) echo "usage: $0 install | start DATA_DIR | stop DATA_DIR" >&2; exit 2 ;;
esac
