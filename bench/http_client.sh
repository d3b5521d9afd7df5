#!/usr/bin/env bash
# HTTP clients side by side: loom's and aiohttp's (on uvloop), each fetching
# 10,000 small responses with 50 in flight from the same nginx (one worker,
# pinned to core 0; the client on core 1). Prints requests/s and loom's
# ratio to aiohttp in the same round. usage: bench/http_client.sh [rounds]
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="nginx-light python3-aiohttp python3-uvloop" . tools/deps.sh
make -s
PEERS=$(cd "${PEERS_DIR:-../shared/bench}" && pwd)
ROUNDS=${1:-1}
N=${N:-10000}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
mkdir -p /tmp/loom-nginx/logs
port=28950
sed "s/26004/$port/" "$PEERS/http_nginx.conf" > /tmp/loom-nginx/client.conf
taskset -c 0 nginx -p /tmp/loom-nginx -c /tmp/loom-nginx/client.conf >/dev/null 2>&1 &
ngx=$!
trap 'kill $ngx 2>/dev/null' EXIT
sleep 1
url="http://127.0.0.1:$port/"
for r in $(seq "$ROUNDS"); do
  l=$(taskset -c 1 lua5.4 bench/http_client.lua "$url" "$N" 50 | sed -n 's/rps=//p')
  a=$(taskset -c 1 /usr/bin/python3 bench/http_client_aiohttp.py "$url" "$N" 50 | sed -n 's/rps=//p')
  awk -v l="$l" -v a="$a" 'BEGIN { printf "client  loom %6d req/s  aiohttp %6d req/s  loom/aiohttp %.2f\n", l, a, l / a }'
done
