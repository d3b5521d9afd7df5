#!/usr/bin/env bash
# Every core: loom with 2 workers against nginx with 2 workers, and loom
# with 2 workers against loom with 1, on the HTTP hello world. Nothing is
# pinned: on this 2-core machine the servers share the cores with the load
# generator (`wrk -t1 -c100 -d4s`), as a small production box does. Prints
# requests/s and loom-2's ratio to each in the same round.
# usage: bench/workers.sh [rounds]
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="wrk nginx-light" . tools/deps.sh
make -s
PEERS=$(cd "${PEERS_DIR:-../shared/bench}" && pwd)
ROUNDS=${1:-1}
DURATION=${DURATION:-4s}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
mkdir -p /tmp/loom-nginx2/logs
sed -e "s/26004/PORT/" -e "s/worker_processes 1/worker_processes 2/" -e "s/nginx-bench.pid/loom-nginx2.pid/" \
  "$PEERS/http_nginx.conf" > /tmp/loom-nginx2/nginx.conf.in

servers=(
  "nginx-2|nginx"
  "loom-2|lua5.4 bench/workers_hello.lua PORT 2"
  "loom-1|lua5.4 bench/workers_hello.lua PORT 1"
)
port=29000
for r in $(seq "$ROUNDS"); do
  declare -A rps=()
  for entry in "${servers[@]}"; do
    name=${entry%%|*}; cmd=${entry#*|}
    port=$((port + 1))
    if [ "$name" = nginx-2 ]; then
      sed "s/PORT/$port/" /tmp/loom-nginx2/nginx.conf.in > /tmp/loom-nginx2/nginx.conf
      cmd="nginx -p /tmp/loom-nginx2 -c /tmp/loom-nginx2/nginx.conf"
    else
      cmd=${cmd/PORT/$port}
    fi
    # shellcheck disable=SC2086
    $cmd >/dev/null 2>&1 &
    pid=$!
    sleep 1.5
    out=$(wrk -t1 -c100 -d"$DURATION" "http://127.0.0.1:$port/" 2>/dev/null)
    kill $pid 2>/dev/null; wait $pid 2>/dev/null
    [ "$name" = nginx-2 ] && pkill -f "nginx -p /tmp/loom-nginx2" 2>/dev/null
    v=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
    errs=$(echo "$out" | grep -c "Non-2xx\|Socket errors")
    [ -z "$v" ] && { echo "$name: no result"; continue; }
    rps[$name]=$v
    awk -v n="$name" -v r="$v" -v e="$errs" 'BEGIN { printf "%-8s %9.0f req/s%s\n", n, r, (e > 0) ? "  (errors)" : "" }'
  done
  awk -v l2="${rps[loom-2]:-0}" -v n2="${rps[nginx-2]:-1}" -v l1="${rps[loom-1]:-1}" \
    'BEGIN { printf "workers  loom-2/nginx-2 %.2f  loom-2/loom-1 %.2f\n", l2 / n2, l2 / l1 }'
done
