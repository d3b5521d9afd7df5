#!/usr/bin/env bash
# Checks examples/ws_chat.lua's page in headless Chromium: the page joins
# the room over a WebSocket, sends a message (from its ?say= parameter) and
# shows what the room broadcasts; the DOM Chromium renders must hold the
# message coming back. usage: tools/ws-browser-check.sh
set -u
cd "$(dirname "$0")/.."
LOOM_EXTRA_PKGS="chromium" . tools/deps.sh
make -s
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"
log=$(mktemp)
profile=$(mktemp -d)
lua5.4 examples/ws_chat.lua keep > "$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$log" "$profile"' EXIT
for _ in $(seq 50); do grep -q "chat room at" "$log" && break; sleep 0.1; done
url=$(sed -n 's/^chat room at \(.*\)$/\1/p' "$log")
[ -n "$url" ] || { echo "ws-browser-check: the example did not start"; cat "$log"; exit 1; }
dom=$(timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$profile" \
  --virtual-time-budget=5000 --dump-dom "${url}?name=chromium&say=hello%20from%20a%20browser" 2>/dev/null)
if echo "$dom" | grep -q "<li>chromium: hello from a browser</li>"; then
  echo "ws-browser-check: ok (the page sent a message over the WebSocket and showed it coming back)"
else
  echo "ws-browser-check: FAILED"; echo "$dom" | head -20; exit 1
fi
