#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok, kwokctl, helm) from the pinned Go modules under hack/tools/ and caches
# the binaries outside the repository.
#
# Each tool set is cached in its own folder keyed by a hash of its go.mod/go.sum/sources and
# the Go version, so bumping Helm does not rebuild Kubernetes. A build goes to a temporary
# folder that is renamed into place only when every binary linked: an interrupted build never
# leaves a half-filled cache behind.
#
# Usage: hack/build-tools.sh            build what is missing, print the bin folder
#        hack/build-tools.sh promtool   also promtool (the chart's alert rules and dashboard tests)
#        hack/build-tools.sh helm3      also a Helm 3 client, linked as helm3 (the chart's Helm 3 tests)
#        hack/build-tools.sh kind       also kind and the kind node's kubelet, kubeadm, kube-proxy
#                                       (make e2e-kind; hack/kind/node-image.sh)
#        EGPU_CACHE_DIR=/path hack/...  cache somewhere other than ~/.cache/egpu-operator
#
# promtool and helm3 are opt-in: on 2 cores the first promtool build takes minutes (Prometheus
# pulls in every service-discovery client), and `make demo` needs neither.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/hack/tools"
cache="${EGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/egpu-operator}"
bin="$cache/bin"
mkdir -p "$cache/tools" "$bin"

log() { printf '[build-tools] %s\n' "$*" >&2; }

if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed: install Go >= 1.26 (https://go.dev/dl/) and run this again."
  exit 1
fi
go_version=$(go env GOVERSION)

# Versions live in the go.mod files; the stamps below read them back so there is one source.
module_version() { # <toolset> <module>
  (cd "$tools/$1" && go list -m -f '{{.Version}}' "$2")
}

toolset_key() { # <toolset>
  (cd "$tools/$1" && shopt -s nullglob && cat go.mod go.sum ./*.go && echo "$go_version") | sha256sum | cut -c1-16
}

build_toolset() { # <toolset> <ldflags> <package or output=package>...
  local name=$1 ldflags=$2; shift 2
  local key dest tmp started
  key=$(toolset_key "$name")
  dest="$cache/tools/$name-$key"
  if [ ! -d "$dest" ]; then
    tmp=$(mktemp -d "$cache/tools/.$name-XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    for spec in "$@"; do
      local pkg=${spec#*=} out=""
      [ "$spec" != "$pkg" ] && out=${spec%%=*}
      started=$SECONDS
      log "building $name: $pkg (first build on this machine; cached afterwards)"
      (cd "$tools/$name" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/$out" "$pkg")
      log "built ${out:-$(basename "$pkg")} in $((SECONDS - started)) s"
    done
    mv "$tmp" "$dest"
    trap - EXIT
  fi
  for f in "$dest"/*; do ln -sfn "$f" "$bin/$(basename "$f")"; done
}

kube_version=$(module_version kube k8s.io/kubernetes)
kube_minor=$(echo "$kube_version" | cut -d. -f2)
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
helm_version=$(module_version helm helm.sh/helm/v4)

# KWOK's own default Stage manifests (pod and node lifecycles), taken from the pinned module:
# the local cluster adds a model-load delay to the pod-ready stage when it simulates load
# times (localcluster/egpu_localcluster/stages.py), and kwokctl then wants the whole set.
copy_kwok_stages() {
  local version dest src tmp
  version=$(module_version kwok sigs.k8s.io/kwok)
  dest="$cache/tools/kwok-stages-$version"
  if [ ! -d "$dest" ]; then
    src=$(cd "$tools/kwok" && go mod download -json sigs.k8s.io/kwok | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    tmp=$(mktemp -d "$cache/tools/.kwok-stages-XXXXXX")
    cp "$src/kustomize/stage/node/fast/node-initialize.yaml" \
       "$src/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
       "$src/kustomize/stage/pod/fast/pod-ready.yaml" "$src/kustomize/stage/pod/fast/pod-complete.yaml" \
       "$src/kustomize/stage/pod/fast/pod-delete.yaml" "$tmp/"
    chmod u+w "$tmp"/*
    mv "$tmp" "$dest"
  fi
  ln -sfn "$dest" "$bin/kwok-stages"
}

total=$SECONDS
build_toolset etcd "" .
build_toolset kwok "" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
copy_kwok_stages
build_toolset helm "-X helm.sh/helm/v4/internal/version.version=$helm_version -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
  helm.sh/helm/v4/cmd/helm
build_toolset kube "$kube_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
for extra in "$@"; do
  case $extra in
    promtool)
      prometheus_version=$(module_version promtool github.com/prometheus/prometheus)
      build_toolset promtool "-X github.com/prometheus/common/version.Version=$prometheus_version" \
        github.com/prometheus/prometheus/cmd/promtool ;;
    helm3)
      helm3_version=$(module_version helm3 helm.sh/helm/v3)
      build_toolset helm3 "-X helm.sh/helm/v3/internal/version.version=$helm3_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
        helm3=helm.sh/helm/v3/cmd/helm ;;
    kind)
      build_toolset kind "" sigs.k8s.io/kind
      build_toolset kubenode "$kube_ldflags" \
        k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kube-proxy ;;
    *) log "unknown tool $extra: the opt-in tools are promtool, helm3 and kind"; exit 2 ;;
  esac
done
log "tools ready in $bin ($((SECONDS - total)) s)"
echo "$bin"
