#!/usr/bin/env bash
# Syscalls, context switches and CPU per transaction, side by side: for each target and scenario, the proxy in
# front of a throwaway PostgreSQL (pgbench scale 1, transaction mode, pool 16), a warm-up, then `perf stat` on the
# proxy process (all its threads) over a fixed `pgbench -c 16 -t 1000` (16,000 transactions). Counts come from
# the kernel's tracepoints, so the proxy runs at full speed (strace would slow it and change how often a read
# finds its socket empty); the recvfrom that failed with EAGAIN are counted apart.
#
#   bash bench/syscalls.sh [PGWARD_BINARY...]     # as root on Debian 12; default: build/app/pgward
#   BENCH_BACKENDS="epoll io_uring" (default), BENCH_WORKERS="1" (e.g. "1 2"): pgward on each event loop and
#   worker count; BENCH_PGBOUNCER (default: the PgBouncer 1.25.2 anchor in ../shared/anchors, if present; "" for
#   none); BENCH_SCENARIOS="simple" (default; see pgbench_scenario in lib.sh), BENCH_REPS=3 (medians; the
#   repetitions are interleaved across targets).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-postgres.sh
source bench/lib.sh
binaries=("$@")
[ "${#binaries[@]}" -ge 1 ] || binaries=("$(pwd)/build/app/pgward")
command -v perf >/dev/null || apt-get install -y -q linux-perf >/dev/null
scenarios="${BENCH_SCENARIOS:-simple}"
reps="${BENCH_REPS:-3}"
backends="${BENCH_BACKENDS:-epoll io_uring}"
workers_list="${BENCH_WORKERS:-1}"
anchor="$(pwd)/../shared/anchors/pgbouncer-1.25.2"
pgbouncer="${BENCH_PGBOUNCER-$([ -x "$anchor" ] && echo "$anchor")}"
clients=16
per_client=1000
tx=$((clients * per_client))
bench_postgres syscalls

# The counted events, in the order of the table's columns.
events=(syscalls:sys_enter_recvfrom syscalls:sys_exit_recvfrom syscalls:sys_enter_sendto
  syscalls:sys_enter_epoll_wait syscalls:sys_enter_io_uring_enter raw_syscalls:sys_enter context-switches
  task-clock)
perf_args=()
for e in "${events[@]}"; do
  perf_args+=(-e "$e")
  # Only the reads that found nothing (EAGAIN).
  [ "$e" = syscalls:sys_exit_recvfrom ] && perf_args+=(--filter 'ret == -11')
done

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# Targets: "pgward|BINARY|BACKEND|WORKERS" and "pgbouncer|BINARY".
targets=()
for bin in "${binaries[@]}"; do
  for b in $backends; do
    for w in $workers_list; do targets+=("pgward|$bin|$b|$w"); done
  done
done
[ -n "$pgbouncer" ] && targets+=("pgbouncer|$pgbouncer")

label() {
  IFS='|' read -r kind bin b w <<<"$1"
  if [ "$kind" = pgbouncer ]; then echo "PgBouncer $("$bin" --version | head -1 | awk '{print $NF}')"; else
    echo "$bin, $b, workers $w"; fi
}

# One measured run of target $1 in scenario $2: appends each event's count to runs[target,event].
measure() {
  local t="$1" sc="$2" port pid
  IFS='|' read -r kind bin b w <<<"$t"
  port="$(free_port)"
  if [ "$kind" = pgbouncer ]; then
    bench_pgbouncer_start "$bin" "$dir/pgbouncer" "$port" "$pg_port" || true
    pid="$pgbouncer_pid"
  else
    bench_pgward_config "$dir/pgward.toml" "$port" "$pg_port" "$b" "$w"
    "$bin" --config "$dir/pgward.toml" >"$dir/pgward.log" 2>&1 &
    pid=$!
    wait_listening "$port" 10 || true
  fi
  "$pgbench" $(pgbench_scenario "$sc") -n -c "$clients" -j 2 -t 100 -h 127.0.0.1 -p "$port" -U postgres bench \
    >/dev/null 2>&1
  perf stat -x, -o "$dir/perf.csv" "${perf_args[@]}" -p "$pid" &
  local perf_pid=$!
  sleep 0.5  # perf attached
  "$pgbench" $(pgbench_scenario "$sc") -n -c "$clients" -j 2 -t "$per_client" -h 127.0.0.1 -p "$port" \
    -U postgres bench >"$dir/pgbench.log" 2>&1
  kill -INT "$perf_pid"
  wait "$perf_pid" 2>/dev/null || true
  kill -INT "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  grep -q "number of transactions actually processed: $tx/$tx" "$dir/pgbench.log" ||
    echo "warning: $(label "$t") $sc: pgbench did not complete $tx transactions" >&2
  local e n
  for e in "${events[@]}"; do
    n="$(awk -F, -v e="$e" '$3 == e {print $1}' "$dir/perf.csv")"
    runs["$t,$e"]+="${n:-0} "
  done
}

printf '| target | scenario | recvfrom | of which EAGAIN | sendto | epoll_wait | io_uring_enter | all syscalls | context switches | CPU µs |\n'
printf '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n'
for sc in $scenarios; do
  declare -A runs=()
  for rep in $(seq 1 "$reps"); do
    for t in "${targets[@]}"; do measure "$t" "$sc"; done
  done
  for t in "${targets[@]}"; do
    row="| $(label "$t") | $(pgbench_scenario "$sc") -c $clients |"
    for e in "${events[@]}"; do
      m="$(tr ' ' '\n' <<<"${runs["$t,$e"]}" | grep . | median)"
      # task-clock is in milliseconds: CPU µs per transaction.
      [ "$e" = task-clock ] && m="$(awk -v m="$m" 'BEGIN {print m * 1000}')"
      row+=" $(awk -v n="$m" -v t="$tx" 'BEGIN {printf "%.2f", n / t}') |"
    done
    echo "$row"
  done
  unset runs
done
