#!/bin/sh
# Creates the two databases of compose.yaml, each with its own role, the first time the
# Postgres volume is empty (the postgres image runs /docker-entrypoint-initdb.d/* then).
# Synapse requires the C collation and ctype for its database.
set -eu
: "${SYNAPSE_DB_PASSWORD:?SYNAPSE_DB_PASSWORD must be set}"
: "${CITY_BRIDGE_DB_PASSWORD:?CITY_BRIDGE_DB_PASSWORD must be set}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v synapse_password="$SYNAPSE_DB_PASSWORD" -v bridge_password="$CITY_BRIDGE_DB_PASSWORD" <<'SQL'
CREATE ROLE synapse LOGIN PASSWORD :'synapse_password';
CREATE DATABASE synapse OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE ROLE city_bridge LOGIN PASSWORD :'bridge_password';
CREATE DATABASE city_bridge OWNER city_bridge;
SQL
