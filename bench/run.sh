#!/usr/bin/env bash
# Side-by-side benchmark: pgbench against PostgreSQL directly, through pgward and through PgBouncer.
# One command: bash bench/run.sh   (see bench/README.md for the knobs)
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
# The PgBouncer to compare with: the anchor build beside the repository (shared/anchors) when there is one, else
# the machine's (Debian's 1.18); BENCH_PGBOUNCER chooses another binary.
pgb_bin="${BENCH_PGBOUNCER:-}"
if [ -z "$pgb_bin" ]; then
  pgb_bin=pgbouncer
  [ -x "$repo/../shared/anchors/pgbouncer-1.25.2" ] && pgb_bin="$(cd "$repo/../shared/anchors" && pwd)/pgbouncer-1.25.2"
fi
pgb_version="$("$pgb_bin" --version 2>/dev/null | head -1)"

# ---------------------------------------------------------------- knobs
quick="${BENCH_QUICK:-0}"
if [ "$quick" = 1 ]; then
  duration="${BENCH_DURATION:-3}"
  reps="${BENCH_REPS:-1}"
else
  duration="${BENCH_DURATION:-15}"
  reps="${BENCH_REPS:-3}"
fi
scale="${BENCH_SCALE:-10}"
workers_list="${BENCH_WORKERS:-1}"
# The event loops to run pgward on ([proxy] io_backend): epoll, and io_uring where pgward-io_uring was built.
backends="${BENCH_BACKENDS:-epoll io_uring}"
idle_count="${BENCH_IDLE_CONNS:-10000}"
pool_size=16
all_scenarios="select-simple-c1 select-simple-c16 select-simple-c256
select-extended-c1 select-extended-c16 select-extended-c256
select-prepared-c1 select-prepared-c16 select-prepared-c256
tpcb-simple-c16 tpcb-prepared-c16 select1-c16 idle10k-select-c16 copy-out-c4 copy-in-c4"
quick_scenarios="select-simple-c1 select-simple-c256 select-extended-c16 select-prepared-c16 tpcb-simple-c16
select1-c16 idle10k-select-c16"
# BENCH_TLS=1: every connection is TLS, client to proxy and proxy to PostgreSQL (direct: client to PostgreSQL).
tls="${BENCH_TLS:-0}"
tls_scenarios="select-simple-c16 select-extended-c16 copy-out-c4 copy-in-c4"
copy_rows="${BENCH_COPY_ROWS:-200000}"
if [ -n "${BENCH_SCENARIOS:-}" ]; then
  scenarios="$BENCH_SCENARIOS"
elif [ "$tls" = 1 ]; then
  scenarios="$tls_scenarios"
elif [ "$quick" = 1 ]; then
  scenarios="$quick_scenarios"
else
  scenarios="$all_scenarios"
fi
scenarios="$(echo $scenarios)"   # one line, single spaces
n_scen=$(wc -w <<<"$scenarios")
n_workers=$(wc -w <<<"$workers_list")
n_backends=$(wc -w <<<"$backends")
# Whole-run budget: every step below has its own timeout; past this many seconds the remaining runs are skipped.
estimate=$(( reps * n_scen * (2 + n_workers * n_backends) * (duration + 12) ))
max_seconds="${BENCH_MAX_SECONDS:-$(( estimate * 2 + 600 ))}"

PGBENCH="${PG_BIN:-/usr/lib/postgresql/15/bin}/pgbench"
. scripts/lib-postgres.sh
. bench/lib.sh

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- install and build
log "installing packages (PGWARD_WITH_BENCH=1)"
if ! PGWARD_WITH_BENCH=1 timeout 1200 bash scripts/install-deps.sh >&2; then
  log "install-deps failed; carrying on with what is installed"
fi
log "building pgward"
build_note=""
build_targets=(pgward)
[[ " $backends " == *" io_uring "* ]] && build_targets+=(pgward-io_uring)
if ! timeout 3600 bash scripts/build.sh "${build_targets[@]}" >&2; then
  if [ -x build/app/pgward ]; then
    build_note="the build failed; the previously built binary was used (it may not match the working tree)"
  else
    build_note="the build failed and there is no binary"
  fi
  log "$build_note"
