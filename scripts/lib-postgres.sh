# Shared shell helpers: a throwaway PostgreSQL 15 owned by an unprivileged user in a temporary directory.
# Sourced by run-local.sh and bench/run.sh.

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

# Runs a command as the unprivileged "postgres" user when we are root (PostgreSQL refuses to run as root).
pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# pg_start DIR PORT: initdb into DIR (trust for local sockets, scram for TCP) and start the server.
pg_start() {
  local dir="$1" port="$2"
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  pg_as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
shared_buffers = 256MB
CONF
  pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w start >/dev/null
}

pg_stop() {
  local dir="$1"
  [ -d "$dir/data" ] && pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

# pg_sql DIR PORT SQL...: run each SQL (its own transaction) as the superuser over the Unix socket.
pg_sql() {
  local dir="$1" port="$2" args=()
  shift 2
  for sql in "$@"; do args+=(-c "$sql"); done
  psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "${args[@]}"
}
