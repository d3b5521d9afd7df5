#!/usr/bin/env bash
# Web features side by side: a JSON endpoint with a path parameter through
# loom.http.router against loom's own hello world, aiohttp.web (its router,
# on uvloop) and Node's fastify (from npm, installed here); static files of
# 4 KiB and 1 MiB from loom.http.static against nginx. Servers pinned to
# core 0, `wrk -t1 -c50` on core 1. Prints requests/s and the ratios.
# usage: bench/web.sh [rounds]
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="wrk nginx-light nodejs python3-aiohttp python3-uvloop lua-cjson $(command -v npm >/dev/null || echo npm)" . tools/deps.sh
make -s
ROUNDS=${1:-1}
DURATION=${DURATION:-4s}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
FASTIFY=/tmp/loom-bench-fastify
if [ ! -d "$FASTIFY/node_modules/fastify" ]; then
  mkdir -p "$FASTIFY" && (cd "$FASTIFY" && npm install --no-audit --no-fund --silent fastify@4 >/dev/null 2>&1)
fi
WWW=/tmp/loom-bench-www
mkdir -p "$WWW/logs" "$WWW/root"
head -c 4096 /dev/urandom > "$WWW/root/4k.bin"
head -c 1048576 /dev/urandom > "$WWW/root/1m.bin"
cat > "$WWW/nginx.conf.in" <<CONF
daemon off; worker_processes 1; error_log /dev/null; pid $WWW/nginx.pid;
events { worker_connections 1024; }
http { access_log off; sendfile on; server { listen 127.0.0.1:PORT; root $WWW/root; } }
CONF

# run NAME CMD URL: one server, one wrk run; prints "NAME RPS req/s"
port=30000
run() {
  local name=$1 cmd=$2 path=$3 out v pid
  port=$((port + 1))
  if [ "$cmd" = nginx ]; then
    sed "s/PORT/$port/" "$WWW/nginx.conf.in" > "$WWW/nginx.conf"
    cmd="nginx -p $WWW -c $WWW/nginx.conf"
  else
    cmd=${cmd/PORT/$port}
  fi
  # shellcheck disable=SC2086
  NODE_PATH="$FASTIFY/node_modules" taskset -c 0 $cmd >/dev/null 2>&1 &
  pid=$!
  sleep 1.5
  out=$(taskset -c 1 wrk -t1 -c50 -d"$DURATION" "http://127.0.0.1:$port$path" 2>/dev/null)
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  [ "${cmd%% *}" = nginx ] && pkill -f "nginx -p $WWW" 2>/dev/null
  v=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "$name: errors"; v=""; fi
  echo "${v:-0}"
}

for r in $(seq "$ROUNDS"); do
  hello=$(run hello "lua5.4 bench/web_loom.lua PORT hello" /)
  json=$(run json "lua5.4 bench/web_loom.lua PORT json" /users/42)
  aio=$(run aiohttp "/usr/bin/python3 bench/web_aiohttp.py PORT" /users/42)
  fast=$(run fastify "node bench/web_fastify.js PORT" /users/42)
  awk -v h="$hello" -v j="$json" -v a="$aio" -v f="$fast" 'BEGIN {
    printf "web json-loom %9.0f req/s  of loom hello %.2f\n", j, j / h
    printf "web json-aiohttp %6.0f req/s  loom/this %.2f\n", a, j / a
    printf "web json-fastify %6.0f req/s  loom/this %.2f\n", f, j / f }'
  for f in 4k 1m; do
    ln=$(run "loom-$f" "lua5.4 bench/web_loom.lua PORT static $WWW/root" "/$f.bin")
    ng=$(run "nginx-$f" nginx "/$f.bin")
    awk -v s="$f" -v l="$ln" -v n="$ng" 'BEGIN { printf "web static-%s loom %9.0f req/s  nginx %9.0f req/s  loom/nginx %.2f\n", s, l, n, l / n }'
  done
done