fi
pgward_bin="$repo/build/app/pgward"

# File descriptors: 10k idle clients need 10k+ in the proxy and in the helper. Take as many as we may.
# Root may raise the hard limit; where it may not (a container), take the hard limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "open files limit: $(ulimit -n)"

# ---------------------------------------------------------------- temp dir, cleanup
dir="$(mktemp -d /tmp/pgward-bench.XXXXXX)"
chmod 755 "$dir"
mkdir -p "$dir/logs" "$dir/out"
start_epoch=$(date +%s)
declare -A PORT=() PID=() DOWN_REASON=()
helper_pid=""

cleanup() {
  trap - EXIT INT TERM
  [ -n "$helper_pid" ] && kill "$helper_pid" 2>/dev/null
  for t in "${!PID[@]}"; do
    [ -n "${PID[$t]}" ] && kill -INT "${PID[$t]}" 2>/dev/null
  done
  sleep 0.5
  for t in "${!PID[@]}"; do
    [ -n "${PID[$t]}" ] && kill -KILL "${PID[$t]}" 2>/dev/null
  done
  [ -n "${pgb_runuser_pid:-}" ] && kill "$pgb_runuser_pid" 2>/dev/null
  wait 2>/dev/null
  pg_stop "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- PostgreSQL
pg_port="$(free_port)"
log "starting PostgreSQL 15 on 127.0.0.1:$pg_port (data in $dir)"
pg_start "$dir" "$pg_port" || { log "PostgreSQL failed to start:"; cat "$dir/postgres.log" >&2; exit 1; }
# Direct runs with 256 clients plus every proxy's pool: raise max_connections (the last setting wins).
cat >>"$dir/data/postgresql.conf" <<CONF
max_connections = 500
CONF
tls_dir="$dir/tls"
if [ "$tls" = 1 ]; then
  # A CA and a certificate for 127.0.0.1 made for this run, used by PostgreSQL, pgward and PgBouncer alike; TCP
  # connections to PostgreSQL must be TLS (hostssl only), and every client asks for it (PGSSLMODE).
  log "TLS on both sides: making a certificate for 127.0.0.1"
  mkdir -p "$tls_dir"
  if ! (cd "$tls_dir" &&
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pgward bench CA" -keyout ca.key -out ca.crt &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr &&
    printf 'subjectAltName=IP:127.0.0.1\n' >server.ext &&
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext \
      -out server.crt) >"$dir/tls.log" 2>&1; then
    log "making the certificate failed:"; cat "$dir/tls.log" >&2; exit 1
  fi
  chmod 600 "$tls_dir"/*.key
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$tls_dir"
  cat >>"$dir/data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = '$tls_dir/server.crt'
ssl_key_file = '$tls_dir/server.key'
CONF
  sed -i 's/^host\([[:space:]]\)/hostssl\1/' "$dir/data/pg_hba.conf"
  export PGSSLMODE=require
fi
pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w restart >/dev/null ||
  { log "PostgreSQL failed to restart:"; tail -20 "$dir/postgres.log" >&2; exit 1; }
pg_sql "$dir" "$pg_port" "CREATE DATABASE bench" || exit 1
log "pgbench -i -s $scale"
timeout 900 "$PGBENCH" -i -s "$scale" -q -h "$dir" -p "$pg_port" -U postgres bench >"$dir/init.log" 2>&1 ||
  { log "pgbench -i failed:"; cat "$dir/init.log" >&2; exit 1; }
pg_sql "$dir" "$pg_port" "VACUUM ANALYZE" >/dev/null 2>&1 || true
# COPY scenarios: the first copy_rows rows of pgbench_accounts, out of the table and into an unlogged copy of it.
copy_out_sql="COPY (SELECT * FROM pgbench_accounts WHERE aid <= $copy_rows ORDER BY aid) TO STDOUT"
copy_in_sql="COPY copy_sink FROM STDIN"
bench_sql() { psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$pg_port" -U postgres -d bench "$@"; }
bench_sql -c "CREATE UNLOGGED TABLE copy_sink (LIKE pgbench_accounts)" &&
  bench_sql -c "$copy_out_sql" >"$dir/copy.dat" || { log "preparing the COPY data failed"; exit 1; }
copy_bytes=$(stat -c %s "$dir/copy.dat")
tls_note=""
if [ "$tls" = 1 ]; then
  tls_note="$(psql -X -At -h 127.0.0.1 -p "$pg_port" -U postgres -d bench \
    -c "SELECT version || ' ' || cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>&1)"
  log "direct TLS: $tls_note"
fi
echo 'SELECT 1;' >"$dir/select1.sql"
# Pin the binaries: a rebuild in the work tree during the run must not change what a restart would start.
# pgward-io_uring goes beside pgward, where pgward finds it.
if [ -x "$pgward_bin" ]; then
  mkdir -p "$dir/bin" && cp "$pgward_bin" "$dir/bin/pgward"
  [ -x "$(dirname "$pgward_bin")/pgward-io_uring" ] && cp "$(dirname "$pgward_bin")/pgward-io_uring" "$dir/bin/"
  pgward_bin="$dir/bin/pgward"
fi
PORT[direct]=$pg_port
PID[direct]=""

# ---------------------------------------------------------------- helpers
wait_port() {  # wait_port PORT SECONDS PID
  local port="$1" secs="$2" pid="$3" i
  for ((i = 0; i < secs * 10; i++)); do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

probe() {  # probe PORT: one query through the target
  PGCONNECT_TIMEOUT=5 timeout 15 psql -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d bench -c 'SELECT 1' 2>&1
}

# probe_started TARGET PORT: a target that started must also answer; records why not.
probe_started() {
  local out
  if ! out="$(probe "$2")"; then
    DOWN_REASON[$1]="started but SELECT 1 failed: $(echo "$out" | tr '\n' ' ')"
    return 1
  fi
  return 0
}

proxy_alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

start_pgward() {  # start_pgward TARGET WORKERS BACKEND
  local t="$1" w="$2" b="$3" port admin_port
  port="$(free_port)"
  admin_port="$(free_port)"
  mkdir -p "$dir/$t"
  cat >"$dir/$t/pgward.toml" <<TOML
[proxy]
listen = "127.0.0.1:$port"
max_client_conn = 11000
workers = $w
io_backend = "$b"
log_level = "warn"

[admin]
listen = "127.0.0.1:$admin_port"

[auth]
type = "trust"

[pool]
mode = "transaction"
size = $pool_size

[[database]]
name = "bench"
host = "127.0.0.1"
port = $pg_port
TOML
  if [ "$tls" = 1 ]; then
    cat >>"$dir/$t/pgward.toml" <<TOML

[client_tls]
mode = "require"
cert_file = "$tls_dir/server.crt"
key_file = "$tls_dir/server.key"

[server_tls]
mode = "require"
TOML
  fi
  if [ ! -x "$pgward_bin" ]; then
    DOWN_REASON[$t]="no binary at $pgward_bin"
    return 1
  fi
  "$pgward_bin" --config "$dir/$t/pgward.toml" >>"$dir/$t/pgward.log" 2>&1 &
  PID[$t]=$!
  PORT[$t]=$port
  if ! wait_port "$port" 20 "${PID[$t]}"; then
    DOWN_REASON[$t]="did not start: $(tail -5 "$dir/$t/pgward.log" | tr '\n' ' ')"
    kill -KILL "${PID[$t]}" 2>/dev/null
    PID[$t]=""
    return 1
  fi
  probe_started "$t" "$port"
}

pgb_runuser_pid=""
start_pgbouncer() {
  local t=pgbouncer port d="$dir/pgbouncer"
  if ! command -v "$pgb_bin" >/dev/null; then
    DOWN_REASON[$t]="pgbouncer is not installed"
    return 1
  fi
  # PgBouncer 1.21 and later pool protocol-level prepared statements too: give it the same cache as pgward.
  local prepared=""
  case "$pgb_version" in
    *" 1.1"[0-9]* | *" 1.20"*) ;;
    *) prepared="max_prepared_statements = 200" ;;
  esac
  port="$(free_port)"
  bench_pgbouncer_ini "$d" "$port" "$pg_port" "$pool_size" "listen_backlog = 4096" "admin_users = postgres" \
    "max_client_conn = 11000" "log_pooler_errors = 1" "log_stats = 0" "stats_period = 3600" "$prepared"
  if [ "$tls" = 1 ]; then
    cat >>"$d/pgbouncer.ini" <<INI
client_tls_sslmode = require
client_tls_cert_file = $tls_dir/server.crt
client_tls_key_file = $tls_dir/server.key
server_tls_sslmode = require
INI
  fi
  chown -R postgres: "$d"
  rm -f "$d/pgbouncer.pid"
  if [ "$(id -u)" -eq 0 ]; then
    # runuser goes through PAM, which may lower the soft open-files limit again: raise it inside.
    runuser -u postgres -- sh -c 'ulimit -n "$1" 2>/dev/null; exec "$2" "$3"' sh "$(ulimit -n)" \
      "$pgb_bin" "$d/pgbouncer.ini" >>"$d/stderr.log" 2>&1 &
  else
    "$pgb_bin" "$d/pgbouncer.ini" >>"$d/stderr.log" 2>&1 &
  fi
  pgb_runuser_pid=$!
  PORT[$t]=$port
  local i
  for ((i = 0; i < 100; i++)); do
    [ -s "$d/pgbouncer.pid" ] && break
    kill -0 "$pgb_runuser_pid" 2>/dev/null || break
    sleep 0.1
  done
  PID[$t]="$(cat "$d/pgbouncer.pid" 2>/dev/null)"
  if [ -z "${PID[$t]}" ] || ! wait_port "$port" 20 "${PID[$t]}"; then
    DOWN_REASON[$t]="did not start: $(cat "$d/stderr.log" 2>/dev/null; tail -5 "$d/pgbouncer.log" 2>/dev/null)"
    DOWN_REASON[$t]="$(echo "${DOWN_REASON[$t]}" | tr '\n' ' ')"
    PID[$t]=""
    return 1
  fi
  probe_started "$t" "$port"
}

start_target() {
  case "$1" in
    pgward*) start_pgward "$1" "${WORKERS[$1]}" "${BACKEND[$1]}" ;;
    pgbouncer) start_pgbouncer ;;
  esac
}

cpu_ticks() {  # utime+stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat)
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo ""; return; }
  stat="${stat##*) }"     # fields from 3 on
  awk '{print $12 + $13}' <<<"$stat"
}
status_kb() {  # status_kb PID FIELD
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null
}

# ---------------------------------------------------------------- targets
declare -A WORKERS=() BACKEND=()
targets=(direct)
for b in $backends; do
  for w in $workers_list; do
    t=pgward
    [ "$n_backends" -gt 1 ] && t+="-$b"
    [ "$n_workers" -gt 1 ] && t+="-w$w"
    WORKERS[$t]=$w
    BACKEND[$t]=$b
    targets+=("$t")
  done
done
targets+=(pgbouncer)
declare -a active=()
for t in "${targets[@]}"; do
  if [ "$t" = direct ]; then active+=(direct); continue; fi
  log "starting $t"
  if start_target "$t"; then
    log "$t listening on 127.0.0.1:${PORT[$t]} (pid ${PID[$t]}, open files limit $(awk '/Max open files/ {print $4}' "/proc/${PID[$t]}/limits"))"
    active+=("$t")
  else
    log "$t unavailable: ${DOWN_REASON[$t]}"
    log "carrying on without $t"
  fi
done

# ---------------------------------------------------------------- one run
results="$dir/results.tsv"
printf 'rep\tscenario\ttarget\tstatus\texit\ttps\tlat_ms\tp99_ms\tfailed_tx\taborted_clients\ttx\tcpu_us_per_tx\trss_kb\thwm_kb\tidle_ok\tnote\n' >"$results"
clk_tck=$(getconf CLK_TCK)

record() {  # record REP SCENARIO TARGET STATUS EXIT TPS LAT P99 FAILED ABORTED TX CPU RSS HWM IDLE NOTE
  local IFS=$'\t'
  echo "$*" >>"$results"
}

scenario_args() {  # sets SC_CLIENTS and SC_ARGS for a scenario name; returns 1 for an unknown one
  local name="$1"
  SC_ARGS=()
  case "$name" in
    select-simple-c*|select-extended-c*|select-prepared-c*)
      local mode="${name#select-}"; mode="${mode%%-*}"
      SC_CLIENTS="${name##*-c}"; SC_ARGS=(-S -M "$mode") ;;
    tpcb-simple-c*|tpcb-prepared-c*)
      local mode="${name#tpcb-}"; mode="${mode%%-*}"
      SC_CLIENTS="${name##*-c}"; SC_ARGS=(-M "$mode") ;;
    select1-c*) SC_CLIENTS="${name##*-c}"; SC_ARGS=(-M simple -f "$dir/select1.sql") ;;
    idle10k-select-c*) SC_CLIENTS="${name##*-c}"; SC_ARGS=(-S -M simple) ;;
    copy-out-c*|copy-in-c*) SC_CLIENTS="${name##*-c}" ;;  # not pgbench: see run_copy
    *) return 1 ;;
  esac
  [[ "$SC_CLIENTS" =~ ^[0-9]+$ ]]
}

stop_helper() {
  if [ -n "$helper_pid" ]; then
    kill "$helper_pid" 2>/dev/null
    wait "$helper_pid" 2>/dev/null
    helper_pid=""
  fi
}

# copy_client KIND PORT DEADLINE_NS RESULT: one client's COPYs (KIND out or in) through PORT, one psql each, started
# until DEADLINE_NS (date +%s%N); writes "OK BAD FIRST_ERROR" to RESULT. A COPY counts only when every byte (out)
# or every row (in) arrived.
copy_client() {
  local kind="$1" port="$2" deadline="$3" res="$4" ok=0 bad=0 err="" got
  while [ "$(date +%s%N)" -lt "$deadline" ]; do
    if [ "$kind" = out ]; then
      got="$(timeout 120 psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c "$copy_out_sql" 2>"$res.err" |
        wc -c)"
      [ "$got" = "$copy_bytes" ] && { ok=$((ok + 1)); continue; }
      got="received $got of $copy_bytes bytes"
    else
      got="$(timeout 120 psql -X -h 127.0.0.1 -p "$port" -U postgres -d bench -c "$copy_in_sql" <"$dir/copy.dat" \
        2>"$res.err")"
      [ "$got" = "COPY $copy_rows" ] && { ok=$((ok + 1)); continue; }
    fi
    bad=$((bad + 1))
    [ -z "$err" ] && err="$got $(head -c 300 "$res.err" | tr '\n' ' ')"
  done
  echo "$ok $bad $err" >"$res"
}

# run_copy REP SCENARIO TARGET PORT PID CLIENTS NOTE: the COPY scenarios. The TPS column carries MB/s of COPY data
# (10^6 bytes), latency is the mean seconds per COPY in ms, CPU is the proxy's µs per MB.
run_copy() {
  local rep="$1" sc="$2" t="$3" port="$4" pid="$5" clients="$6" note="$7" kind i c0="" c1="" rss="" hwm=""
  kind="${sc#copy-}"; kind="${kind%%-*}"
  bench_sql -c "TRUNCATE copy_sink" >/dev/null 2>&1
  rm -f "$dir"/out/copy-*.res*
  [ -n "$pid" ] && c0="$(cpu_ticks "$pid")"
  local start end deadline pids=()
  start=$(date +%s%N)
  deadline=$((start + duration * 1000000000))
  for ((i = 0; i < clients; i++)); do
    copy_client "$kind" "$port" "$deadline" "$dir/out/copy-$i.res" &
    pids+=($!)
  done
  wait "${pids[@]}"
  end=$(date +%s%N)
  if [ -n "$pid" ]; then
    c1="$(cpu_ticks "$pid")"
    rss="$(status_kb "$pid" VmRSS)"
    hwm="$(status_kb "$pid" VmHWM)"
  fi
  local ok=0 bad=0 err="" o b e
  for ((i = 0; i < clients; i++)); do
    { read -r o b e <"$dir/out/copy-$i.res"; } 2>/dev/null || { o=0; b=1; e="client $i wrote no result"; }
    ok=$((ok + o)); bad=$((bad + b))
    [ -z "$err" ] && [ -n "$e" ] && err="$e"
  done
  local mbs lat cpu="" status=ok
  mbs="$(awk -v n="$ok" -v b="$copy_bytes" -v ns=$((end - start)) 'BEGIN {printf "%.1f", n * b / 1e6 / (ns / 1e9)}')"
  lat="$(awk -v n=$((ok + bad)) -v c="$clients" -v ns=$((end - start)) \
    'BEGIN {if (n) printf "%.3f", ns / 1e6 * c / n}')"
  if [ -n "$c0" ] && [ -n "$c1" ] && [ "$ok" -gt 0 ]; then
    cpu="$(awk -v a="$c0" -v b="$c1" -v hz="$clk_tck" -v n="$ok" -v sz="$copy_bytes" \
      'BEGIN {printf "%.2f", (b - a) / hz * 1e6 / (n * sz / 1e6)}')"
  fi
  [ "$bad" -gt 0 ] || [ "$ok" -eq 0 ] && status=errors
  [ -n "$err" ] && note+="$err"
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    status="proxy-died"; note+=" the proxy process exited during the run"
  fi
  note="$(echo "$note" | tr '\t\n' '  ' | sed 's/^ *//; s/[ ;]*$//')"
  record "$rep" "$sc" "$t" "$status" "" "$mbs" "$lat" "" "$bad" 0 "$ok" "$cpu" "$rss" "$hwm" "" "$note"
  log "rep $rep $sc $t: $status ${mbs}MB/s copies=$ok failed=$bad cpu_us/MB=${cpu:--} rss_kb=${rss:--}${note:+ ($note)}"
}

