#!/usr/bin/env bash
# deploy/grafana/pgward.json: valid JSON, panels with unique ids that do not overlap, every panel has a Prometheus
# query, every query parses (promtool check rules on the queries as recording rules, with Grafana's variables
# replaced by values), and every metric a query reads is one pgward exports (admin/metrics.cpp).
source "$(dirname "$0")/lib.sh"
dashboard="${PGWARD_DASHBOARD:-$DEPLOY_DIR/grafana/pgward.json}"
"$PYTHON" - "$dashboard" "$REPO_DIR/admin/metrics.cpp" "$TMP/queries.yml" <<'PY' || failures=$((failures + 1))
import json, re, sys
dashboard_file, metrics_cpp, rules_out = sys.argv[1:4]
failed = False
def check(what, condition, detail=""):
    global failed
    print(f"  ok: {what}" if condition else f"  FAILED: {what}" + (f" ({detail})" if detail else ""))
    failed |= not condition
try:
    dashboard = json.load(open(dashboard_file))
except ValueError as e:
    check("the dashboard is valid JSON", False, str(e))
    sys.exit(1)
exported = set(re.findall(r'"(pgward_[a-z_]+)"', open(metrics_cpp).read()))
panels = dashboard["panels"]
ids = [p["id"] for p in panels]
check(f"{len(panels)} panels with unique ids", len(set(ids)) == len(ids) > 0)
cells, overlaps = {}, set()
for p in panels:
    g = p["gridPos"]
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                overlaps.add((cells[(x, y)], p["title"]))
            cells[(x, y)] = p["title"]
check("panels do not overlap", not overlaps, "; ".join(f"{a!r} and {b!r}" for a, b in sorted(overlaps)))
rules = []
for p in panels:
    exprs = [t.get("expr", "") for t in p.get("targets", [])]
    check(f"{p['title']}: has queries", exprs and all(exprs))
    for expr in exprs:
        used = set(re.findall(r"\bpgward_[a-z_]+", expr))
        unknown = sorted(m for m in used if re.sub(r"_(bucket|sum|count)$", "", m) not in exported and m not in exported)
        check(f"{p['title']}: reads exported metrics ({', '.join(sorted(used))})", used and not unknown, str(unknown))
        concrete = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        rules.append({"record": f"pgward:panel_{p['id']}:query_{len(rules)}", "expr": concrete})
with open(rules_out, "w") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)  # JSON is YAML
sys.exit(1 if failed else 0)
PY
if out="$(promtool check rules "$TMP/queries.yml" 2>&1)"; then
  ok "every query parses (promtool: $(grep -o '[0-9]* rules found' <<<"$out"))"
else
  bad "promtool check rules on the queries: $out"
fi
finish
