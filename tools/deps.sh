# Sourced by tools/*.sh: installs the Debian packages loom needs when missing.
# Extra packages can be passed in LOOM_EXTRA_PKGS.
loom_deps() {
  local pkgs="lua5.4 liblua5.4-dev libuv1-dev libhttp-parser-dev lua-cjson luarocks lua-busted gcc make pkg-config libssl-dev openssl zlib1g-dev curl python3-websockets nodejs node-ws libpq-dev postgresql redis-server lua-redis lua-socket nginx-light haproxy wrk ${LOOM_EXTRA_PKGS:-}"
  local missing="" p sudo=""
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "loom: installing Debian packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  $sudo apt-get install -y -q $missing >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q $missing >/dev/null; }
}
loom_deps