run_one() {  # run_one REP SCENARIO TARGET
  local rep="$1" sc="$2" t="$3" port pid note="" idle_ok=""
  if ! scenario_args "$sc"; then
    log "unknown scenario $sc"
    record "$rep" "$sc" "$t" "unknown-scenario" "" "" "" "" "" "" "" "" "" "" "" ""
    return
  fi
  if [[ "$sc" == idle10k-* ]] && [ "$t" = direct ]; then
    record "$rep" "$sc" "$t" "n/a" "" "" "" "" "" "" "" "" "" "" "" "not run against PostgreSQL directly"
    log "rep $rep $sc $t: n/a"
    return
  fi
  if [ $(( $(date +%s) - start_epoch )) -gt "$max_seconds" ]; then
    record "$rep" "$sc" "$t" "skipped" "" "" "" "" "" "" "" "" "" "" "" "time budget (${max_seconds}s) used up"
    log "rep $rep $sc $t: skipped, time budget used up"
    return
  fi
  if [ "$t" != direct ] && ! proxy_alive "$t"; then
    local why="process ${PID[$t]:-?} is gone"
    log "$t is not running ($why); restarting it"
    [ -f "$dir/$t/pgward.log" ] && tail -20 "$dir/$t/pgward.log" >&2
    if start_target "$t"; then
      note="restarted after the proxy died; "
    else
      record "$rep" "$sc" "$t" "proxy-down" "" "" "" "" "" "" "" "" "" "" "" "${DOWN_REASON[$t]}"
      return
    fi
  fi
  port="${PORT[$t]}"
  pid="${PID[$t]:-}"
  if [[ "$sc" == copy-* ]]; then
    run_copy "$rep" "$sc" "$t" "$port" "$pid" "$SC_CLIENTS" "$note"
    return
  fi

  if [[ "$sc" == idle10k-* ]]; then
    local st="$dir/idle.status"
    rm -f "$st"
    timeout -k 5 900 /usr/bin/python3 "$repo/bench/idle_conns.py" 127.0.0.1 "$port" postgres bench "$idle_count" \
      --timeout 120 --status "$st" >>"$dir/idle.log" 2>&1 &
    helper_pid=$!
    local i
    for ((i = 0; i < 1300; i++)); do
      [ -s "$st" ] && break
      kill -0 "$helper_pid" 2>/dev/null || break
      sleep 0.1
    done
    local line; line="$(cat "$st" 2>/dev/null)"
    idle_ok="$(sed -n 's/^ok=\([0-9]*\).*/\1/p' <<<"$line")"
    log "idle connections to $t: ${line:-helper failed: $(tail -3 "$dir/idle.log")}"
    [ "${idle_ok:-0}" -lt "$idle_count" ] && note+="only ${idle_ok:-0}/$idle_count idle connections: $(sed -n 's/.*first_error=//p' <<<"$line"); "
  fi

  local c0="" c1="" rss="" hwm="" prefix="$dir/logs/run" out="$dir/out/$rep-$sc-$t.txt"
  rm -f "$dir"/logs/run*
  [ -n "$pid" ] && c0="$(cpu_ticks "$pid")"
  (cd "$dir/logs" && timeout -k 10 $((duration + 120)) "$PGBENCH" -h 127.0.0.1 -p "$port" -U postgres -n \
    -j 2 -c "$SC_CLIENTS" -T "$duration" "${SC_ARGS[@]}" -l --log-prefix="$prefix" bench) >"$out" 2>&1
  local rc=$?
  if [ -n "$pid" ]; then
    c1="$(cpu_ticks "$pid")"
    rss="$(status_kb "$pid" VmRSS)"
    hwm="$(status_kb "$pid" VmHWM)"
  fi
  stop_helper

  local tps lat failed tx aborted p99="" status="ok" cpu=""
  tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out" | head -1)"
  lat="$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out" | head -1)"
  failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -1)"
  tx="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -1)"
  aborted="$(grep -cE 'client [0-9]+ (script [0-9]+ )?aborted' "$out")"
  # p99 from the per-transaction logs: field 3 is the transaction's time in microseconds.
  if compgen -G "$prefix.*" >/dev/null; then
    p99="$(cat "$prefix".* | awk '$3 ~ /^[0-9]+$/ {print $3}' | sort -n -S 200M |
      awk '{v[NR] = $1} END {if (NR) {i = int(NR * 0.99); if (i < NR * 0.99) i++; if (i < 1) i = 1; printf "%.3f", v[i] / 1000}}')"
  fi
  rm -f "$dir"/logs/run*
  if [ -n "$c0" ] && [ -n "$c1" ] && [ -n "$tx" ] && [ "$tx" -gt 0 ]; then
    cpu="$(awk -v a="$c0" -v b="$c1" -v hz="$clk_tck" -v n="$tx" 'BEGIN {printf "%.2f", (b - a) / hz * 1e6 / n}')"
  fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    status="timeout"
  elif [ "$rc" != 0 ] || [ "${aborted:-0}" -gt 0 ] || [ "${failed:-0}" -gt 0 ] || [ -z "$tps" ]; then
    status="errors"
  fi
  if [ "$status" != ok ]; then
    local first_err
    first_err="$(grep -m1 -E 'error|FATAL|ERROR' "$out" | cut -c1-300)"
    note+="pgbench exit $rc; ${first_err}"
  fi
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    status="proxy-died"
    note+=" the proxy process exited during the run"
    log "$t DIED during $sc (rep $rep); last log lines:"
    tail -20 "$dir/$t/pgward.log" "$dir/pgbouncer/pgbouncer.log" 2>/dev/null >&2
  fi
  note="$(echo "$note" | tr '\t\n' '  ' | sed 's/^ *//; s/[ ;]*$//')"
  record "$rep" "$sc" "$t" "$status" "$rc" "$tps" "$lat" "$p99" "${failed:-}" "${aborted:-0}" "${tx:-}" "$cpu" \
    "$rss" "$hwm" "$idle_ok" "$note"
  log "rep $rep $sc $t: $status tps=${tps:--} lat=${lat:--}ms p99=${p99:--}ms failed=${failed:--} aborted=${aborted:-0} cpu_us/tx=${cpu:--} rss_kb=${rss:--}${note:+ ($note)}"
}

