#!/usr/bin/env bash
# deploy/prometheus/alerts.yml: `promtool check rules`, `promtool test rules` on alerts.test.yml, every alert has a
# unit test where it fires and one where it stays quiet, and every metric the rules read is one pgward exports
# (admin/metrics.cpp).
source "$(dirname "$0")/lib.sh"
prom="${PGWARD_PROMETHEUS_DIR:-$DEPLOY_DIR/prometheus}"
command -v promtool >/dev/null || { echo "  FAILED: promtool not found (Debian's prometheus package)"; exit 1; }

if out="$(promtool check rules "$prom/alerts.yml" 2>&1)"; then ok "promtool check rules: $(grep -o '[0-9]* rules found' <<<"$out")"
else bad "promtool check rules: $out"; fi
if out="$(cd "$prom" && promtool test rules alerts.test.yml 2>&1)"; then ok "promtool test rules"
else bad "promtool test rules: $out"; fi

"$PYTHON" - "$prom/alerts.yml" "$prom/alerts.test.yml" "$REPO_DIR/admin/metrics.cpp" <<'PY' || failures=$((failures + 1))
import re, sys, yaml
rules_file, tests_file, metrics_cpp = sys.argv[1:4]
rules = [r for g in yaml.safe_load(open(rules_file))["groups"] for r in g["rules"] if "alert" in r]
tests = [t for u in yaml.safe_load(open(tests_file))["tests"] for t in u.get("alert_rule_test", [])]
exported = set(re.findall(r'"(pgward_[a-z_]+)"', open(metrics_cpp).read()))
failed = False
for rule in rules:
    name = rule["alert"]
    fires = any(t["alertname"] == name and t.get("exp_alerts") for t in tests)
    quiet = any(t["alertname"] == name and not t.get("exp_alerts") for t in tests)
    if fires and quiet:
        print(f"  ok: {name} has a unit test where it fires and one where it does not")
    else:
        print(f"  FAILED: {name} lacks a unit test where it {'fires' if not fires else 'stays quiet'}")
        failed = True
    used = set(re.findall(r"\bpgward_[a-z_]+", rule["expr"]))
    # Histograms export NAME_bucket, NAME_sum and NAME_count.
    unknown = sorted(m for m in used if m not in exported and re.sub(r"_(bucket|sum|count)$", "", m) not in exported)
    if unknown:
        print(f"  FAILED: {name} reads metrics pgward does not export: {unknown}")
        failed = True
    else:
        print(f"  ok: {name} reads exported metrics only ({', '.join(sorted(used))})")
sys.exit(1 if failed else 0)
PY
finish
