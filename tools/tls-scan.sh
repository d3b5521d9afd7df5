#!/usr/bin/env bash
# Scans loom's HTTPS server (bench/https_hello.lua, a test certificate from
# tools/mkcerts.sh) with Debian's testssl.sh and prints its verdicts on
# protocols, cipher categories, forward secrecy and known vulnerabilities.
# usage: tools/tls-scan.sh
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="testssl.sh" . tools/deps.sh
make -s
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
dir=$(mktemp -d /tmp/loom-tls-scan-XXXXXX)
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
bash tools/mkcerts.sh "$dir"
port=29443
lua5.4 bench/https_hello.lua $port "$dir/server.pem" "$dir/server.key" &
pid=$!
sleep 1
testssl --quiet --color 0 --warnings off --protocols --std --fs --vulnerable "127.0.0.1:$port" 2>&1 | grep -v '^$'
