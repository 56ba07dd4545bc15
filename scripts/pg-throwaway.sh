#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and the demo.
#
#   scripts/pg-throwaway.sh start DIR   # initdb + start in DIR; prints a DSN
#   scripts/pg-throwaway.sh stop DIR    # stop it (DIR is left for the caller)
#
# Uses the machine's initdb/pg_ctl. PostgreSQL refuses to run as root, so
# as root the server runs as the `postgres` user. Listens on 127.0.0.1 at a
# free port, trust auth, database `postgres`.
set -euo pipefail

cmd=${1:?start|stop}
dir=${2:?data directory}

bin() {
  local d
  for d in /usr/lib/postgresql/*/bin /usr/local/bin /usr/bin; do
    if [ -x "$d/$1" ]; then echo "$d/$1"; return; fi
  done
  command -v "$1" || { echo "pg-throwaway: $1 not found; install PostgreSQL" >&2; exit 1; }
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg "$(bin initdb)" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1
    for _ in 1 2 3 4 5 6 7 8; do
      port=$(( (RANDOM % 20000) + 20000 ))
      if as_pg "$(bin pg_ctl)" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
          -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null 2>&1; then
        echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"
        exit 0
      fi
    done
    echo "pg-throwaway: could not start PostgreSQL; see $dir/server.log" >&2
    exit 1
    ;;
  stop)
    as_pg "$(bin pg_ctl)" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
