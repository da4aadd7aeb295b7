#!/usr/bin/env bash
# Installs what is needed, builds pgward and its tests, and runs every test: unit tests (codec, auth, config) and
# integration tests (the real pgward binary in front of a real PostgreSQL 15 that the suite starts and stops).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The harness runs PostgreSQL as the unprivileged "postgres" user; it must be able to reach the build tree.
chmod o+rx . 2>/dev/null || true
# node-postgres for the driver tests (tests/drivers/node), at the version its package-lock.json pins.
(cd tests/drivers/node && npm ci --no-audit --no-fund)
# Every build below (release, ASan+UBSan, TSan, fuzz) treats a compiler warning as an error; a user's build
# does not.
export PGWARD_WERROR=ON

# The release build also makes pgward-io_uring (cmake/io_uring.cmake), and ctest runs the integration suite twice:
# `integration` with every pgward on epoll, `integration_io_uring` with every pgward on io_uring. The sanitizer
# builds below are epoll only (-DPGWARD_IO_URING=OFF), which keeps this script well within its time.
echo "== release build"
bash scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 1800 "$@"

# The deployment files (container, systemd, Kubernetes, Prometheus alerts) checked against that build.
echo "== deploy tests"
bash deploy/tests/run.sh

# The same suites again with AddressSanitizer + UndefinedBehaviorSanitizer: every integration test then also checks
# that the proxy never reads or writes out of bounds, leaks, or hits undefined behaviour on hostile input.
echo "== ASan+UBSan build"
PGWARD_BUILD_DIR=build-asan PGWARD_BUILD_TYPE=Debug PGWARD_CMAKE_ARGS="-DPGWARD_SANITIZE=ON -DPGWARD_IO_URING=OFF" \
  bash scripts/build.sh
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 1800 "$@"

# The unit tests and the integration suite under ThreadSanitizer, every pgward with workers = 2: a data race in
# the proxy, the pools or the admin port fails the run (see scripts/tsan.sh). About 3 minutes once built.
echo "== TSan build"
bash scripts/tsan.sh

# A minute of coverage-guided fuzzing over every parser of untrusted bytes (clang, libFuzzer, ASan+UBSan).
echo "== fuzz"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}" bash scripts/fuzz.sh
