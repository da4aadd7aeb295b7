# Sourced by the deploy tests: paths, a temporary folder removed at exit, and pass/fail bookkeeping.
# A test calls ok/bad for each check and ends with `finish`, which exits non-zero if any check failed.
set -euo pipefail
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$DEPLOY_DIR/.." && pwd)"
BUILD_DIR="${PGWARD_BUILD_DIR:-$REPO_DIR/build}"
# Debian's Python, with python3-yaml from scripts/install-deps.sh, whatever else is first on PATH.
PYTHON="$(command -v /usr/bin/python3 || command -v python3)"
INTERFACE_MD="${PGWARD_INTERFACE_MD:-$REPO_DIR/../shared/interface.md}"
TMP="$(mktemp -d)"
chmod 755 "$TMP"
cleanup_hooks=()
cleanup() {
  local hook
  for hook in "${cleanup_hooks[@]}"; do eval "$hook" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
failures=0

ok() { echo "  ok: $*"; }
bad() {
  echo "  FAILED: $*"
  failures=$((failures + 1))
}
# check "what" command...: ok when the command succeeds.
check() {
  local what="$1"
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
finish() {
  [ "$failures" -eq 0 ] || exit 1
  exit 0
}
need_build() {
  [ -x "$BUILD_DIR/app/pgward" ] || {
    echo "  FAILED: no pgward binary in $BUILD_DIR (run scripts/build.sh first)"
    exit 1
  }
}
# A free TCP port on 127.0.0.1.
free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# The status code of GET http://127.0.0.1:PORT/PATH, or 000 when nothing answers.
http_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1$2" || true
}
# Waits up to 10 s for GET /PATH on PORT to answer CODE.
wait_status() {
  local port="$1" path="$2" code="$3" i
  for i in $(seq 100); do
    [ "$(http_status "$port" "$path")" = "$code" ] && return 0
    sleep 0.1
  done
  return 1
}