# ---------------------------------------------------------------- the runs
log "targets: ${active[*]}; scenarios: $scenarios; -T $duration, $reps rep(s); budget ${max_seconds}s"
for ((rep = 1; rep <= reps; rep++)); do
  for sc in $scenarios; do
    for t in "${active[@]}"; do
      run_one "$rep" "$sc" "$t"
    done
  done
done

# ---------------------------------------------------------------- report
stamp="$(date +%Y-%m-%d-%H%M)-$(hostname -s)$([ "$tls" = 1 ] && echo -tls)"
outdir="$repo/bench/results"
mkdir -p "$outdir"
pg_version="$("$PG_BIN/postgres" --version 2>/dev/null)"
pgward_version="$("$pgward_bin" --version 2>/dev/null | head -1)"
down_json="$(for t in "${targets[@]}"; do [ -n "${DOWN_REASON[$t]:-}" ] && printf '%s\t%s\n' "$t" "${DOWN_REASON[$t]}"; done)"
export BENCH_META_TARGETS="${targets[*]}" BENCH_META_SCENARIOS="$scenarios" BENCH_META_DURATION="$duration" \
  BENCH_META_REPS="$reps" BENCH_META_SCALE="$scale" BENCH_META_POOL="$pool_size" BENCH_META_IDLE="$idle_count" \
  BENCH_META_PG="$pg_version" BENCH_META_PGB="$pgb_version" BENCH_META_PGWARD="$pgward_version" \
  BENCH_META_DOWN="$down_json" BENCH_META_QUICK="$quick" BENCH_META_WORKERS="$workers_list" \
  BENCH_META_BACKENDS="$backends" \
  BENCH_META_ELAPSED="$(( $(date +%s) - start_epoch ))" BENCH_META_BUILD_NOTE="$build_note" \
  BENCH_META_TLS="$tls" BENCH_META_TLS_NOTE="$tls_note" BENCH_META_COPY_ROWS="$copy_rows" \
  BENCH_META_COPY_BYTES="$copy_bytes"
