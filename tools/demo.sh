#!/usr/bin/env bash
# The demo: three simulated 2-second fetches run concurrently in ~2 s.
set -eu
cd "$(dirname "$0")/.."
. tools/deps.sh
exec make -s demo
