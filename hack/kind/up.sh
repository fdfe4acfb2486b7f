#!/usr/bin/env bash
# Creates a kind cluster with the default fleet as fake (KWOK) GPU nodes, for users with Docker.
#
#   hack/kind/up.sh                      # cluster "egpu", kubeconfig in ~/.cache/egpu-operator/kind.kubeconfig
#   EGPU_E2E_KUBECONFIG=~/.cache/egpu-operator/kind.kubeconfig make e2e
#   kind delete cluster --name egpu
#
# Needs docker, kind and kubectl on PATH, and the project's virtualenv (`make venv`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
name=${KIND_CLUSTER_NAME:-egpu}
kubeconfig=${KIND_KUBECONFIG:-$HOME/.cache/egpu-operator/kind.kubeconfig}
# Keep in step with hack/tools/kwok/go.mod.
kwok_version=$(cd "$root/hack/tools/kwok" && go list -m -f '{{.Version}}' sigs.k8s.io/kwok 2>/dev/null || echo v0.8.0)
kwok_release="https://github.com/kubernetes-sigs/kwok/releases/download/$kwok_version"

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "up.sh: $tool is not on PATH; install it first" >&2; exit 1; }
done
mkdir -p "$(dirname "$kubeconfig")"

echo "[kind] creating cluster $name"
kind create cluster --name "$name" --config "$root/hack/kind/kind-config.yaml" --kubeconfig "$kubeconfig" --wait 120s

echo "[kind] installing the KWOK controller $kwok_version and its fast pod/node stages"
kubectl --kubeconfig "$kubeconfig" apply -f "$kwok_release/kwok.yaml"
kubectl --kubeconfig "$kubeconfig" apply -f "$kwok_release/stage-fast.yaml"
kubectl --kubeconfig "$kubeconfig" -n kube-system rollout status deployment/kwok-controller --timeout=120s

echo "[kind] creating the fleet's fake GPU nodes"
"$root/.venv/bin/egpu-localcluster" nodes --kubeconfig "$kubeconfig"
echo "export EGPU_E2E_KUBECONFIG=$kubeconfig"
