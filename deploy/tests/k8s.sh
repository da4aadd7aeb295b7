#!/usr/bin/env bash
# deploy/k8s: renders each kustomize base offline with `kubectl kustomize` and checks the objects (k8s_check.py):
# ports, probe paths, the native sidecar, Secrets through env:, the preStop/drain/grace arithmetic, the central
# tier's server-connection budget, the monitors' selectors, ports and tokens, and that the rendered pgward.toml uses
# documented keys only and passes `pgward --check-config`.
source "$(dirname "$0")/lib.sh"
need_build
command -v kubectl >/dev/null || { echo "  FAILED: kubectl not found (scripts/install-deps.sh installs it)"; exit 1; }
k8s="${PGWARD_K8S_DIR:-$DEPLOY_DIR/k8s}"
for base in sidecar central monitoring; do
  if kubectl kustomize "$k8s/$base" >"$TMP/$base.yaml" 2>"$TMP/$base.err"; then
    ok "kubectl kustomize $base"
  else
    bad "kubectl kustomize $base: $(cat "$TMP/$base.err")"
    finish
  fi
done
"$PYTHON" "$(dirname "$0")/k8s_check.py" "$TMP" "$BUILD_DIR/app/pgward" "$INTERFACE_MD" "$REPO_DIR/README.md" "$TMP" \
  || failures=$((failures + 1))
finish
