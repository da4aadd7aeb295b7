#!/usr/bin/env bash
# Runs every deploy test against the release build in ./build (PGWARD_BUILD_DIR to change it) and ends with the
# line "N passed, M failed"; exits non-zero when any failed.
set -uo pipefail
cd "$(dirname "$0")"
passed=0
failed=0
start=$SECONDS
for test in container systemd k8s alerts dashboard dashboard_prometheus; do
  echo "== deploy/tests/$test.sh"
  if bash "./$test.sh"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "== deploy/tests/$test.sh FAILED"
  fi
done
echo "deploy tests took $((SECONDS - start)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
