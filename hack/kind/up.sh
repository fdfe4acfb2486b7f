#!/usr/bin/env bash
# Creates a kind cluster with the default fleet as fake (KWOK) GPU nodes, for users with Docker.
#
#   hack/kind/up.sh                      # cluster "egpu", kubeconfig in ~/.cache/egpu-operator/kind.kubeconfig
#   EGPU_E2E_KUBECONFIG=~/.cache/egpu-operator/kind.kubeconfig make e2e
#   hack/kind/up.sh --chart              # quickstart instead: build both images, install the Helm chart
#                                        # (fake GPU backend on the kind worker) and apply an example
#   kind delete cluster --name egpu
#
# --chart is not for the e2e suite: the suite runs its own operator, and two would compete.
# Needs docker, kind and kubectl on PATH (and helm for --chart), and the project's virtualenv (`make venv`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
name=${KIND_CLUSTER_NAME:-egpu}
kubeconfig=${KIND_KUBECONFIG:-$HOME/.cache/egpu-operator/kind.kubeconfig}
namespace=egpu-system
tag=dev
chart=false
case "${1:-}" in
  --chart) chart=true ;;
  "") ;;
  *) echo "usage: hack/kind/up.sh [--chart]" >&2; exit 2 ;;
esac
# Keep in step with hack/tools/kwok/go.mod.
kwok_version=$(cd "$root/hack/tools/kwok" && go list -m -f '{{.Version}}' sigs.k8s.io/kwok 2>/dev/null || echo v0.8.0)
kwok_release="https://github.com/kubernetes-sigs/kwok/releases/download/$kwok_version"

tools=(docker kind kubectl)
if $chart; then tools+=(helm); fi
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "up.sh: $tool is not on PATH; install it first" >&2; exit 1; }
done
mkdir -p "$(dirname "$kubeconfig")"
kc=(--kubeconfig "$kubeconfig")

echo "[kind] creating cluster $name"
kind create cluster --name "$name" --config "$root/hack/kind/kind-config.yaml" --kubeconfig "$kubeconfig" --wait 120s

echo "[kind] installing the KWOK controller $kwok_version and its fast pod/node stages"
kubectl "${kc[@]}" apply -f "$kwok_release/kwok.yaml"
kubectl "${kc[@]}" apply -f "$kwok_release/stage-fast.yaml"
kubectl "${kc[@]}" -n kube-system rollout status deployment/kwok-controller --timeout=120s

echo "[kind] creating the fleet's fake GPU nodes"
# --model-load-scale: replica pods become Ready after a tenth of their estimated model load time,
# as in the local e2e cluster (tests/e2e/conftest.py), so drains show their outages here too.
"$root/.venv/bin/egpu-localcluster" nodes --kubeconfig "$kubeconfig" --model-load-scale 0.1

if ! $chart; then
  echo "export EGPU_E2E_KUBECONFIG=$kubeconfig"
  exit 0
fi

echo "[kind] building the images"
docker build -f "$root/images/operator.Dockerfile" -t "egpu-operator:$tag" "$root"
docker build -f "$root/images/node-agent.Dockerfile" -t "egpu-node-agent:$tag" "$root"
kind load docker-image --name "$name" "egpu-operator:$tag" "egpu-node-agent:$tag"

# KWOK's nodes run no containers, so the operator and the agent are pinned to the kind worker, a
# real node (unpinned, the scheduler could pick a KWOK node and they would only seem to run). The
# agent uses the fake GPU backend: the worker plays the default fleet's Raspberry Pi 5 with an
# RTX 4090 on PCIe Gen3 x1. It gets what NFD and the NVIDIA device plugin would give a GPU node.
worker="$name-worker"
echo "[kind] making $worker a (simulated) GPU node"
kubectl "${kc[@]}" label node "$worker" --overwrite feature.node.kubernetes.io/pci-10de.present=true
kubectl "${kc[@]}" patch node "$worker" --subresource=status --type=json \
  -p '[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "1"}]'
fleet=$(mktemp)
trap 'rm -f "$fleet"' EXIT
"$root/.venv/bin/python" - "$worker" >"$fleet" <<'PY'
import sys

import yaml

from egpu_api.fleet import DEFAULT_FLEET

profile = yaml.safe_load(DEFAULT_FLEET.read_text())
node = next(node for node in profile["nodes"] if node["name"] == "pi5-rtx4090")
profile["nodes"] = [{**node, "name": sys.argv[1]}]
print(yaml.safe_dump(profile, sort_keys=False))
PY

echo "[kind] installing the chart"
helm "${kc[@]}" upgrade --install egpu-operator "$root/charts/egpu-operator" \
  --namespace "$namespace" --create-namespace --wait --timeout 5m \
  --set operator.image.repository=egpu-operator --set operator.image.tag="$tag" \
  --set agent.image.repository=egpu-node-agent --set agent.image.tag="$tag" \
  --set agent.backend=fake --set-file agent.fleetProfile="$fleet" \
  --set agent.nvidia.runtimeClassName= \
  --set-json "operator.nodeSelector={\"kubernetes.io/hostname\": \"$worker\"}" \
  --set-json "agent.nodeSelector={\"feature.node.kubernetes.io/pci-10de.present\": null, \"kubernetes.io/hostname\": \"$worker\"}"

echo "[kind] applying examples/02-llm-6gb-20s-budget.yaml"
kubectl "${kc[@]}" apply -f "$root/examples/02-llm-6gb-20s-budget.yaml"
echo "[kind] done. The replica is placed on $worker (its image is an example and will not pull):"
echo "  kubectl --kubeconfig $kubeconfig get nodes -L egpu-operator.io/gpu-product,egpu-operator.io/pcie-bandwidth-mbps"
echo "  kubectl --kubeconfig $kubeconfig get idep,pods -o wide"
