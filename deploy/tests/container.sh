#!/usr/bin/env bash
# deploy/container/Dockerfile without a container engine: performs its runtime stage on the host, reading every
# step from the Dockerfile itself so that the two stay in step.
# - `cmake --install --strip` into a staging root, where the runtime stage's COPY --from=build takes the binary;
# - `ldd` on it: the shared libraries, mapped to Debian packages with `dpkg -S`, must be exactly the packages the
#   runtime stage's `apt-get install` names (none missing, none extra), and none may be "not found";
# - the configuration files the runtime stage COPYs, at the path its CMD names, pass `pgward --check-config`;
# - the binary runs as the Dockerfile's USER (uid:gid, no capabilities) with ENTRYPOINT + CMD, on free ports
#   instead of 6432/9930 (the only change), answers /health/live, the HEALTHCHECK command passes, and SIGTERM
#   makes it exit 0; afterwards the HEALTHCHECK command fails.
source "$(dirname "$0")/lib.sh"
need_build
dockerfile="${PGWARD_DOCKERFILE:-$DEPLOY_DIR/container/Dockerfile}"

# The Dockerfile with continuation lines joined and comments dropped; the runtime stage is what follows the last
# FROM, the build stage what precedes it.
joined="$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$dockerfile" | grep -v '^\s*#')"
runtime="$(awk '/^FROM /{buf=""} {buf = buf $0 "\n"} END{printf "%s", buf}' <<<"$joined")"
build_stage="$(awk '/^FROM /{n++} n == 1' <<<"$joined")"
instruction() { grep -E "^$1 " <<<"$runtime" | sed -E "s/^$1 +//"; }
json_args() { "$PYTHON" -c 'import json, sys; print("\n".join(json.loads(sys.stdin.read())))'; }

packages="$(instruction RUN | grep -o 'apt-get install [^&]*' | head -n 1 | tr -s ' ' '\n' \
  | grep -Ev '^(apt-get|install|-.*|)$' | sort -u)"
binary_src="$(instruction COPY | grep -- '--from=build' | awk '{print $2}')"
binary_dst="$(instruction COPY | grep -- '--from=build' | awk '{print $3}')"
user="$(instruction USER)"
uid="${user%%:*}"
gid="${user##*:}"
mapfile -t entrypoint < <(instruction ENTRYPOINT | json_args)
mapfile -t cmd < <(instruction CMD | json_args)
mapfile -t healthcheck < <(instruction HEALTHCHECK | sed -E 's/.*CMD +//' | json_args)
check "the runtime stage installs packages ($(echo $packages))" test -n "$packages"
# The build stage compiles with what scripts/install-deps.sh gives the test machines, so this build is its build.
build_packages="$(grep -o 'apt-get install [^&]*' <<<"$build_stage" | head -n 1 | tr -s ' ' '\n' \
  | grep -Ev '^(apt-get|install|-.*|)$' | sort -u)"
