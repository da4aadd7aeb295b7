#!/usr/bin/env bash
# PostgreSQL's own regression suite (the installcheck schedule of the installed server's version) run three times:
# straight against PostgreSQL, through pgward in session mode, and through pgward in transaction mode. Each run gets
# a fresh cluster, so nothing one run leaves behind (roles, databases, pooled connections) can reach the next.
#
# Prints a table of every test that fails somewhere and exits non-zero when a test fails that
# tests/regress/expected-differences.txt does not list for that mode (a test that fails directly is listed under
# "direct"; a test that also fails directly is never held against pgward).
#
# Environment:
#   PGWARD_BINARY=/path/to/pgward   test this binary instead of building ./build/app/pgward
#   REGRESS_MODES="direct session transaction"   the runs to make (direct is needed for the comparison)
#   REGRESS_OUT=DIR                 where each run's regression.out/.diffs/results go (default build/regress)
#   REGRESS_CACHE=DIR               where the Debian source of the regression files is kept (default
#                                   /var/cache/pgward-regress)
#   REGRESS_MAX_CONNECTIONS=N       tests run at once within a parallel group (default 1: `make installcheck`'s
#                                   serial order, which keeps the pooled runs deterministic)
#   REGRESS_EXPECTED=FILE           the list of expected differences (default tests/regress/expected-differences.txt)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
. scripts/lib-postgres.sh

modes="${REGRESS_MODES:-direct session transaction}"
out_root="${REGRESS_OUT:-$root/build/regress}"
cache="${REGRESS_CACHE:-/var/cache/pgward-regress}"
max_connections="${REGRESS_MAX_CONNECTIONS:-1}"
expected_file="${REGRESS_EXPECTED:-$root/tests/regress/expected-differences.txt}"
pg_regress=/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress

log() { echo "regress: $*"; }
die() { echo "regress: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------------------------
# What the suite needs: pg_regress (postgresql-client-15), the server headers to build regress.so
# (postgresql-server-dev-15, pinned to the installed server's version so apt never upgrades the server under us),
# and the regression files themselves, from Debian's source package of exactly that version.

server_version="$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)"
[ -n "$server_version" ] || die "postgresql-15 is not installed (run scripts/install-deps.sh)"
upstream_version="${server_version%%-*}"

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing packages or sources; run as root"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
}

install_pinned() {  # install_pinned PACKAGE: PACKAGE at the installed server's version
  local p="$1"
  if [ "$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null)" != "install ok installed $server_version" ]; then
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p=$server_version" >/dev/null
  fi
}
install_pinned postgresql-client-15
install_pinned postgresql-server-dev-15
[ -x "$pg_regress" ] || die "$pg_regress not found"
command -v cc >/dev/null || die "no C compiler (run scripts/install-deps.sh)"

# The deb-src entries mirror the machine's Debian mirror (deb.debian.org when none is found).
# grep reads everything (no -q): an early exit would make apt-cache die of SIGPIPE and fail the pipeline.
has_source() { apt-cache showsrc postgresql-15 2>/dev/null | grep -x "Version: $server_version" >/dev/null; }
ensure_deb_src() {
  if has_source; then return; fi
  apt_update_once
  if has_source; then return; fi
  local codename mirror security
  codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
  mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)"
  security="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian-security/?( |$)' | head -n1 | tr -d ' ' || true)"
  cat >/etc/apt/sources.list.d/pgward-regress-src.sources <<EOF
