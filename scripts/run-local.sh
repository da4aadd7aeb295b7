#!/usr/bin/env bash
# Installs what pgward needs, builds it, starts a throwaway PostgreSQL 15 in a temporary directory and runs pgward
# in front of it in the foreground. Ctrl-C stops both and removes the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Both event loops (install-deps gives liburing-dev): pgward runs on io_uring where the kernel allows it.
bash scripts/build.sh pgward pgward-io_uring
. scripts/lib-postgres.sh

listen_port="${PGWARD_PORT:-6432}"
dir="$(mktemp -d /tmp/pgward-local.XXXXXX)"
chmod 755 "$dir"
pg_port="$(free_port)"
cleanup() { pg_stop "$dir"; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM  # a signal ends the script through the EXIT trap, so PostgreSQL never outlives it

pg_start "$dir" "$pg_port"
pg_sql "$dir" "$pg_port" "CREATE ROLE app LOGIN PASSWORD 'app'" "CREATE DATABASE app OWNER app"

cat >"$dir/users.toml" <<TOML
app = "app"
TOML
cat >"$dir/pgward.toml" <<TOML
[proxy]
listen = "127.0.0.1:$listen_port"

[admin]
listen = "127.0.0.1:9930"

[auth]
type = "scram-sha-256"
users_file = "users.toml"

[pool]
mode = "transaction"
size = 20

[[database]]
name = "app"
host = "127.0.0.1"
port = $pg_port
TOML

cat <<MSG

  PostgreSQL 15 (throwaway) on 127.0.0.1:$pg_port, data in $dir
  pgward on 127.0.0.1:$listen_port, config $dir/pgward.toml

  Connect with:   PGPASSWORD=app psql -h 127.0.0.1 -p $listen_port -U app app
  Stop with:      Ctrl-C

MSG
./build/app/pgward --config "$dir/pgward.toml"
