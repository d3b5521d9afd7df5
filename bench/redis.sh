#!/usr/bin/env bash
# redis-lua (Debian's lua-redis, written for LuaSocket) over loom.socket,
# against the same GET/SET load written on loom's streams and against
# redis-lua on real LuaSocket one request after another (bench/redis_load.lua).
# redis-server pinned to core 1, the clients to core 0. Prints ops/s and the
# ratios of loom.socket to each. usage: bench/redis.sh [rounds]
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="redis-server lua-redis lua-socket" . tools/deps.sh
make -s
ROUNDS=${1:-1}
SECS=${SECS:-3}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c 1 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null' EXIT
sleep 0.5
for r in $(seq "$ROUNDS"); do
  base=""
  for mode in socket streams luasocket; do
    v=$(taskset -c 0 lua5.4 bench/redis_load.lua $mode "$port" "$SECS" | sed -n 's/ops_per_s=//p')
    [ -z "$v" ] && { echo "redis $mode: no result"; continue; }
    [ $mode = socket ] && base=$v
    awk -v m="$mode" -v v="$v" -v b="$base" 'BEGIN { printf "redis %-9s %8d ops/s  loom.socket/this %.2f\n", m, v, b / v }'
  done
done