# Source packages, for tests/regress/run.sh (PostgreSQL's regression files).
Types: deb-src
URIs: ${mirror:-http://deb.debian.org/debian}
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: ${security:-http://deb.debian.org/debian-security}
Suites: $codename-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  has_source || die "the archive has no source of postgresql-15 $server_version"
}

# $cache/$server_version/regress holds src/test/regress of that version plus regress.so built against it.
src="$cache/$server_version/regress"
if [ ! -f "$src/.complete" ]; then
  ensure_deb_src
  log "fetching the regression files of PostgreSQL $server_version (Debian source package)"
  dl="$cache/$server_version/download"
  rm -rf "$cache/$server_version"
  mkdir -p "$dl"
  (cd "$dl" && apt-get source -qq --download-only "postgresql-15=$server_version" 2>&1 |
    grep -v 'Download is performed unsandboxed' || true)
  orig="$(ls "$dl"/postgresql-15_"$upstream_version".orig.tar.* 2>/dev/null | head -n1)"
  [ -n "$orig" ] || die "apt-get source did not download postgresql-15 $server_version"
  debian_tar="$(ls "$dl"/postgresql-15_"$server_version".debian.tar.* | head -n1)"
  if tar -xOf "$debian_tar" --wildcards 'debian/patches/*' | grep '^+++ .*src/test/regress/' >/dev/null; then
    # Debian patches the regression files: unpack and patch the whole tree (needs dpkg-dev).
    dpkg -s dpkg-dev >/dev/null 2>&1 || { apt_update_once; apt-get install -y -qq dpkg-dev >/dev/null; }
    (cd "$dl" && dpkg-source -x --skip-debianization "postgresql-15_$server_version.dsc" tree >/dev/null)
    mv "$dl/tree/src/test/regress" "$src"
  else
    tar -xf "$orig" -C "$dl" "postgresql-$upstream_version/src/test/regress"
    mv "$dl/postgresql-$upstream_version/src/test/regress" "$src"
  fi
  rm -rf "$dl"
  # regress.so: the C functions the suite loads (test_setup creates them from PG_LIBDIR/regress.so).
  cc -O2 -fPIC -shared -I"$(/usr/lib/postgresql/15/bin/pg_config --includedir-server)" \
    -o "$src/regress.so" "$src/regress.c"
  chmod -R a+rX "$cache"
  touch "$src/.complete"
fi
# triggers loads contrib's autoinc and refint from the same directory as regress.so (the server package has them).
for lib in autoinc refint; do ln -sf "/usr/lib/postgresql/15/lib/$lib.so" "$src/$lib.so"; done
schedule="$src/parallel_schedule"
# The server (the "postgres" user) reads data/ and regress.so from here.
chmod a+rx "$cache" "$cache/$server_version"

# ---------------------------------------------------------------------------------------------------------------
# pgward itself.

binary="${PGWARD_BINARY:-}"
if [ -z "$binary" ]; then
  bash scripts/build.sh pgward >/dev/null
  binary="$root/build/app/pgward"
fi
[ -x "$binary" ] || die "pgward binary $binary not found"
binary="$(realpath "$binary")"

# ---------------------------------------------------------------------------------------------------------------
# One run: a fresh cluster, pgward in front of it (unless direct), pg_regress into $out_root/$mode.

tmp_dirs=()
pgward_pid=""
cleanup() {
  [ -n "$pgward_pid" ] && kill "$pgward_pid" 2>/dev/null && wait "$pgward_pid" 2>/dev/null
  for d in "${tmp_dirs[@]}"; do pg_stop "$d"; rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for_port() {  # wait_for_port PORT PID: until something accepts on PORT, or PID dies
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

declare -A seconds
run_mode() {
  local mode="$1" dir pg_port port out start status=0
  dir="$(mktemp -d /tmp/pgward-regress.XXXXXX)"
  chmod 755 "$dir"
  tmp_dirs+=("$dir")
  out="$out_root/$mode"
  rm -rf "$out"
  mkdir -p "$out"
  # pg_regress runs as the postgres user: the server writes into its results/ (COPY ... TO a file), so that user
  # must reach the tree and own the output directory.
  if [ "$(id -u)" -eq 0 ]; then
    chmod o+rx "$root" 2>/dev/null || true
    chown postgres: "$out"
  fi

  pg_port="$(free_port)"
  pg_start "$dir" "$pg_port"
  port="$pg_port"
  if [ "$mode" != direct ]; then
    port="$(free_port)"
    # Trust towards clients and towards the server (initdb -A trust): the suite logs in as postgres and as the
    # regress_* roles it creates. pg_regress itself connects to "postgres" to create "regression".
    cat >"$dir/pgward.toml" <<TOML
[proxy]
listen = "127.0.0.1:$port"

[admin]
listen = "127.0.0.1:$(free_port)"

[auth]
type = "trust"

[pool]
mode = "$mode"
size = 40

[[database]]
name = "regression"
host = "127.0.0.1"
port = $pg_port

[[database]]
name = "postgres"
host = "127.0.0.1"
port = $pg_port
TOML
    "$binary" --config "$dir/pgward.toml" >"$dir/pgward.log" 2>&1 &
    pgward_pid=$!
    wait_for_port "$port" "$pgward_pid" || { cat "$dir/pgward.log" >&2; die "pgward did not start ($mode)"; }
  fi

  log "$mode: running the suite (output in $out)"
  start=$SECONDS
  pg_as_owner "$pg_regress" --inputdir="$src" --outputdir="$out" --bindir=/usr/lib/postgresql/15/bin \
    --dlpath="$src" --schedule="$schedule" --max-concurrent-tests=20 --max-connections="$max_connections" \
    --host=127.0.0.1 --port="$port" --user=postgres --encoding=UTF8 --no-locale \
    >"$out/pg_regress.log" 2>&1 || status=$?
  seconds[$mode]=$((SECONDS - start))

  if [ -n "$pgward_pid" ]; then
    if ! kill -0 "$pgward_pid" 2>/dev/null; then
      log "$mode: pgward exited during the run"
      echo "pgward exited during the run" >>"$out/pg_regress.log"
    fi
    kill "$pgward_pid" 2>/dev/null || true
    wait "$pgward_pid" 2>/dev/null || true
    pgward_pid=""
    cp "$dir/pgward.log" "$out/pgward.log"
  fi
  cp "$dir/postgres.log" "$out/postgres.log"
  pg_stop "$dir"
  rm -rf "$dir"

  # pg_regress's output (regression.out is removed when every test passes): "test NAME ... ok 12 ms" or
  # "     NAME ... FAILED 12 ms" (and "failed (ignored)").
  awk '/ \.\.\. / { sub(/^test /, "     "); name = $1; st = ($3 == "ok") ? "ok" : "FAILED"; print name "\t" st }' \
    "$out/pg_regress.log" >"$out/results.tsv"
  if [ ! -s "$out/results.tsv" ]; then
    tail -n 20 "$out/pg_regress.log" >&2
    die "$mode: pg_regress ran no test"
  fi
  log "$mode: $(grep -c $'\tok$' "$out/results.tsv") passed, $(grep -c $'\tFAILED$' "$out/results.tsv") failed" \
    "in ${seconds[$mode]} s (pg_regress exit $status)"
}

for mode in $modes; do
  case "$mode" in direct | session | transaction | statement) ;; *) die "unknown mode $mode" ;; esac
  run_mode "$mode"
done

# ---------------------------------------------------------------------------------------------------------------
# Compare. expected-differences.txt: "MODES TEST REASON", MODES a comma-separated list of direct, session,
# transaction; # starts a comment.

declare -A expected
if [ -f "$expected_file" ]; then
  while read -r ms test _; do
    [ -z "$ms" ] || [[ "$ms" == \#* ]] && continue
    for m in ${ms//,/ }; do expected["$m/$test"]=1; done
  done <"$expected_file"
fi

declare -A result
all_tests=()
while read -r t; do all_tests+=("$t"); done < <(grep -oE '^test: .*' "$schedule" | cut -d' ' -f2- | tr ' ' '\n')
for mode in $modes; do
  while IFS=$'\t' read -r t st; do result["$mode/$t"]="$st"; done <"$out_root/$mode/results.tsv"
done

status_of() { echo "${result[$1/$2]:-missing}"; }
unexpected=()
stale=()
declare -A diverges
for mode in $modes; do
  for t in "${all_tests[@]}"; do
    st="$(status_of "$mode" "$t")"
    if [ "$st" != ok ]; then
      # A test that fails directly too says nothing about pgward.
      if [ "$mode" != direct ] && [[ " $modes " == *" direct "* ]] && [ "$(status_of direct "$t")" != ok ]; then
        continue
      fi
      diverges["$t"]=1
      [ -n "${expected[$mode/$t]:-}" ] || unexpected+=("$mode/$t")
    elif [ -n "${expected[$mode/$t]:-}" ]; then
      stale+=("$mode/$t")
    fi
  done
done

echo
printf '%-28s' test; for mode in $modes; do printf ' %-12s' "$mode"; done; printf ' %s\n' note
for t in "${all_tests[@]}"; do
  [ -n "${diverges[$t]:-}" ] || continue
  printf '%-28s' "$t"
  note=""
  for mode in $modes; do
    st="$(status_of "$mode" "$t")"
    printf ' %-12s' "$st"
    if [ "$st" != ok ] && [ -z "${expected[$mode/$t]:-}" ]; then note="UNEXPECTED"; fi
  done
  [ -n "$note" ] || note="expected"
  printf ' %s\n' "$note"
done
echo
if [[ " $modes " == *" session "* ]]; then
  list=()
  for t in "${all_tests[@]}"; do
    [ "$(status_of session "$t")" != ok ] && [ "$(status_of direct "$t")" = ok ] && list+=("$t")
  done
  echo "failing in session mode, passing directly (${#list[@]}): ${list[*]:-none}"
fi
if [[ " $modes " == *" transaction "* ]]; then
  list=()
  for t in "${all_tests[@]}"; do
    [ "$(status_of transaction "$t")" != ok ] && [ "$(status_of session "$t")" = ok ] && list+=("$t")
  done
  echo "failing in transaction mode, passing in session mode (${#list[@]}): ${list[*]:-none}"
fi
echo
printf 'time:'; for mode in $modes; do printf ' %s %ss' "$mode" "${seconds[$mode]}"; done; echo
echo "diffs: $out_root/<mode>/regression.diffs"
if [ "${#stale[@]}" -gt 0 ]; then
  echo "listed in $(basename "$expected_file") but passing now (the entry can go): ${stale[*]}"
fi
if [ "${#unexpected[@]}" -gt 0 ]; then
  echo "UNEXPECTED failures (not in $(basename "$expected_file")): ${unexpected[*]}"
  exit 1
fi
echo "regress: every failure is an expected one"
