#!/usr/bin/env bash
# TPS of pgward binaries side by side, interleaved so that a slow spell of a shared machine hits each alike: for
# each repetition and scenario, every binary in turn in front of the same throwaway PostgreSQL (pgbench scale 1,
# transaction mode, pool 16). Meant for before/after a change; bench/run.sh is the comparison with PostgreSQL and
# PgBouncer, bench/instructions.sh the deterministic count.
#
#   bash bench/compare.sh OLD_BINARY NEW_BINARY ...     # as root on Debian 12
#   BENCH_SCENARIOS="simple extended prepared" (default; "tpcb:simple" and such: see pgbench_scenario in lib.sh), BENCH_DURATION=10 (s), BENCH_REPS=3, BENCH_CLIENTS=16
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-postgres.sh
source bench/lib.sh
[ "$#" -ge 1 ] || { echo "usage: $0 PGWARD_BINARY..." >&2; exit 2; }
scenarios="${BENCH_SCENARIOS:-simple extended prepared}"
duration="${BENCH_DURATION:-10}"
reps="${BENCH_REPS:-3}"
clients="${BENCH_CLIENTS:-16}"
bench_postgres compare

declare -A sum
for rep in $(seq 1 "$reps"); do
  for sc in $scenarios; do
    for bin in "$@"; do
      port="$(free_port)"
      bench_pgward_config "$dir/pgward.toml" "$port" "$pg_port"
      "$bin" --config "$dir/pgward.toml" >"$dir/pgward.log" 2>&1 &
      pid=$!
      wait_listening "$port" 10 || true
      tps="$("$pgbench" $(pgbench_scenario "$sc") -n -c "$clients" -j 2 -T "$duration" -h 127.0.0.1 -p "$port" -U postgres bench 2>/dev/null |
        awk '/^tps = / {printf "%.0f", $3}')"
      kill -INT "$pid"
      wait "$pid" 2>/dev/null || true
      echo "rep $rep $sc $bin: ${tps:-failed} tps" >&2
      sum["$bin $sc"]=$(( ${sum["$bin $sc"]:-0} + ${tps:-0} ))
    done
  done
done

printf '| binary | scenario | TPS (mean of %s x %s s, -c %s) |\n|---|---|--:|\n' "$reps" "$duration" "$clients"
for bin in "$@"; do
  for sc in $scenarios; do
    printf '| %s | %s | %d |\n' "$bin" "$(pgbench_scenario "$sc")" "$(( ${sum["$bin $sc"]} / reps ))"
  done
done