not_in_deps="$(for p in $build_packages; do grep -qE "(^|[ (])$p( |$)" "$REPO_DIR/scripts/install-deps.sh" || echo "$p"; done)"
check "the build stage's packages are among scripts/install-deps.sh's${not_in_deps:+ (not there: $(echo $not_in_deps))}" \
  test -n "$build_packages" -a -z "$not_in_deps"
check "the runtime stage copies the binary from the build stage ($binary_src -> $binary_dst)" \
  test -n "$binary_src" -a -n "$binary_dst"
check "the runtime stage runs as a numeric non-root uid:gid ($user)" \
  bash -c '[[ "$0" =~ ^[1-9][0-9]*$ && "$1" =~ ^[1-9][0-9]*$ ]]' "$uid" "$gid"
check "HEALTHCHECK asks /health/live" grep -q '/health/live' <<<"${healthcheck[*]}"
stop_signal="$(instruction STOPSIGNAL)"
stop_signal="${stop_signal:-SIGTERM}"
check "the stop signal is SIGTERM, which drains ($stop_signal)" test "$stop_signal" = SIGTERM

# The build stage's install, into the staging root standing for the image's file system.
stage="$TMP/image"
if out="$(cmake --install "$BUILD_DIR" --prefix "$stage/usr/local" --strip 2>&1)"; then
  ok "cmake --install --strip into the staging root"
else
  bad "cmake --install: $out"
fi
check "cmake --install puts the binary where COPY --from=build takes it ($binary_src)" test -x "$stage$binary_src"
installed="$(find "$stage" -type f | sed "s|^$stage||" | sort)"
# pgward-io_uring beside it when the build has it (cmake/io_uring.cmake); the image takes pgward only.
installed="$(grep -vx "$(dirname "$binary_src")/pgward-io_uring" <<<"$installed" || true)"
check "cmake --install installs the binary only, and pgward-io_uring ($(echo $installed))" \
  test "$installed" = "$binary_src"
mkdir -p "$stage$(dirname "$binary_dst")"
[ "$binary_src" = "$binary_dst" ] || cp "$stage$binary_src" "$stage$binary_dst"

# Shared libraries -> Debian packages.
package_of() {
  local path="$1" candidate found
  for candidate in "$path" "$(readlink -f "$path")" "${path#/usr}" "/usr$path"; do
    found="$(dpkg -S "$candidate" 2>/dev/null | grep -v '^diversion' | head -n 1 | cut -d: -f1)" || true
    [ -n "$found" ] && { echo "$found"; return 0; }
  done
  echo "?$path"
}
libraries="$(ldd "$stage$binary_dst")"
if grep -q 'not found' <<<"$libraries"; then bad "ldd: libraries not found: $(grep 'not found' <<<"$libraries")"; fi
needed="$(grep -oE '/[^ ]+' <<<"$libraries" | while read -r lib; do package_of "$lib"; done | sort -u)"
missing="$(comm -23 <(echo "$needed") <(echo "$packages") | tr '\n' ' ')"
extra="$(comm -13 <(echo "$needed") <(echo "$packages") | tr '\n' ' ')"
check "every library ldd names comes from a package the runtime stage installs${missing:+ (missing: $missing)}" \
  test -z "$missing"
check "the runtime stage installs no package the binary does not need${extra:+ (extra: $extra)}" test -z "$extra"

# The configuration files, where the runtime stage COPYs them.
while read -r line; do
  read -ra words <<<"$line"
  dest="${words[-1]}"
  mkdir -p "$stage$dest"
  for src in "${words[@]:0:${#words[@]}-1}"; do cp "$REPO_DIR/$src" "$stage$dest"; done
done < <(instruction COPY | grep -v -- '--from=')
config="${cmd[-1]}"
check "CMD names a configuration file the image has ($config)" test -f "$stage$config"
# Secrets the default configuration reads from the environment ("env:VAR"), given as `docker run -e` would.
env_vars=()
for var in $(grep -rhoE '"env:[A-Za-z_][A-Za-z0-9_]*"' "$stage/etc" | sed -E 's/"env:(.*)"/\1/' | sort -u); do
  env_vars+=("$var=stand-in")
done
if out="$(env -i "${env_vars[@]}" "$stage$binary_dst" --check-config "$stage$config" 2>&1)"; then
  ok "pgward --check-config accepts the image's configuration"
else
  bad "pgward --check-config: $out"
fi

# Run it as the container would, but on free ports.
proxy_port="$(free_port)"
admin_port="$(free_port)"
sed -i -E "s/^(listen = \"[^\"]*):6432\"/\1:$proxy_port\"/; s/^(listen = \"[^\"]*):9930\"/\1:$admin_port\"/" \
  "$stage$config"
check "the image's configuration listens on 6432 and 9930 (now $proxy_port and $admin_port)" \
  test "$(grep -cE "^listen = \".*:($proxy_port|$admin_port)\"" "$stage$config")" = 2
chmod -R a+rX "$stage"
args=()
for a in "${entrypoint[@]}" "${cmd[@]}"; do
  if [[ "$a" == /* ]]; then args+=("$stage$a"); else args+=("$a"); fi
done
setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --bounding-set=-all \
  env -i "${env_vars[@]}" "${args[@]}" >"$TMP/pgward.log" 2>&1 &
pid=$!
cleanup_hooks+=("kill -KILL $pid; wait $pid")
if wait_status "$admin_port" /health/live 200; then
  ok "/health/live answers 200"
else
  bad "/health/live does not answer 200: $(cat "$TMP/pgward.log")"
fi
check "pgward runs as uid $uid" test "$(ps -o uid= -p "$pid" | tr -d ' ')" = "$uid"
health=("${healthcheck[@]//9930/$admin_port}")
check "the HEALTHCHECK command passes (as uid $uid)" \
  setpriv --reuid="$uid" --regid="$gid" --clear-groups "${health[@]}"
kill -s "${stop_signal#SIG}" "$pid"
rc=0
timeout 30 tail --pid="$pid" -f /dev/null || true
wait "$pid" || rc=$?
check "$stop_signal: pgward drains and exits 0" test "$rc" = 0
if setpriv --reuid="$uid" --regid="$gid" --clear-groups "${health[@]}" 2>/dev/null; then
  bad "the HEALTHCHECK command passes with pgward stopped"
else
  ok "the HEALTHCHECK command fails with pgward stopped"
fi
finish
