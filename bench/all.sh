#!/usr/bin/env bash
# `make bench`: every benchmark side by side with its peers, in one run on
# this machine. The output is kept as bench/results/<date>-<commit>.txt, its
# ratios drawn as bench/results/<date>-<commit>.svg, and both copied to
# bench/results/latest.{txt,svg}, which the README shows.
# ROUNDS (scheduler, default 5), NET_ROUNDS (echo and HTTP, default 3).
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="wrk nginx-light nodejs node-ws lua-http lua-cqueues lua-luv python3-aiohttp python3-uvloop python3-websockets python3-asyncpg redis-server lua-redis lua-socket" . tools/deps.sh
make -s
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# (earlier results in bench/results do not count as changes to the code measured)
[ -n "$(git status --porcelain --untracked-files=no -- . ':!bench/results' 2>/dev/null)" ] && commit="$commit+changes"
name=bench/results/$(date -u +%Y-%m-%d)-$commit
mkdir -p bench/results
{
  echo "# make bench on commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -r)"
  echo "## scheduler"
  bash bench/run.sh "${ROUNDS:-5}"
  echo "## echo"
  bash bench/echo.sh "${NET_ROUNDS:-3}"
  echo "## http server"
  bash bench/http.sh "${NET_ROUNDS:-3}"
  echo "## web"
  bash bench/web.sh "${NET_ROUNDS:-3}"
  echo "## workers"
  bash bench/workers.sh "${NET_ROUNDS:-3}"
  echo "## http client"
  bash bench/http_client.sh "${NET_ROUNDS:-3}"
  echo "## https"
  bash bench/https.sh "${NET_ROUNDS:-3}"
  echo "## tls"
  bash bench/tls.sh "${NET_ROUNDS:-3}"
  echo "## websocket"
  bash bench/ws.sh "${NET_ROUNDS:-3}"
  echo "## postgresql"
  bash bench/pg.sh "${NET_ROUNDS:-3}"
  echo "## redis"
  bash bench/redis.sh "${NET_ROUNDS:-3}"
} 2>&1 | tee "$name.txt"
lua5.4 bench/chart.lua "$name.txt" > "$name.svg"
cp "$name.txt" bench/results/latest.txt
cp "$name.svg" bench/results/latest.svg
echo "bench: wrote $name.txt and $name.svg"
