#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds the C core with
# -Wall -Wextra -Werror, and runs the busted specs under Lua 5.4.
# `tools/test.sh --asan` runs the same specs under AddressSanitizer + UBSan.
set -eu
cd "$(dirname "$0")/.."
. tools/deps.sh
if [ "${1:-}" = "--asan" ]; then
  exec make -s asan
fi
exec make -s test
