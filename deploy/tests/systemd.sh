#!/usr/bin/env bash
# deploy/systemd/pgward.service: `systemd-analyze verify` in a throwaway root holding the host's system units, the
# binary as `cmake --install` puts it, and the unit (any message from verify fails the test: it only warns about
# bad values); `systemd-analyze security --offline` keeps the hardening at an exposure of 2.0 or less; and the unit
# reloads with SIGHUP and gives the SIGTERM drain longer than shutdown_timeout.
source "$(dirname "$0")/lib.sh"
need_build
unit="${PGWARD_UNIT:-$DEPLOY_DIR/systemd/pgward.service}"

root="$TMP/root"
mkdir -p "$root/usr/lib/systemd" "$root/usr/bin" "$root/etc/systemd/system"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp /usr/bin/kill "$root/usr/bin/"
ln -s usr/bin "$root/bin"
cmake --install "$BUILD_DIR" --prefix "$root/usr/local" >/dev/null
cp "$unit" "$root/etc/systemd/system/pgward.service"

out="$(systemd-analyze verify --man=no --root="$root" pgward.service 2>&1)" && rc=0 || rc=$?
if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
  ok "systemd-analyze verify: no complaint"
else
  bad "systemd-analyze verify (exit $rc): $out"
fi

if out="$(systemd-analyze security --offline=yes --root="$root" --threshold=20 pgward.service 2>&1)"; then
  ok "systemd-analyze security: $(grep -o 'Overall exposure level.*' <<<"$out")"
else
  bad "systemd-analyze security over 2.0: $(grep -o 'Overall exposure level.*' <<<"$out")"
fi

# The settings the issue asks for, read as systemd reads them (the last assignment wins).
setting() { grep -E "^$1=" "$unit" | tail -n 1 | cut -d= -f2-; }
check "ExecStart runs the installed binary" \
  test -x "$root$(setting ExecStart | cut -d' ' -f1)"
check "ExecReload sends SIGHUP" grep -Eq '^ExecReload=/bin/kill -(HUP|SIGHUP) \$MAINPID$' "$unit"
check "KillSignal is SIGTERM (drain)" test "$(setting KillSignal)" = SIGTERM
default_shutdown="$(grep -Eo '^shutdown_timeout = "[0-9]+s"' "$REPO_DIR/README.md" | grep -Eo '[0-9]+')"
stop="$(setting TimeoutStopSec)"
check "TimeoutStopSec ($stop) is above the default shutdown_timeout (${default_shutdown}s)" \
  test "${stop%s}" -gt "$default_shutdown"
check "DynamicUser or User" test "$(setting DynamicUser)" = yes -o -n "$(setting User)"
check "ProtectSystem=strict" test "$(setting ProtectSystem)" = strict
check "NoNewPrivileges=yes" test "$(setting NoNewPrivileges)" = yes
check "CapabilityBoundingSet= (empty)" grep -Eq '^CapabilityBoundingSet=$' "$unit"
finish
