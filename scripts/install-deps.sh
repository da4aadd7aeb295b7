#!/usr/bin/env bash
# Installs everything pgward needs to build, run and test on Debian 12 (run as root).
# Idempotent: a second run on a prepared machine only checks.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libboost1.81-dev libssl-dev libspdlog-dev libfmt-dev prometheus-cpp-dev libtomlplusplus-dev liburing-dev
  prometheus
  libgtest-dev libgmock-dev
  clang libclang-rt-14-dev
  postgresql postgresql-15 postgresql-client-15 libpq-dev
  python3 python3-psycopg
  libpostgresql-jdbc-java openjdk-17-jdk-headless
  procps iproute2 util-linux
  curl python3-yaml systemd
)
# kubectl (for `kubectl kustomize` in deploy/tests/k8s.sh): the machine's own if it has one, else Debian's.
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
# Node.js and npm for the node-postgres driver test: the machine's own if it has them, else Debian's.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
[ "${PGWARD_WITH_BENCH:-0}" = 1 ] && packages+=(pgbouncer gnuplot-nox)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Debian's postgresql package may start a cluster on 5432; pgward's scripts run their own, so leave it alone.
echo "install-deps: all packages present"
