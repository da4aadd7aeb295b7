#!/usr/bin/env bash
# deploy/grafana/pgward.json against live data: a throwaway PostgreSQL, pgward in front of it (pool of 2), and a
# real Prometheus scraping pgward every second. Under a pgbench load (prepared statements, more clients than
# servers) plus a server-side error, a pool wait timeout, a lost server and a config reload, every query of every
# panel is evaluated through Prometheus's HTTP API and must return at least one series. Clients reach pgward over
# TLS ([client_tls] prefer, libpq's default sslmode prefer), so the TLS panel has handshakes and a certificate.
source "$(dirname "$0")/lib.sh"
source "$REPO_DIR/scripts/lib-postgres.sh"
need_build
dashboard="${PGWARD_DASHBOARD:-$DEPLOY_DIR/grafana/pgward.json}"
pgward="$BUILD_DIR/app/pgward"

pg_dir="$TMP/pg"
pg_port="$(free_port)"
pg_start "$pg_dir" "$pg_port"
cleanup_hooks+=("pg_stop '$pg_dir'")
pg_sql "$pg_dir" "$pg_port" "CREATE ROLE app LOGIN PASSWORD 'app'" "CREATE DATABASE app OWNER app"

openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=127.0.0.1 -keyout "$TMP/pgward.key" \
  -out "$TMP/pgward.crt" >"$TMP/openssl.log" 2>&1 || bad "openssl req: $(cat "$TMP/openssl.log")"
proxy_port="$(free_port)"
admin_port="$(free_port)"
cat >"$TMP/pgward.toml" <<CONF
[proxy]
listen = "127.0.0.1:$proxy_port"
[admin]
listen = "127.0.0.1:$admin_port"
[client_tls]
mode = "prefer"
cert_file = "pgward.crt"
key_file = "pgward.key"
[auth]
type = "scram-sha-256"
users_file = "users.toml"
[pool]
size = 2
wait_timeout = "2s"
[[database]]
name = "app"
host = "127.0.0.1"
port = $pg_port
CONF
echo 'app = "app"' >"$TMP/users.toml"
"$pgward" --config "$TMP/pgward.toml" >"$TMP/pgward.log" 2>&1 &
pgward_pid=$!
cleanup_hooks+=("kill -KILL $pgward_pid; wait $pgward_pid")
wait_status "$admin_port" /health/live 200 || bad "pgward did not start: $(cat "$TMP/pgward.log")"

prom_port="$(free_port)"
cat >"$TMP/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: pgward
    static_configs:
      - targets: ['127.0.0.1:$admin_port']
CONF
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/prom-data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
prom_pid=$!
cleanup_hooks+=("kill -KILL $prom_pid; wait $prom_pid")
wait_status "$prom_port" /-/ready 200 || bad "Prometheus did not start: $(cat "$TMP/prometheus.log")"
# Its first scrape comes a few seconds after it is ready (target discovery is batched): wait for it.
scraped() {
  curl -s "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode 'query=up == 1' | grep -q '"value"'
}
for _ in $(seq 30); do scraped && break; sleep 0.5; done
check "Prometheus scrapes pgward" scraped

export PGPASSWORD=app
start="$(date +%s)"
psql_pgward() { psql -X -q -h 127.0.0.1 -p "$proxy_port" -U app -d app "$@"; }
pgbench -i -q -s 1 -h 127.0.0.1 -p "$proxy_port" -U app app >"$TMP/pgbench-init.log" 2>&1 \
  || bad "pgbench -i through pgward: $(cat "$TMP/pgbench-init.log")"
# 4 clients on a pool of 2: they wait for servers; prepared statements hit pgward's cache.
pgbench -n -M prepared -c 4 -j 2 -T 8 -h 127.0.0.1 -p "$proxy_port" -U app app >"$TMP/pgbench.log" 2>&1 &
bench_pid=$!
sleep 1
psql_pgward -c 'SELECT 1/0' >/dev/null 2>&1 || true                                   # 22012, origin server
# A server lost under its client, outside a transaction block: 08007.
psql_pgward -c "SELECT pg_sleep(5) /* lost */" >/dev/null 2>&1 &
lost_pid=$!
terminated=0
for _ in $(seq 50); do  # once its query runs on the server (login and checkout may take a moment under load)
  terminated="$(psql -X -At -h "$pg_dir" -p "$pg_port" -U postgres -d postgres -c "SELECT count(pg_terminate_backend(pid))
    FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(5) /* lost */%'")"
  [ "$terminated" = 0 ] || break
  sleep 0.1
done
check "a server terminated under its client" test "$terminated" = 1
curl -s -X POST "http://127.0.0.1:$admin_port/api/reload" >/dev/null                  # a config reload
wait "$bench_pid" || bad "pgbench through pgward: $(tail -5 "$TMP/pgbench.log")"
# Both servers held, a third client waits 2 s and gets 53300.
holders=()
for _ in 1 2; do
  psql_pgward -c 'BEGIN' -c 'SELECT pg_sleep(4)' -c 'COMMIT' >/dev/null 2>&1 &
  holders+=($!)
done
sleep 1
psql_pgward -c 'SELECT 1' >/dev/null 2>&1 || true
wait "${holders[@]}" "$lost_pid" || true
sleep 3  # the last scrapes
tls_ok() {
  local metrics
  metrics="$(curl -s "http://127.0.0.1:$admin_port/metrics")"
  grep -Eq '^pgward_tls_handshakes_total\{(side="client",result="ok"|result="ok",side="client")\} [1-9]' <<<"$metrics"
}
check "the load reached pgward over TLS" tls_ok

"$PYTHON" - "$dashboard" "$prom_port" "$start" "$(date +%s)" <<'PY' || failures=$((failures + 1))
import json, math, sys, urllib.parse, urllib.request
dashboard_file, prom_port, start, end = sys.argv[1:5]
failed = False
for panel in json.load(open(dashboard_file))["panels"]:
    for target in panel["targets"]:
        expr = target["expr"].replace("$__rate_interval", "10s").replace("$instance", ".*")
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
        answer = json.load(urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query_range?{query}", timeout=10))
        series = answer["data"]["result"] if answer.get("status") == "success" else []
        points = [float(v) for s in series for _, v in s["values"] if not math.isnan(float(v))]
        if series:
            print(f"  ok: {panel['title']} [{target['refId']}]: {len(series)} series, max {max(points, default=math.nan):.4g}")
        else:
            print(f"  FAILED: {panel['title']} [{target['refId']}] returned no data: {expr}")
            failed = True
sys.exit(1 if failed else 0)
PY
finish
