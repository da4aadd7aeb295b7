#!/usr/bin/env bash
# Builds pgward and its tests with ThreadSanitizer into ./build-tsan (-O1 -g) and runs the unit tests and the whole
# integration suite, every pgward with `workers = 2` so that sessions, pools and the admin port really run on
# several threads. Arguments go to the integration binary (e.g. --gtest_filter='Pool.*').
#
# Any ThreadSanitizer report fails the run: halt_on_error stops the process that found it, and the reports,
# written to build-tsan/tsan/, are printed at the end. scripts/tsan.supp holds the suppressions. The tests
# themselves are timed for one worker: an integration test that fails is run once more, and one that then
# passes is listed as flaky rather than failing the run (the release and ASan runs stay strict).
set -euo pipefail
cd "$(dirname "$0")/.."
# The harness runs PostgreSQL as the unprivileged "postgres" user; it must be able to reach the build tree.
chmod o+rx . 2>/dev/null || true

build_dir=build-tsan
start=$SECONDS
PGWARD_BUILD_DIR="$build_dir" PGWARD_BUILD_TYPE=Debug \
  PGWARD_CMAKE_ARGS="-DPGWARD_SANITIZE=thread -DCMAKE_CXX_FLAGS=-O1 -DPGWARD_IO_URING=OFF ${PGWARD_CMAKE_ARGS:-}" \
  bash scripts/build.sh
echo "tsan build took $((SECONDS - start)) s"

reports="$(pwd)/$build_dir/tsan"
rm -rf "$reports"
mkdir -p "$reports"
chmod 777 "$reports"
# pgward, started by the integration binary, inherits these.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4 suppressions=$(pwd)/scripts/tsan.supp log_path=$reports/report"
export PGWARD_TEST_WORKERS=2

status=0
start=$SECONDS
ctest --test-dir "$build_dir" --output-on-failure -L unit || status=1
# From the build folder, as ctest runs it (see tests/CMakeLists.txt).
run_integration() {
  (cd "$build_dir" && ./tests/integration_tests --gtest_color=no "$@")
}
log="$build_dir/integration.log"
if ! run_integration "$@" 2>&1 | tee "$log"; then
  failed="$(sed -n 's/^\[  FAILED  \] \([A-Za-z0-9_/]*\.[A-Za-z0-9_/]*\) (.*/\1/p' "$log" | sort -u | paste -sd: -)"
  if [ -z "$failed" ]; then
    status=1
  else
    echo "== running again: $failed"
    if run_integration --gtest_filter="$failed"; then
      echo "flaky with workers = 2 (failed, then passed): $failed"
    else
      status=1
    fi
  fi
fi
echo "tsan tests took $((SECONDS - start)) s"

if compgen -G "$reports/report.*" >/dev/null; then
  for report in "$reports"/report.*; do
    echo "==== $report"
    cat "$report"
  done
  echo "ThreadSanitizer reported the above ($(ls "$reports" | wc -l) processes)" >&2
  status=1
fi
exit "$status"
