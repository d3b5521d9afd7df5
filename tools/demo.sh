#!/usr/bin/env bash
# The demo: three HTTP fetches of 2 seconds each from a local server, run
# concurrently: about 2 s in all, not 6.
set -eu
cd "$(dirname "$0")/.."
. tools/deps.sh
exec make -s demo
