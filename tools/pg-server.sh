#!/bin/sh
# A throwaway PostgreSQL for the specs, examples and benchmarks.
#   tools/pg-server.sh start DIR   initdb into DIR/data, start it listening on a
#                                  Unix socket in DIR and on 127.0.0.1:<free port>,
#                                  print "DIR PORT"
#   tools/pg-server.sh restart DIR (fast shutdown, then start again)
#   tools/pg-server.sh stop DIR    stop it and remove DIR
# Roles: postgres (trust, the superuser), loom (password "secret" over TCP,
# trust on the socket), database loom owned by loom. As root the server runs
# as the system user loom-pg, created here on first use.
set -eu
cmd=$1 dir=$2
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$BIN" ] || { echo "pg-server: PostgreSQL not installed (tools/deps.sh installs it)" >&2; exit 1; }
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u loom-pg -- "$@"; else "$@"; fi
}
case $cmd in
start)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    id loom-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin loom-pg
    chown loom-pg "$dir"
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1
  cat >"$dir/data/pg_hba.conf" <<HBA
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
  as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null
  "$BIN/psql" -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE loom LOGIN PASSWORD 'secret'" -c "CREATE DATABASE loom OWNER loom" >/dev/null
  echo "$dir $port"
  ;;
restart)
  as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -m fast restart >/dev/null
  ;;
stop)
  [ -d "$dir/data" ] && as_owner "$BIN/pg_ctl" -D "$dir/data" -w -t 30 -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*) echo "usage: $0 start|restart|stop DIR" >&2; exit 2 ;;
esac
