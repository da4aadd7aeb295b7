#!/usr/bin/env bash
# Configures and builds pgward (Release with debug info) into ./build with Ninja; arguments are ninja targets.
# Knobs: PGWARD_BUILD_DIR (build), PGWARD_BUILD_TYPE (RelWithDebInfo), PGWARD_WERROR (OFF; scripts/test.sh sets
# ON: warnings fail the build), PGWARD_CMAKE_ARGS (further cmake arguments, e.g. -DPGWARD_SANITIZE=thread).
# PGWARD_WERROR is passed on every run, so a build folder configured by the tests does not keep -Werror.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${PGWARD_BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${PGWARD_BUILD_TYPE:-RelWithDebInfo}" \
  -DPGWARD_WERROR="${PGWARD_WERROR:-OFF}" ${PGWARD_CMAKE_ARGS:-} >/dev/null
ninja -C "$build_dir" "$@"
