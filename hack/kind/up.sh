#!/usr/bin/env bash
# Creates the kind cluster of the e2e-kind tier with nothing pulled, and installs the chart.
#
#   hack/kind/up.sh           engine, images, node image, cluster "egpu" (control plane, a worker,
#                             a worker made a GPU node), KWOK with the fleet's fake GPU nodes, the
#                             chart with the images just built (its node agent a pod on the GPU
#                             worker); kubeconfig in ~/.cache/egpu-operator/kind/egpu.kubeconfig
#   hack/kind/up.sh --bare    the same without the chart (the e2e suite then runs its own operator)
#   hack/kind/down.sh         deletes the cluster and its network, stops the engine if up.sh started it
#
# Every image comes from this machine: the project's (hack/images/build.sh), the node's
# (hack/kind/node-image.sh) and KWOK's controller (built here from the pinned module). Egress from
# the cluster's network is blocked before a node starts (hack/kind/engine.sh).
#
# Where the host needs it, and only there: the kubelet runs on cgroup v1 (failCgroupV1: false),
# and engine.sh's runc wrapper drops capabilities the host lacks.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/hack/kind"
name=${KIND_CLUSTER_NAME:-egpu}
cache="${EGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/egpu-operator}/kind"
kubeconfig=${KIND_KUBECONFIG:-$cache/$name.kubeconfig}
tag=dev
chart=true
case "${1:-}" in
  --bare) chart=false ;;
  "") ;;
  *) echo "usage: hack/kind/up.sh [--bare]" >&2; exit 2 ;;
esac
log() { printf '[kind %3d s] %s\n' "$SECONDS" "$*" >&2; }
mkdir -p "$cache"

"$here/engine.sh" up
bin=$("$root/hack/build-tools.sh" kind)
export PATH="$bin:$PATH"
log "building the project's images"
"$root/hack/images/build.sh" "$tag" >&2
log "building the kind node image"
node_image=$("$here/node-image.sh")

# The network first, IPv4 only, and its egress blocked: then the nodes.
if ! docker network inspect kind >/dev/null 2>&1; then
  docker network create --driver bridge kind >/dev/null
fi
"$here/engine.sh" block

config="$cache/$name.kind.yaml"
cp "$here/kind-config.yaml" "$config"
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  log "cgroup v1 host: the kubelet is told not to refuse it (failCgroupV1: false)"
  cat >>"$config" <<'YAML'
kubeadmConfigPatches:
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
YAML
fi
log "creating cluster $name on $node_image"
kind create cluster --name "$name" --image "$node_image" --config "$config" --kubeconfig "$kubeconfig" >&2
kc=(kubectl --kubeconfig "$kubeconfig")

# CoreDNS's image is not built here: remove it before a node can run it (no node is Ready yet).
"${kc[@]}" -n kube-system delete deployment coredns --ignore-not-found >&2
# KWOK's nodes run no containers: kube-proxy (which tolerates every taint) stays off them, or
# each fake GPU node would show a kube-proxy pod that a drain would have to leave behind.
"${kc[@]}" -n kube-system patch daemonset kube-proxy --type=merge -p '{"spec": {"template": {"spec": {"affinity":
  {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms":
  [{"matchExpressions": [{"key": "egpu-operator.io/fleet-node", "operator": "DoesNotExist"}]}]}}}}}}}' >&2

log "networking the nodes: Debian's bridge plugin on each pod CIDR, routes between the nodes"
mapfile -t nodes < <("${kc[@]}" get nodes -o name | cut -d/ -f2)
declare -A cidr ip
for node in "${nodes[@]}"; do
  cidr[$node]=$("${kc[@]}" get node "$node" -o jsonpath='{.spec.podCIDR}')
  ip[$node]=$("${kc[@]}" get node "$node" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
done
for node in "${nodes[@]}"; do
  docker exec -i "$node" sh -c 'cat >/etc/cni/net.d/10-egpu-bridge.conflist' <<JSON
{
  "cniVersion": "0.4.0",
  "name": "egpu",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "${cidr[$node]}"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  for other in "${nodes[@]}"; do
    [ "$other" = "$node" ] || docker exec "$node" ip route replace "${cidr[$other]}" via "${ip[$other]}"
  done
done
"${kc[@]}" wait --for=condition=Ready nodes --all --timeout=180s >&2

gpu_node="$name-worker2"
log "$gpu_node becomes a GPU node, as Node Feature Discovery and the NVIDIA device plugin would make it"
# NFD's PCI label (the chart's agent DaemonSet selects it), the taint GPU nodes commonly carry (so
# only replicas that tolerate it land here), and one nvidia.com/gpu advertised on the node status.
"${kc[@]}" label node "$gpu_node" feature.node.kubernetes.io/pci-10de.present=true --overwrite >&2
"${kc[@]}" taint node "$gpu_node" nvidia.com/gpu=present:NoSchedule --overwrite >&2
"${kc[@]}" patch node "$gpu_node" --subresource=status --type=merge \
  -p '{"status": {"capacity": {"nvidia.com/gpu": "1"}}}' >&2

log "KWOK's controller (built from the pinned module) and its stages"
kwok_version=$(cd "$root/hack/tools/kwok" && go list -m -f '{{.Version}}' sigs.k8s.io/kwok)
kwok_src=$(cd "$root/hack/tools/kwok" && go mod download -json sigs.k8s.io/kwok | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
kwok_image="registry.k8s.io/kwok/kwok:$kwok_version"
kwok_dir=$(mktemp -d)
trap 'rm -rf "$kwok_dir"' EXIT
cp "$bin/kwok" "$kwok_dir/kwok"
tar -C "$kwok_dir" -c kwok | docker import --change 'ENTRYPOINT ["/kwok"]' - "$kwok_image" >/dev/null
kind load docker-image --name "$name" "$kwok_image" >&2
"${kc[@]}" kustomize "$kwok_src/kustomize/kwok" | sed "s|image: registry.k8s.io/kwok/kwok\$|image: $kwok_image|" |
  "${kc[@]}" apply --server-side -f - >&2
"${kc[@]}" apply -f "$bin/kwok-stages/" >&2
"${kc[@]}" -n kube-system rollout status deployment/kwok-controller --timeout=180s >&2

log "the fleet's fake GPU nodes"
# --model-load-scale: replica pods become Ready after a tenth of their estimated model load time,
# as in the local e2e cluster (tests/e2e/conftest.py), so drains show their outages here too.
"$root/.venv/bin/egpu-localcluster" nodes --kubeconfig "$kubeconfig" --kubectl "$bin/kubectl" --model-load-scale 0.1 >&2

if $chart; then
  "$here/install-chart.sh" "$kubeconfig" "$name" "$tag"
fi
log "cluster $name ready: export EGPU_E2E_KUBECONFIG=$kubeconfig"
echo "$kubeconfig"
