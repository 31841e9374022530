#!/usr/bin/env bash
# Makes sure what the bridge needs on this machine is installed and running: Postgres
# (and NATS when WITH_NATS=1) from Debian's packages when they are not already reachable,
# plus curl and psql. Safe to run again. Needs root (or sudo) only when something is missing.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v curl >/dev/null || apt_install curl ca-certificates

if ! port_open 5432; then
  echo "services.sh: Postgres is not running on 127.0.0.1:5432; starting it" >&2
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do port_open 5432 && break; sleep 0.5; done
  port_open 5432 || { echo "services.sh: Postgres did not start" >&2; exit 1; }
  # The default Debian cluster wants a password over TCP: give postgres the one the
  # scripts use (with trust auth it is simply ignored).
  as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
fi
command -v psql >/dev/null || apt_install postgresql-client

if [ "${WITH_NATS:-0}" = 1 ] && ! port_open 4222; then
  echo "services.sh: NATS is not running on 127.0.0.1:4222; starting it" >&2
  command -v nats-server >/dev/null || apt_install nats-server
  mkdir -p /var/lib/nats-server
  as_root start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  for _ in $(seq 1 60); do port_open 4222 && break; sleep 0.5; done
  port_open 4222 || { echo "services.sh: NATS did not start" >&2; exit 1; }
fi
