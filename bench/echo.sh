#!/usr/bin/env bash
# Echo servers side by side: loom, raw C libuv (the limit), luv, cqueues,
# uvloop and Node, each pinned to core 0, loaded by ../shared/bench/echoload
# on core 1 (50 connections, 3 s per size). Prints requests/s and the share
# of C libuv's in the same round. usage: bench/echo.sh [rounds]
set -u
cd "$(dirname "$0")/.."
PEERS=${PEERS_DIR:-../shared/bench}
ROUNDS=${1:-1}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
gcc -O2 -o /tmp/loom-echoload "$PEERS/echoload.c" -lpthread
gcc -O2 -o /tmp/loom-echo-uv "$PEERS/echo_uv.c" -luv

servers=(
  "C-libuv|/tmp/loom-echo-uv"
  "loom|lua5.4 bench/echo.lua"
  "luv|lua5.4 $PEERS/echo_luv.lua"
  "cqueues|lua5.4 $PEERS/echo_cqueues.lua"
  "uvloop|/usr/bin/python3 $PEERS/echo_asyncio.py PORT uvloop"
  "node|node $PEERS/echo_node.js"
)
port=27000
for r in $(seq "$ROUNDS"); do
  for size in 64 1024 16384; do
    base=""
    for entry in "${servers[@]}"; do
      name=${entry%%|*}; cmd=${entry#*|}
      port=$((port + 1))
      if [[ $cmd == *PORT* ]]; then cmd=${cmd/PORT/$port}; else cmd="$cmd $port"; fi
      # shellcheck disable=SC2086
      taskset -c 0 $cmd >/dev/null 2>&1 &
      pid=$!
      sleep 0.5
      out=$(taskset -c 1 /tmp/loom-echoload 127.0.0.1 $port 50 $size 3 2>/dev/null)
      kill $pid 2>/dev/null; wait $pid 2>/dev/null
      rps=$(echo "$out" | sed -n 's/.*rps=\([0-9]*\).*/\1/p')
      [ -z "$rps" ] && { echo "size $size $name: no result"; continue; }
      [ "$name" = "C-libuv" ] && base=$rps
      awk -v s="$size" -v n="$name" -v r="$rps" -v b="$base" \
        'BEGIN { printf "size %5d  %-8s %8d rps  %.2f of C libuv\n", s, n, r, r / b }' 
    done
  done
done
