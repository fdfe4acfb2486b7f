#!/usr/bin/env bash
# Installs the chart on the kind cluster with the images hack/images/build.sh just built, and
# waits for its pods itself: `helm --wait` has reported success while the operator was in Error.
#
#   hack/kind/install-chart.sh KUBECONFIG CLUSTER TAG
#
# The operator is pinned to the first kind worker, a real node (a KWOK node runs no containers, so
# a pod placed there only seems to run). The node agent runs as the chart's DaemonSet on the GPU
# worker up.sh made ("<cluster>-worker2"), on the fake backend with hack/kind/gpu-worker-fleet.yaml,
# as uid 65532 with a read-only root (power requests are dry runs there). It keeps the chart's GPU
# node selector (NFD's pci-10de label); an affinity keeps it off KWOK's fleet nodes, whose agents
# the e2e suite runs itself.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
kubeconfig=$1 name=$2 tag=$3
namespace=egpu-system
bin=$("$root/hack/build-tools.sh")
kc=("$bin/kubectl" --kubeconfig "$kubeconfig")
log() { printf '[chart] %s\n' "$*" >&2; }

log "loading egpu-operator:$tag and egpu-node-agent:$tag into the nodes"
"$bin/kind" load docker-image --name "$name" "egpu-operator:$tag" "egpu-node-agent:$tag" >&2
worker="$name-worker"
gpu_worker="$name-worker2"
fleet=$(mktemp)
trap 'rm -f "$fleet"' EXIT
sed "s/^  - name: kind-gpu-worker$/  - name: $gpu_worker/" "$root/hack/kind/gpu-worker-fleet.yaml" >"$fleet"
log "installing the chart (operator on $worker, node agent on $gpu_worker)"
"$bin/helm" --kubeconfig "$kubeconfig" upgrade --install egpu-operator "$root/charts/egpu-operator" \
  --namespace "$namespace" --create-namespace \
  --set operator.image.repository=egpu-operator --set operator.image.tag="$tag" \
  --set operator.image.pullPolicy=Never \
  --set agent.image.repository=egpu-node-agent --set agent.image.tag="$tag" \
  --set agent.image.pullPolicy=Never \
  --set agent.backend=fake --set-file agent.fleetProfile="$fleet" --set agent.nvidia.runtimeClassName= \
  --set agent.pollIntervalSeconds=2 \
  --set-json 'agent.affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms":
    [{"matchExpressions": [{"key": "egpu-operator.io/fleet-node", "operator": "DoesNotExist"}]}]}}}' \
  --set-json "operator.nodeSelector={\"kubernetes.io/hostname\": \"$worker\"}" >&2

log "waiting for the operator to be Ready (and never in Error)"
deadline=$((SECONDS + 180))
while :; do
  pods=$("${kc[@]}" -n "$namespace" get pods -l app.kubernetes.io/component=operator \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.waiting.reason}{"\n"}{end}')
  if grep -qE 'CrashLoopBackOff|Error|ErrImage|ImagePull|CreateContainerError' <<<"$pods" || grep -qE ' [1-9][0-9]* ' <<<"$pods"; then
    log "the operator pod fails: $pods"
    "${kc[@]}" -n "$namespace" logs -l app.kubernetes.io/component=operator --tail 40 >&2 || true
    exit 1
  fi
  if "${kc[@]}" -n "$namespace" wait --for=condition=Available deployment -l app.kubernetes.io/component=operator --timeout=1s >/dev/null 2>&1; then
    break
  fi
  if (( SECONDS > deadline )); then
    log "the operator was not Ready within 180 s: $pods"
    "${kc[@]}" -n "$namespace" describe pods -l app.kubernetes.io/component=operator >&2
    exit 1
  fi
  sleep 2
done
log "waiting for the node agent on $gpu_worker to run and publish its GPU"
"${kc[@]}" -n "$namespace" rollout status daemonset -l app.kubernetes.io/component=node-agent --timeout=120s >&2
deadline=$((SECONDS + 60))
until [ -n "$("${kc[@]}" get node "$gpu_worker" -o jsonpath='{.metadata.labels.egpu-operator\.io/gpu-product}')" ]; do
  if (( SECONDS > deadline )); then
    log "the node agent published no labels on $gpu_worker within 60 s"
    "${kc[@]}" -n "$namespace" logs -l app.kubernetes.io/component=node-agent --tail 40 >&2 || true
    exit 1
  fi
  sleep 1
done
"${kc[@]}" -n "$namespace" get pods -o wide >&2
