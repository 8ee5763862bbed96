#!/usr/bin/env bash
# Renders both overlays with kubectl kustomize and validates every object offline
# (Kubernetes OpenAPI schemas via kubernetes-models, plus recpipe's invariants).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v kubectl >/dev/null || { echo "kubectl not found (scripts/setup-deps.sh installs it)" >&2; exit 1; }
[ -d "$here/node_modules/kubernetes-models" ] || { echo "run scripts/setup-deps.sh first (npm ci in k8s/validate)" >&2; exit 1; }
for ov in dev prod; do
  out="$(mktemp)"
  kubectl kustomize "$here/../overlays/$ov" > "$out"
  case "$ov" in
    dev)  expect='{"shards":1,"retrievalReplicas":1,"hpa":false}' ;;
    prod) expect='{"shards":4,"retrievalReplicas":2,"hpa":true}' ;;
  esac
  node "$here/validate.mjs" "$ov" "$expect" < "$out"
  rm -f "$out"
done