/usr/bin/python3 "$repo/bench/report.py" "$results" "$outdir/$stamp" || log "report failed"
if command -v gnuplot >/dev/null && [ -f "$outdir/$stamp.dat" ]; then
  gnuplot "$outdir/$stamp.gp" 2>"$dir/gnuplot.err" || { log "gnuplot failed:"; cat "$dir/gnuplot.err" >&2; }
fi
rm -f "$outdir/$stamp.dat" "$outdir/$stamp.gp"
log "wrote $outdir/$stamp.md, .json$( [ -f "$outdir/$stamp.png" ] && echo ', .png')"
# What the proxies complained about goes to stderr for the record (pgward logs at warn; PgBouncer's warnings).
for t in "${targets[@]}"; do
  f="$dir/$t/pgward.log"
  if [ -s "$f" ]; then
    log "$t log: $(wc -l <"$f") lines, the last 20:"
    tail -20 "$f" >&2
  fi
done
if [ -s "$dir/pgbouncer/pgbouncer.log" ] && grep -qE ' (WARNING|ERROR|FATAL) ' "$dir/pgbouncer/pgbouncer.log"; then
  log "pgbouncer warnings and errors (the last 20):"
  grep -E ' (WARNING|ERROR|FATAL) ' "$dir/pgbouncer/pgbouncer.log" | tail -20 >&2
fi
