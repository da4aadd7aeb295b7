#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan and runs each for FUZZ_SECONDS (default 60):
# fuzz_protocol (framing, every message parser, SCRAM), fuzz_sql_text (the SQL scanners) and fuzz_saslprep
# (SASLprep, NFKC).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPGWARD_FUZZ=ON -DPGWARD_SANITIZE=ON -DPGWARD_TESTS=OFF -DPGWARD_WERROR="${PGWARD_WERROR:-OFF}" >/dev/null
ninja -C build-fuzz fuzz_protocol fuzz_sql_text fuzz_saslprep
for target in fuzz_protocol fuzz_sql_text fuzz_saslprep; do
  mkdir -p "build-fuzz/corpus-$target"
  status=0
  "./build-fuzz/tests/fuzz/$target" -artifact_prefix="build-fuzz/$target-" -max_total_time="$seconds" \
    -print_final_stats=1 "build-fuzz/corpus-$target" >"build-fuzz/$target.log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" "build-fuzz/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -60 "build-fuzz/$target.log"
    echo "$target: finding (exit $status); the crashing input is in $(pwd)/build-fuzz" >&2
    exit "$status"
  fi
  echo "$target: ${seconds}s without a finding"
done
