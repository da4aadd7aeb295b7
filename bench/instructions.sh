#!/usr/bin/env bash
# User-space instructions per transaction of pgward binaries, side by side (callgrind; deterministic, unlike TPS
# on a shared 2-core machine). For each binary and each scenario: pgward under callgrind in front of a throwaway
# PostgreSQL (pgbench scale 1), a warm-up, counters zeroed, then `-c 16 -t 500` (8,000 transactions) counted.
#
#   bash bench/instructions.sh OLD_BINARY NEW_BINARY ...     # as root on Debian 12
#   BENCH_SCENARIOS="simple extended prepared" (default; "tpcb:simple" and such: see pgbench_scenario in lib.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-postgres.sh
source bench/lib.sh
[ "$#" -ge 1 ] || { echo "usage: $0 PGWARD_BINARY..." >&2; exit 2; }
command -v callgrind_control >/dev/null || apt-get install -y -q valgrind >/dev/null
scenarios="${BENCH_SCENARIOS:-simple extended prepared}"
bench_postgres instr

printf '| binary | scenario | instructions per transaction |\n|---|---|--:|\n'
for bin in "$@"; do
  for sc in $scenarios; do
    port="$(free_port)"
    bench_pgward_config "$dir/pgward.toml" "$port" "$pg_port"
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" --config "$dir/pgward.toml" \
      >"$dir/valgrind.log" 2>&1 &
    vg=$!
    wait_listening "$port" 20 || true
    "$pgbench" $(pgbench_scenario "$sc") -n -c 16 -j 2 -t 100 -h 127.0.0.1 -p "$port" -U postgres bench >/dev/null 2>&1
    callgrind_control -z "$vg" >/dev/null 2>&1
    "$pgbench" $(pgbench_scenario "$sc") -n -c 16 -j 2 -t 500 -h 127.0.0.1 -p "$port" -U postgres bench >"$dir/pgbench.log" 2>&1
    callgrind_control -d "$vg" >/dev/null 2>&1
    kill -INT "$vg"
    wait "$vg" 2>/dev/null || true
    # The dump after zeroing holds the counted part: its "summary:" line is the total of instructions.
    total=0
    for f in "$dir"/cg.out*; do
      n="$(awk '/^(summary|totals):/ {print $2; exit}' "$f")"
      [ -n "$n" ] && [ "$n" -gt "$total" ] && [ "$f" != "$dir/cg.out" ] && total="$n"
    done
    printf '| %s | %s -c 16 | %d |\n' "$bin" "$(pgbench_scenario "$sc")" "$((total / 8000))"
    rm -f "$dir"/cg.out*
  done
done
