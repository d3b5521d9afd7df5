#!/usr/bin/env bash
# WebSocket echo: loom's server against Node's ws and python3-websockets on
# uvloop, each pinned to core 0, loaded by the same C client (the peers'
# wsload.c: 50 connections, a message in flight on each) on core 1, for
# 64 B and 16 KiB binary messages. Prints messages/s and loom's ratio to
# each. usage: bench/ws.sh [rounds]
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="node-ws python3-websockets python3-uvloop" . tools/deps.sh
make -s
ROUNDS=${1:-1}
SECS=${SECS:-3}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;" NODE_PATH=/usr/share/nodejs
PEERS=$(cd "${PEERS_DIR:-../shared/bench}" && pwd)
mkdir -p build
gcc -O2 -o build/wsload "$PEERS/wsload.c"
servers=(
  "loom|lua5.4 bench/ws_echo.lua"
  "node-ws|node bench/ws_echo_node.js"
  "websockets|/usr/bin/python3 bench/ws_echo_py.py"
)
port=29500
for r in $(seq "$ROUNDS"); do
  for size in 64 16384; do
    base=""
    for entry in "${servers[@]}"; do
      name=${entry%%|*}; cmd=${entry#*|}
      port=$((port + 1))
      # shellcheck disable=SC2086
      taskset -c 0 $cmd $port >/dev/null 2>&1 &
      pid=$!
      sleep 1
      out=$(taskset -c 1 build/wsload 127.0.0.1 $port 50 $size "$SECS" 2>/dev/null)
      kill $pid 2>/dev/null; wait $pid 2>/dev/null
      mps=$(echo "$out" | sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p')
      [ -z "$mps" ] && { echo "ws size $size $name: no result"; continue; }
      [ "$name" = loom ] && base=$mps
      awk -v s="$size" -v n="$name" -v m="$mps" -v b="$base" \
        'BEGIN { printf "ws size %5d  %-10s %8d msgs/s  loom/this %.2f\n", s, n, m, b / m }'
    done
  done
done
