#!/usr/bin/env bash
# PostgreSQL clients side by side against one server (tools/pg-server.sh,
# pinned to core 1; each client pinned to core 0, over the Unix socket):
# loom.pg, asyncpg on uvloop, and a blocking libpq loop (bench/pg_blocking.c).
#   select: 50 tasks, SELECT id, name FROM users WHERE id = $1, pool of 10
#           (the blocking loop: one query after another), queries/s
#   wait:   the same, each query waiting 1 ms on the server (as a network
#           round trip would): where overlapping waits pays
#   insert: 10,000 rows in one transaction, rows/s (best of 3)
# Prints each figure and loom's ratio to it. usage: bench/pg.sh [rounds]
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="python3-asyncpg python3-uvloop" . tools/deps.sh
make -s
ROUNDS=${1:-1}
SECS=${SECS:-5}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
mkdir -p build
gcc -O2 -o build/pg_blocking bench/pg_blocking.c $(pkg-config --cflags --libs libpq)
dir=$(mktemp -d /tmp/loom-pgbench-XXXXXX)
trap 'sh tools/pg-server.sh stop "$dir"' EXIT
port=$(taskset -c 1 sh tools/pg-server.sh start "$dir" | cut -d' ' -f2)
info="host=$dir port=$port dbname=loom user=loom"
dsn="postgresql://loom@/loom?host=$dir&port=$port"
psql -q -h "$dir" -p "$port" -U loom -d loom -v ON_ERROR_STOP=1 \
  -c "CREATE TABLE users (id int PRIMARY KEY, name text)" \
  -c "INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 10000) g" \
  -c "CREATE TABLE bulk (id int, name text)" -c "VACUUM ANALYZE users"
for r in $(seq "$ROUNDS"); do
  for mode in select wait insert; do
    [ $mode = insert ] && n=10000 || n=$SECS
    base=""
    for name in loom asyncpg blocking; do
      case $name in
        loom) out=$(taskset -c 0 lua5.4 bench/pg_loom.lua "$info" $mode $n) ;;
        asyncpg) out=$(taskset -c 0 /usr/bin/python3 bench/pg_asyncpg.py "$dsn" $mode $n) ;;
        blocking) out=$(taskset -c 0 build/pg_blocking "$info" $mode $n) ;;
      esac
      v=$(echo "$out" | sed -n 's/.*=\([0-9]*\).*/\1/p')
      [ -z "$v" ] && { echo "pg $mode $name: no result: $out"; continue; }
      [ $name = loom ] && base=$v
      unit=$([ $mode = insert ] && echo "rows/s" || echo "queries/s")
      awk -v m="$mode" -v n="$name" -v v="$v" -v b="$base" -v u="$unit" \
        'BEGIN { printf "pg %-6s  %-9s %8d %-9s  loom/this %.2f\n", m, n, v, u, b / v }'
    done
  done
done
