#!/usr/bin/env bash
# A throwaway PgBouncer in transaction pooling mode, for the pooler tests.
#
#   scripts/pgbouncer.sh start DIR UPSTREAM_HOST UPSTREAM_PORT   # prints its port
#   scripts/pgbouncer.sh stop DIR
#
# Debian's pgbouncer package (installed with apt-get when missing). Listens
# on 127.0.0.1 at a free port, auth_type=trust, every database forwarded to
# the upstream server, pool_mode=transaction: no session state survives a
# transaction, and a named prepared statement outside one fails.
set -euo pipefail

cmd=${1:?start|stop}
dir=${2:?directory}

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$cmd" in
  start)
    host=${3:?upstream host}
    up=${4:?upstream port}
    if ! command -v pgbouncer >/dev/null; then
      echo "pgbouncer.sh: installing Debian's pgbouncer" >&2
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    fi
    mkdir -p "$dir"
    for _ in 1 2 3 4 5 6 7 8; do
      port=$(( (RANDOM % 20000) + 40000 ))
      cat > "$dir/pgbouncer.ini" <<EOF
[databases]
* = host=$host port=$up

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = 10
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
      printf '"postgres" ""\n' > "$dir/userlist.txt"
      [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
      rm -f "$dir/pgbouncer.pid"
      if as_pg pgbouncer -d "$dir/pgbouncer.ini" >/dev/null 2>&1; then
        for _ in $(seq 1 50); do
          if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            exit 0
          fi
          sleep 0.1
        done
      fi
      [ -f "$dir/pgbouncer.pid" ] && kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    done
    echo "pgbouncer.sh: could not start pgbouncer; see $dir/pgbouncer.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/pgbouncer.pid" ]; then
      kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    fi
    ;;
  *)
    echo "usage: $0 start DIR HOST PORT | stop DIR" >&2
    exit 2
    ;;
esac
