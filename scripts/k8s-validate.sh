#!/usr/bin/env bash
# Renders every kustomization under deploy/kubernetes (each base and each overlay) with
# `kubectl kustomize` and checks the output (scripts/k8s-validate.py): every object against
# the Kubernetes JSON schemas (kubernetes-validate from PyPI, strict), the objects each
# topology needs, and agreement with the code (every flotilla flag exists in cli.rs; the
# ingest ClusterRole reads exactly the kinds of flotilla_model::Kind). Fails on any problem.
#
# kubernetes-validate goes into a venv under $FLOTILLA_K8S_TOOLS (default
# /var/tmp/flotilla-k8s-tools), once, as scripts/setup.sh installs Envoy. Kubernetes version
# of the schemas: $K8S_VERSION (default 1.36.0, the API level of the workspace's
# k8s-openapi feature v1_36).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
TOOLS=${FLOTILLA_K8S_TOOLS:-/var/tmp/flotilla-k8s-tools}
K8S_VERSION=${K8S_VERSION:-1.36.0}
KV_VERSION=1.37.0
start=$(date +%s)

kubectl=$(command -v kubectl || true)
[ -n "$kubectl" ] || { [ -x /usr/bin/kubectl ] && kubectl=/usr/bin/kubectl; }
if [ -z "$kubectl" ]; then
  echo "k8s-validate: kubectl not found (looked in PATH and /usr/bin/kubectl); it renders the" \
    "kustomizations (kubectl kustomize). Install kubectl >= 1.27." >&2
  exit 1
fi

py="$TOOLS/venv/bin/python"
if ! "$py" -c "import kubernetes_validate, yaml" 2>/dev/null; then
  echo "k8s-validate: installing kubernetes-validate==$KV_VERSION (pip) into $TOOLS/venv" >&2
  mkdir -p "$TOOLS"
  python3 -m venv "$TOOLS/venv" >&2
  "$TOOLS/venv/bin/pip" install -q "kubernetes-validate==$KV_VERSION" >&2
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rendered=()
while IFS= read -r k; do
  dir=$(dirname "$k")
  rel=${dir#deploy/kubernetes/}
  file="$out/$(echo "$rel" | tr / -).yaml"
  if ! "$kubectl" kustomize "$dir" >"$file" 2>"$file.err"; then
    echo "k8s-validate: FAIL: kubectl kustomize $dir:" >&2
    cat "$file.err" >&2
    exit 1
  fi
  rendered+=("$file")
done < <(find deploy/kubernetes -name kustomization.yaml | sort)
[ ${#rendered[@]} -gt 0 ] || { echo "k8s-validate: no kustomization under deploy/kubernetes" >&2; exit 1; }

"$py" scripts/k8s-validate.py "$root" "$K8S_VERSION" "${rendered[@]}"
echo "k8s-validate: ${#rendered[@]} kustomizations rendered and valid in $(( $(date +%s) - start ))s"
