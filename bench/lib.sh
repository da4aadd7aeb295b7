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

# bench_pgward_config FILE PORT PG_PORT: a pgward in transaction mode (pool 16, trust) listening on PORT, its
# admin port on a free port, in front of database "bench" of the PostgreSQL on PG_PORT.
bench_pgward_config() {
  local file="$1" port="$2" pg_port="$3"
  cat >"$file" <<TOML
[proxy]
listen = "127.0.0.1:$port"
log_level = "warn"
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
