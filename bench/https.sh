#!/usr/bin/env bash
# HTTPS hello-world: loom against nginx with TLS (one worker, the same ECDSA
# P-256 certificate, the same protocols: TLS 1.2 and 1.3, so both speak
# 1.3; nginx 1.22's default would also offer 1.0/1.1 and settle on 1.2,
# whose resumption skips the key exchange that 1.3's keeps for forward
# secrecy), each pinned to core 0 and loaded by wrk on core 1:
# kept-alive requests, and new connections (one request each, a TLS
# handshake each; wrk offers the previous session, so most are resumed).
# Then the HTTPS clients: loom's and aiohttp's (on uvloop), each fetching
# 10,000 small responses with 50 in flight from that nginx (core 0; the
# client on core 1), the certificate verified against the test CA.
# Prints requests/s and the share of nginx's (servers) or loom's ratio to
# aiohttp (clients). usage: bench/https.sh [rounds]
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="wrk nginx-light python3-aiohttp python3-uvloop" . tools/deps.sh
make -s
ROUNDS=${1:-1}
DURATION=${DURATION:-4s}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
dir=$(mktemp -d /tmp/loom-https-bench-XXXXXX)
trap 'rm -rf "$dir"' EXIT
bash tools/mkcerts.sh "$dir"
mkdir -p "$dir/logs"
nginx_conf() { # port
  cat <<CONF
daemon off; worker_processes 1; error_log /dev/null; pid $dir/nginx.pid;
events { worker_connections 1024; }
http { access_log off; ssl_session_cache shared:SSL:10m; ssl_protocols TLSv1.2 TLSv1.3;
  server { listen 127.0.0.1:$1 ssl; ssl_certificate $dir/server.pem; ssl_certificate_key $dir/server.key;
    location / { return 200 "Hello, World!"; } } }
CONF
}
port=29100
for r in $(seq "$ROUNDS"); do
  for mode in keepalive newconn; do
    base=""
    hdr=(); [ $mode = newconn ] && hdr=(-H "Connection: close")
    for name in nginx loom; do
      port=$((port + 1))
      if [ $name = nginx ]; then
        nginx_conf $port > "$dir/nginx.conf"
        taskset -c 0 nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>&1 &
      else
        taskset -c 0 lua5.4 bench/https_hello.lua $port "$dir/server.pem" "$dir/server.key" >/dev/null 2>&1 &
      fi
      pid=$!
      sleep 1
      out=$(taskset -c 1 wrk -t1 -c50 -d"$DURATION" "${hdr[@]}" "https://127.0.0.1:$port/" 2>/dev/null)
      kill $pid 2>/dev/null; wait $pid 2>/dev/null
      rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
      [ -z "$rps" ] && { echo "https $mode $name: no result"; continue; }
      [ $name = nginx ] && base=$rps
      awk -v m="$mode" -v n="$name" -v r="$rps" -v b="$base" \
        'BEGIN { printf "https %-9s %-6s %9.0f req/s  %.2f of nginx\n", m, n, r, r / b }'
    done
  done
done
port=$((port + 1))
nginx_conf $port > "$dir/nginx.conf"
taskset -c 0 nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>&1 &
ngx=$!
sleep 1
for r in $(seq "$ROUNDS"); do
  l=$(BENCH_CA="$dir/ca.pem" taskset -c 1 lua5.4 bench/http_client.lua "https://localhost:$port/" 10000 50 | sed -n 's/rps=//p')
  a=$(BENCH_CA="$dir/ca.pem" taskset -c 1 /usr/bin/python3 bench/http_client_aiohttp.py "https://localhost:$port/" 10000 50 |
    sed -n 's/rps=//p')
  [ -z "$l" ] || [ -z "$a" ] && { echo "https client: no result"; continue; }
  awk -v l="$l" -v a="$a" 'BEGIN { printf "https client  loom %6d req/s  aiohttp %6d req/s  loom/aiohttp %.2f\n", l, a, l / a }'
done
kill $ngx 2>/dev/null; wait $ngx 2>/dev/null
