#!/usr/bin/env bash
# Runs loom's scheduler microbenchmarks and the peers' (../shared/bench)
# side by side, alternating, pinned to one core, and prints each figure with
# its ratio to loom's; then the file benchmarks (SKIP_FS=1 skips them).
# usage: bench/run.sh [rounds] [bench ...]
set -u
cd "$(dirname "$0")/.."
PEERS=${PEERS_DIR:-../shared/bench}
ROUNDS=${1:-5}; shift || true
BENCHES=${*:-spawn pingpong semaphore gather timeout sleepers}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
pin() { if command -v taskset >/dev/null; then taskset -c 0 "$@"; else "$@"; fi; }

# run NAME CMD...: prints "name seconds per_op_us rss_mb" or nothing if absent
run() {
  local name=$1; shift
  local out rss
  out=$( { pin /usr/bin/time -f "rss_kb=%M" "$@"; } 2>&1 ) || { echo "$name FAILED: $out" >&2; return; }
  rss=$(echo "$out" | sed -n 's/.*rss_kb=\([0-9]*\).*/\1/p')
  echo "$out" | sed -n "s/.*seconds=\([0-9.]*\) per_op_us=\([0-9.]*\).*/$name \1 \2 $((rss / 1024))/p"
}

have() { command -v "$1" >/dev/null 2>&1; }
results=$(mktemp)
for b in $BENCHES; do
  for r in $(seq "$ROUNDS"); do
    run loom lua5.4 bench/micro.lua "$b"
    case $b in
      spawn|pingpong|sleepers)
        have node && run node node "$PEERS/micro_node.js" "$b"
        lua5.4 -e 'require "cqueues"' 2>/dev/null && run cqueues lua5.4 "$PEERS/micro_cqueues.lua" "$b"
        /usr/bin/python3 -c 'import uvloop' 2>/dev/null && run uvloop /usr/bin/python3 "$PEERS/micro_asyncio.py" "$b" uvloop
        have python3 && run asyncio python3 "$PEERS/micro_asyncio.py" "$b" ;;
      *)
        /usr/bin/python3 -c 'import uvloop' 2>/dev/null && run uvloop /usr/bin/python3 bench/peers_asyncio.py "$b" uvloop
        have python3 && run asyncio python3 bench/peers_asyncio.py "$b" ;;
    esac
  done | sed "s/^/$b /" >> "$results"
done

# median per (bench, runtime), then the ratio to loom: >1 means loom is faster / smaller
lua5.4 - "$results" <<'LUA'
local rows = {}
for line in io.lines(arg[1]) do
  local b, rt, s, us, mb = line:match("^(%S+) (%S+) (%S+) (%S+) (%S+)$")
  if b then
    rows[b] = rows[b] or {}
    rows[b][rt] = rows[b][rt] or { s = {}, us = {}, mb = {} }
    local r = rows[b][rt]
    r.s[#r.s + 1], r.us[#r.us + 1], r.mb[#r.mb + 1] = tonumber(s), tonumber(us), tonumber(mb)
  end
end
local function median(t) table.sort(t); local n = #t; return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2 end
local order = { "loom", "node", "cqueues", "uvloop", "asyncio" }
for _, b in ipairs({ "spawn", "pingpong", "semaphore", "gather", "timeout", "sleepers" }) do
  local rb = rows[b]
  if rb and rb.loom then
    local l = { s = median(rb.loom.s), us = median(rb.loom.us), mb = median(rb.loom.mb) }
    print(("%s (median of %d rounds; ratio = peer / loom, above 1 means loom is ahead)"):format(b, #rb.loom.s))
    print(("  %-8s %10s %12s %8s %12s %10s"):format("runtime", "seconds", "us/op", "MB", "time ratio", "RSS ratio"))
    for _, rt in ipairs(order) do
      local r = rb[rt]
      if r then
        local s, us, mb = median(r.s), median(r.us), median(r.mb)
        print(("  %-8s %10.3f %12.2f %8d %12.2f %10.2f"):format(rt, s, us, mb, s / l.s, mb / l.mb))
      end
    end
  end
end
LUA
rm -f "$results"

# Files: thread-pool work, so not pinned (the pool's parallelism is the point).
if [ -z "${SKIP_FS:-}" ]; then
  echo "files (not pinned; 3 rounds inside each run, medians)"
  lua5.4 bench/fs.lua read
  for r in $(seq "$ROUNDS"); do
    lua5.4 bench/fs.lua stat
    have node && node bench/fs_node.js
  done
fi
