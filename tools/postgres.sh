#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for distributed tuning (tests, and trying the recipe
# on one machine): python run.py --tune --storage "$(tools/postgres.sh start | tail -n 1)".
#
#   tools/postgres.sh start   install the Debian package postgresql if its binaries are missing
#                             (as root), initdb a data folder under $PIPELINE_PG_STATE, start the
#                             server on 127.0.0.1:$PIPELINE_PG_PORT, create database
#                             $PIPELINE_PG_DB, and print its URL as the last line
#   tools/postgres.sh stop    stop the server and delete its data folder
#   tools/postgres.sh url     print the URL of the running server
#
# Trust authentication on 127.0.0.1 only: it is a scratch server for one machine. For real
# machines sharing a study, use a managed or properly configured server and its URL.
# The Debian package starts no service by itself; as root the server runs as the user postgres
# (initdb refuses root).
set -euo pipefail

STATE="${PIPELINE_PG_STATE:-${TMPDIR:-/tmp}/pipeline-postgres}"
PORT="${PIPELINE_PG_PORT:-54329}"
DB="${PIPELINE_PG_DB:-optuna}"
URL="postgresql+psycopg://postgres@127.0.0.1:${PORT}/${DB}"

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] && command -v pg_ctl >/dev/null 2>&1; then d=$(dirname "$(command -v pg_ctl)"); fi
  echo "$d"
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_postgres() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: PostgreSQL is not installed. As root: apt-get install postgresql (or set PATH to its bin folder)" >&2
    exit 2
  fi
  echo "installing the Debian package postgresql" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
}

running() {
  local bin="$1"
  [ -f "$STATE/data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$STATE/data" status >/dev/null 2>&1
}

start() {
  local bin
  bin=$(bindir)
  if [ -z "$bin" ]; then
    install_postgres
    bin=$(bindir)
  fi
  if running "$bin"; then
    echo "already running (data in $STATE/data)" >&2
    echo "$URL"
    return
  fi
  rm -rf "$STATE"
  mkdir -p "$STATE"
  if [ "$(id -u)" = 0 ]; then chown postgres "$STATE"; fi
  as_owner "$bin/initdb" -D "$STATE/data" -U postgres --auth=trust -E UTF8 >"$STATE/initdb.log" 2>&1 || {
    cat "$STATE/initdb.log" >&2; exit 1; }
  as_owner "$bin/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE" start >&2 || { cat "$STATE/server.log" >&2; exit 1; }
  as_owner "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
  echo "PostgreSQL on 127.0.0.1:$PORT, data in $STATE/data (tools/postgres.sh stop removes it)" >&2
  echo "$URL"
}

stop() {
  local bin
  bin=$(bindir)
  if [ -n "$bin" ] && running "$bin"; then
    as_owner "$bin/pg_ctl" -D "$STATE/data" -m fast -w stop >&2
  fi
  rm -rf "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  *) echo "usage: tools/postgres.sh start|stop|url" >&2; exit 2 ;;
esac
