#!/usr/bin/env bash
# HTTP hello-world servers side by side: loom, nginx (one worker), Node,
# aiohttp on uvloop and lua-http, each pinned to core 0 and loaded by
# `wrk -t1 -c50 -d4s` on core 1. Prints requests/s and the share of
# nginx's in the same round. usage: bench/http.sh [rounds]
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="wrk nginx-light nodejs lua-http python3-aiohttp python3-uvloop" . tools/deps.sh
make -s
PEERS=$(cd "${PEERS_DIR:-../shared/bench}" && pwd)
ROUNDS=${1:-1}
DURATION=${DURATION:-4s}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
mkdir -p /tmp/loom-nginx/logs
sed "s/26004/PORT/" "$PEERS/http_nginx.conf" > /tmp/loom-nginx/nginx.conf.in

servers=(
  "nginx|nginx"
  "loom|lua5.4 bench/http_hello.lua"
  "node|node $PEERS/http_node.js"
  "aiohttp|/usr/bin/python3 $PEERS/http_aiohttp.py"
  "lua-http|lua5.1 $PEERS/http_luahttp.lua"
)
port=28000
for r in $(seq "$ROUNDS"); do
  base=""
  for entry in "${servers[@]}"; do
    name=${entry%%|*}; cmd=${entry#*|}
    port=$((port + 1))
    if [ "$name" = nginx ]; then
      sed "s/PORT/$port/" /tmp/loom-nginx/nginx.conf.in > /tmp/loom-nginx/nginx.conf
      cmd="nginx -p /tmp/loom-nginx -c /tmp/loom-nginx/nginx.conf"
    else
      cmd="$cmd $port"
    fi
    # shellcheck disable=SC2086
    taskset -c 0 $cmd >/dev/null 2>&1 &
    pid=$!
    sleep 1
    out=$(taskset -c 1 wrk -t1 -c50 -d"$DURATION" "http://127.0.0.1:$port/" 2>/dev/null)
    kill $pid 2>/dev/null; wait $pid 2>/dev/null
    [ "$name" = nginx ] && pkill -f "nginx -p /tmp/loom-nginx" 2>/dev/null
    rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
    errs=$(echo "$out" | grep -c "Non-2xx\|Socket errors")
    [ -z "$rps" ] && { echo "$name: no result"; continue; }
    [ "$name" = nginx ] && base=$rps
    awk -v n="$name" -v r="$rps" -v b="$base" -v e="$errs" \
      'BEGIN { printf "%-9s %9.0f req/s  %.2f of nginx%s\n", n, r, r / b, (e > 0) ? "  (errors)" : "" }'
  done
done
