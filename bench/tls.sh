#!/usr/bin/env bash
# TLS beneath loom's streams, side by side with C:
# - echo of 16 KiB messages over 50 TLS connections: loom's server against
#   a C libuv + OpenSSL server built the same way (bench/tls_echo_uv.c),
#   each pinned to core 0, loaded by bench/tls_echoload.c on core 1. The
#   load generator can be the limit here, so the server CPU each round trip
#   took (from /proc) is printed too.
# - handshakes: server CPU per full and per resumed handshake, TLS 1.3 (what
#   both negotiate) and TLS 1.2 (for clients that only speak it), loom
#   against nginx with the same protocols and certificate, loaded by four
#   `openssl s_time` (-new: full, -reuse: resumed) on core 1.
# usage: bench/tls.sh [rounds]
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="nginx-light openssl" . tools/deps.sh
make -s
ROUNDS=${1:-1}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
dir=$(mktemp -d /tmp/loom-tls-bench-XXXXXX)
trap 'rm -rf "$dir"' EXIT
bash tools/mkcerts.sh "$dir" >/dev/null
mkdir -p "$dir/logs"
gcc -O2 -o "$dir/echo-uv" bench/tls_echo_uv.c -luv -lssl -lcrypto
gcc -O2 -o "$dir/echoload" bench/tls_echoload.c -lpthread -lssl -lcrypto
cert=$dir/server.pem key=$dir/server.key
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system, 1/100 s
port=29300
for r in $(seq "$ROUNDS"); do
  base="" base_cpu=""
  for name in C loom; do
    port=$((port + 1))
    if [ $name = C ]; then
      taskset -c 0 "$dir/echo-uv" $port "$cert" "$key" >/dev/null 2>&1 &
    else
      taskset -c 0 lua5.4 bench/echo.lua $port "$cert" "$key" >/dev/null 2>&1 &
    fi
    pid=$!
    sleep 0.7
    t0=$(ticks $pid)
    out=$(taskset -c 1 "$dir/echoload" 127.0.0.1 $port 50 16384 3 2>/dev/null)
    t1=$(ticks $pid)
    kill $pid 2>/dev/null; wait $pid 2>/dev/null
    rps=$(echo "$out" | sed -n 's/.*rps=\([0-9]*\).*/\1/p')
    [ -z "$rps" ] && { echo "tls echo $name: no result"; continue; }
    us=$(awk -v t=$((t1 - t0)) -v r="$rps" 'BEGIN { printf "%.1f", t * 1e4 / (r * 3) }')
    [ $name = C ] && base=$rps base_cpu=$us
    awk -v n="$name" -v r="$rps" -v b="$base" -v u="$us" -v bu="$base_cpu" \
      'BEGIN { printf "tls echo16k %-5s %8d rps  %.2f of C  cpu %5.1f us/trip  C/this %.2f\n", n, r, r / b, u, bu / u }'
  done
done
nginx_conf() { # port
  cat <<CONF
daemon off; worker_processes 1; error_log /dev/null; pid $dir/nginx.pid;
events { worker_connections 1024; }
http { access_log off; ssl_session_cache shared:SSL:10m; ssl_protocols TLSv1.2 TLSv1.3;
  server { listen 127.0.0.1:$1 ssl; ssl_certificate $cert; ssl_certificate_key $key;
    location / { return 200 "Hello, World!"; } } }
CONF
}
for r in $(seq "$ROUNDS"); do
  for name in nginx loom; do
    port=$((port + 1))
    if [ $name = nginx ]; then
      nginx_conf $port > "$dir/nginx.conf"
      taskset -c 0 nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>&1 &
      sleep 1
      pid=$(pgrep -f "nginx: worker" -P $!)
    else
      taskset -c 0 lua5.4 bench/https_hello.lua $port "$cert" "$key" >/dev/null 2>&1 &
      pid=$!
      sleep 1
    fi
    for proto in 1.3 1.2; do
    line="tls handshake $name tls$proto"
    for mode in new reuse; do
      t0=$(ticks "$pid")
      n=0 loaders=()
      for i in 1 2 3 4; do
        taskset -c 1 openssl s_time "-tls${proto/./_}" -connect 127.0.0.1:$port -$mode -time 3 -www / \
          > "$dir/st.$i" 2>&1 &
        loaders+=($!)
      done
      wait "${loaders[@]}"
      t1=$(ticks "$pid")
      for f in "$dir"/st.*; do
        n=$((n + $(sed -n 's/^\([0-9]*\) connections in [0-9]* real.*/\1/p' "$f" | head -1)))
      done
      line="$line  $mode $(awk -v t=$((t1 - t0)) -v n=$n 'BEGIN { printf "%6.0f", t * 1e4 / n }') us"
    done
    echo "$line" | awk '{ printf "%s  full/resumed %.2f\n", $0, $6 / $9 }'
    done
    if [ $name = nginx ]; then pkill -f "nginx -p $dir"; else kill "$pid"; fi
    wait 2>/dev/null
  done
done
