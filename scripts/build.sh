#!/usr/bin/env bash
# Configures and builds pgward (Release with debug info) into ./build with Ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${PGWARD_BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${PGWARD_BUILD_TYPE:-RelWithDebInfo}" ${PGWARD_CMAKE_ARGS:-} >/dev/null
ninja -C "$build_dir" "$@"
