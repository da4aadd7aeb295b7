# Shell helpers shared by bench/instructions.sh and bench/compare.sh (sourced, after scripts/lib-postgres.sh).

pgbench=/usr/lib/postgresql/15/bin/pgbench

# pgbench_scenario SCENARIO: pgbench's options for a scenario: "simple", "extended", "prepared" are the select-only
# script (-S) in that query mode; "tpcb:MODE" is the built-in TPC-B-like script (UPDATE ... SET, INSERT, three
# statements in a transaction block) in query mode MODE.
pgbench_scenario() {
  case "$1" in
    tpcb:*) echo "-M ${1#tpcb:}" ;;
    *) echo "-S -M $1" ;;
  esac
}

# bench_postgres NAME: a throwaway PostgreSQL with pgbench's tables (scale 1) in database "bench", in a fresh
# temporary folder, both removed at exit. Sets `dir` (the folder) and `pg_port`.
bench_postgres() {
  dir="$(mktemp -d "/tmp/pgward-$1.XXXXXX")"
  chmod 755 "$dir"
  trap 'pkill -f "$dir/pgward.toml" 2>/dev/null || true; pg_stop "$dir/pg"; rm -rf "$dir"' EXIT
  pg_port="$(free_port)"
  pg_start "$dir/pg" "$pg_port"
  pg_sql "$dir/pg" "$pg_port" "CREATE DATABASE bench"
  "$pgbench" -i -q -s 1 -h 127.0.0.1 -p "$pg_port" -U postgres bench >/dev/null 2>&1
}

# bench_pgward_config FILE PORT PG_PORT [BACKEND [WORKERS]]: a pgward in transaction mode (pool 16, trust)
# listening on PORT, its admin port on a free port, in front of database "bench" of the PostgreSQL on PG_PORT; on
# event loop BACKEND (auto, epoll or io_uring; auto by default) with WORKERS threads (1).
bench_pgward_config() {
  local file="$1" port="$2" pg_port="$3" backend="${4:-auto}" workers="${5:-1}"
  cat >"$file" <<TOML
[proxy]
listen = "127.0.0.1:$port"
log_level = "warn"
io_backend = "$backend"
workers = $workers
[admin]
listen = "127.0.0.1:$(free_port)"
[auth]
type = "trust"
[pool]
mode = "transaction"
size = 16
[[database]]
name = "bench"
host = "127.0.0.1"
port = $pg_port
TOML
}

# wait_listening PORT SECONDS: until something accepts on 127.0.0.1:PORT, at most SECONDS.
wait_listening() {
  local port="$1" tries=$(($2 * 10))
  for _ in $(seq 1 "$tries"); do
    (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# bench_pgbouncer_ini FOLDER PORT PG_PORT POOL_SIZE [LINE...]: FOLDER/pgbouncer.ini (and an empty-password
# userlist.txt) for PgBouncer in transaction mode, trust, listening on PORT in front of database "bench" of the
# PostgreSQL on PG_PORT, logs and pid file in FOLDER; each LINE is appended to [pgbouncer].
bench_pgbouncer_ini() {
  local d="$1" port="$2" pg_port="$3" pool_size="$4"
  shift 4
  mkdir -p "$d"
  echo '"postgres" ""' >"$d/userlist.txt"
  cat >"$d/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $d/userlist.txt
pool_mode = transaction
default_pool_size = $pool_size
ignore_startup_parameters = extra_float_digits
logfile = $d/pgbouncer.log
pidfile = $d/pgbouncer.pid
log_connections = 0
log_disconnections = 0
INI
  [ "$#" -gt 0 ] && printf '%s\n' "$@" >>"$d/pgbouncer.ini"
  return 0
}

# bench_pgbouncer_start BINARY FOLDER PORT PG_PORT: PgBouncer in transaction mode (pool 16, trust, the same
# prepared-statement cache as pgward) listening on PORT in front of database "bench" of the PostgreSQL on
# PG_PORT, run as the postgres user; sets `pgbouncer_pid` once it accepts connections.
bench_pgbouncer_start() {
  local bin="$1" d="$2" port="$3" pg_port="$4"
  bench_pgbouncer_ini "$d" "$port" "$pg_port" 16 "max_prepared_statements = 200"
  chown -R postgres: "$d"
  rm -f "$d/pgbouncer.pid"
  runuser -u postgres -- "$bin" "$d/pgbouncer.ini" >>"$d/stderr.log" 2>&1 &
  local i
  for ((i = 0; i < 100; i++)); do
    [ -s "$d/pgbouncer.pid" ] && break
    sleep 0.1
  done
  pgbouncer_pid="$(cat "$d/pgbouncer.pid" 2>/dev/null)"
  wait_listening "$port" 10
}
