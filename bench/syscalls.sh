#!/usr/bin/env bash
# Syscalls per transaction of pgward binaries, side by side: for each binary and scenario, pgward in front of a
# throwaway PostgreSQL (pgbench scale 1, transaction mode, pool 16), a warm-up, then `perf stat` on the pgward
# process (all its threads) over a fixed `pgbench -c 16 -t 1000` (16,000 transactions). Counts come from the
# kernel's syscall tracepoints, so pgward runs at full speed (strace would slow it and change how often a read
# finds its socket empty); the recvfrom that failed with EAGAIN are counted apart.
#
#   bash bench/syscalls.sh OLD_BINARY NEW_BINARY ...     # as root on Debian 12
#   BENCH_SCENARIOS="simple" (default; see pgbench_scenario in lib.sh), BENCH_REPS=3 (the median is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-postgres.sh
source bench/lib.sh
[ "$#" -ge 1 ] || { echo "usage: $0 PGWARD_BINARY..." >&2; exit 2; }
command -v perf >/dev/null || apt-get install -y -q linux-perf >/dev/null
scenarios="${BENCH_SCENARIOS:-simple}"
reps="${BENCH_REPS:-3}"
tx=16000
bench_postgres syscalls

# The counted events, in the order of the table's columns.
events=(syscalls:sys_enter_recvfrom syscalls:sys_exit_recvfrom syscalls:sys_enter_sendto
  syscalls:sys_enter_epoll_wait syscalls:sys_enter_epoll_ctl raw_syscalls:sys_enter)
perf_args=()
for e in "${events[@]}"; do
  perf_args+=(-e "$e")
  # Only the reads that found nothing (EAGAIN).
  [ "$e" = syscalls:sys_exit_recvfrom ] && perf_args+=(--filter 'ret == -11')
done

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

printf '| binary | scenario | recvfrom | of which EAGAIN | sendto | epoll_wait | epoll_ctl | all syscalls |\n'
printf '|---|---|--:|--:|--:|--:|--:|--:|\n'
for bin in "$@"; do
  for sc in $scenarios; do
    declare -A runs=()
    for rep in $(seq 1 "$reps"); do
      port="$(free_port)"
      bench_pgward_config "$dir/pgward.toml" "$port" "$pg_port"
      "$bin" --config "$dir/pgward.toml" >"$dir/pgward.log" 2>&1 &
      pid=$!
      wait_listening "$port" 10 || true
      "$pgbench" $(pgbench_scenario "$sc") -n -c 16 -j 2 -t 100 -h 127.0.0.1 -p "$port" -U postgres bench >/dev/null 2>&1
      perf stat -x, -o "$dir/perf.csv" "${perf_args[@]}" -p "$pid" &
      perf_pid=$!
      sleep 0.5  # perf attached
      "$pgbench" $(pgbench_scenario "$sc") -n -c 16 -j 2 -t 1000 -h 127.0.0.1 -p "$port" -U postgres bench \
        >"$dir/pgbench.log" 2>&1
      kill -INT "$perf_pid"
      wait "$perf_pid" 2>/dev/null || true
      kill -INT "$pid"
      wait "$pid" 2>/dev/null || true
      grep -q "number of transactions actually processed: $tx/$tx" "$dir/pgbench.log" ||
        echo "warning: $bin $sc: pgbench did not complete $tx transactions" >&2
      for e in "${events[@]}"; do
        n="$(awk -F, -v e="$e" '$3 == e {print $1}' "$dir/perf.csv")"
        runs[$e]+="${n:-0} "
      done
    done
    row="| $bin | $(pgbench_scenario "$sc") -c 16 |"
    for e in "${events[@]}"; do
      m="$(tr ' ' '\n' <<<"${runs[$e]}" | grep . | median)"
      row+=" $(awk -v n="$m" -v t="$tx" 'BEGIN {printf "%.2f", n / t}') |"
    done
    echo "$row"
    unset runs
  done
done
