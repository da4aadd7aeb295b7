#!/usr/bin/env bash
# Builds the libFuzzer target with clang + ASan + UBSan and runs it for FUZZ_SECONDS (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPGWARD_FUZZ=ON -DPGWARD_SANITIZE=ON -DPGWARD_TESTS=OFF -DPGWARD_WERROR="${PGWARD_WERROR:-OFF}" >/dev/null
ninja -C build-fuzz fuzz_protocol
mkdir -p build-fuzz/corpus
status=0
./build-fuzz/tests/fuzz/fuzz_protocol -artifact_prefix=build-fuzz/ -max_total_time="$seconds" -print_final_stats=1 build-fuzz/corpus \
  >build-fuzz/fuzz.log 2>&1 || status=$?
grep -E "^(stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" build-fuzz/fuzz.log || true
if [ "$status" -ne 0 ]; then
  tail -60 build-fuzz/fuzz.log
  echo "fuzz_protocol: finding (exit $status); the crashing input is in $(pwd)" >&2
  exit "$status"
fi
echo "fuzz_protocol: ${seconds}s without a finding"
