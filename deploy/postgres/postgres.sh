#!/usr/bin/env bash
# A local PostgreSQL server for the suite, from the PostgreSQL binaries on the machine (Debian's `postgresql`).
#   postgres.sh install  install Debian's postgresql package when no /usr/lib/postgresql/*/bin/initdb exists
#   postgres.sh init     create the cluster once (var/postgres/data), owned by the postgres user when run as root
#   postgres.sh start    init if needed, start, wait until it answers, create one database per service
#   postgres.sh stop     fast shutdown (open transactions are rolled back), then wait for the server to exit
#   postgres.sh status
#   postgres.sh url [SERVICE]   the connection URL of a service's database (or of the server)
#   postgres.sh env      `export IOP_<SERVICE>_DB=...` for every service: eval "$(deploy/postgres/postgres.sh env)"
# Listens on 127.0.0.1:IOP_PG_PORT (5432) only, trusting local connections of the `iop` role: a development
# server. IOP_PG_DIR moves the cluster (default var/postgres); IOP_PG_DURABLE=0 turns fsync off, for
# throwaway test servers only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
var=${IOP_VAR_DIR:-$root/var}
dir=${IOP_PG_DIR:-$var/postgres}
data=$dir/data
sockets=$dir/run
log=$dir/postgres.log
port=${IOP_PG_PORT:-5432}
role=iop
services=(intake careplan encounters aftercare)

bindir() {
  if [ -n "${IOP_PG_BIN:-}" ]; then echo "$IOP_PG_BIN"; return 0; fi
  local found; found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$found" ] && [ -x "$found/initdb" ] || return 1
  echo "$found"
}

# As root, the server runs as the postgres user (it refuses to run as root) and owns its directory.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
  else
    "$@"
  fi
}

install() {
  if bindir >/dev/null; then return 0; fi
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  # Debian would create and start a cluster of its own on 5432: only the binaries are wanted.
  $sudo mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  bindir >/dev/null || { echo "postgres: no initdb after installing postgresql" >&2; exit 1; }
}

init() {
  local bin; bin=$(bindir) || { echo "postgres: no PostgreSQL binaries (run: $0 install)" >&2; exit 1; }
  if [ -f "$data/PG_VERSION" ]; then return 0; fi
  mkdir -p "$dir" "$sockets"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$dir" "$sockets"
    chmod 0755 "$dir"
  fi
  as_owner "$bin/initdb" -D "$data" -U "$role" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  local durable=${IOP_PG_DURABLE:-1}
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "max_connections = ${IOP_PG_MAX_CONNECTIONS:-200}"
    echo "shared_buffers = 128MB"
    echo "log_min_messages = warning"
    echo "log_checkpoints = off"
    if [ "$durable" = 0 ]; then
      echo "fsync = off"; echo "synchronous_commit = off"; echo "full_page_writes = off"
    fi
  } | as_owner tee -a "$data/postgresql.conf" >/dev/null
}

running() { local bin; bin=$(bindir) && [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }
in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

psql_admin() { "$(bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$role" -d postgres "$@"; }

databases() {
  local s
  for s in "${services[@]}"; do
    if [ -z "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname='iop_$s'")" ]; then
      psql_admin -c "CREATE DATABASE iop_$s"
    fi
  done
}

start() {
  if running; then echo "postgres: already running on 127.0.0.1:$port"; databases; return 0; fi
  if in_use "$port"; then
    echo "postgres: NOT started: 127.0.0.1:$port is already in use by another process (set IOP_PG_PORT," \
         "or stop what listens there)" >&2
    exit 1
  fi
  init
  mkdir -p "$sockets"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$sockets"
  as_owner "$(bindir)/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "-p $port -k $sockets" start >/dev/null \
    || { tail -20 "$log" >&2; exit 1; }
  databases
  echo "postgres: running on 127.0.0.1:$port (data $data, log $log)"
}

stop() {
  if ! running; then echo "postgres: not running"; return 0; fi
  as_owner "$(bindir)/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
  echo "postgres: stopped"
}

status() {
  if running; then echo "postgres: running on 127.0.0.1:$port (data $data)"; else echo "postgres: not running"; return 1; fi
}

url() {
  if [ -n "${1:-}" ]; then echo "postgresql://$role@127.0.0.1:$port/iop_$1"; else echo "postgresql://$role@127.0.0.1:$port/postgres"; fi
}

env_lines() {
  local s
  for s in "${services[@]}"; do echo "export IOP_${s^^}_DB=$(url "$s")"; done
}

case "${1:-}" in
  install) install ;;
  init) init ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url "${2:-}" ;;
  env) env_lines ;;
  *) echo "usage: $0 install|init|start|stop|status|url [service]|env" >&2; exit 2 ;;
esac
