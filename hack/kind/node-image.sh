#!/usr/bin/env bash
# Builds the kind node image from pinned sources with nothing pulled (`kind build node-image`
# pulls, so it is not used):
#   - a Debian bookworm root filesystem (mmdebstrap) with systemd, containerd, runc and the CNI
#     plugins from Debian's packages, kind's node files (entry point, kubelet units) from the
#     pinned kind module, and kubelet, kubeadm, kubectl built from the pinned Kubernetes module;
#   - inside it, the images kubeadm asks for, built here: kube-apiserver, kube-controller-manager,
#     kube-scheduler and etcd FROM scratch around the binaries hack/build-tools.sh builds, pause
#     from its C source in the Kubernetes module, kube-proxy on the node's own root filesystem
#     (it needs iptables); tagged as `kubeadm config images list` prints them and imported into
#     containerd at boot. CoreDNS is not built: the cluster skips that addon (hack/kind/up.sh).
#
# Cached in ~/.cache/egpu-operator/kind, keyed by this script, hack/kind/node/ and the binaries.
# Usage: hack/kind/node-image.sh     prints the image name once it is in the local engine
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/hack/kind"
cache="${EGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/egpu-operator}/kind"
mkdir -p "$cache"
log() { printf '[node-image] %s\n' "$*" >&2; }

bin=$("$root/hack/build-tools.sh" kind)
module_dir() { # <toolset> <module>
  (cd "$root/hack/tools/$1" && go mod download -json "$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}
kube_version=$(cd "$root/hack/tools/kubenode" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
kind_files="$(module_dir kind sigs.k8s.io/kind)/images/base/files"
kube_src=$(module_dir kubenode k8s.io/kubernetes)

# The root filesystem is keyed by what goes into it (bump rootfs_recipe when the mmdebstrap call
# below changes); the image by that and this script.
rootfs_recipe=1
rootfs_key=$( (echo "$rootfs_recipe $kind_files"; cat "$here"/node/*; for tool in kubelet kubeadm kubectl kube-proxy; do
  readlink -f "$bin/$tool"; done) | sha256sum | cut -c1-12)
key=$( (echo "$rootfs_key"; cat "$here/node-image.sh"; for tool in kube-apiserver kube-controller-manager kube-scheduler etcd; do
  readlink -f "$bin/$tool"; done) | sha256sum | cut -c1-12)
image="egpu-kind-node:$kube_version-$key"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
started=$SECONDS
work=$(mktemp -d "$cache/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT

# The names and tags kubeadm will ask containerd for.
mapfile -t wanted < <("$bin/kubeadm" config images list --kubernetes-version "$kube_version" 2>/dev/null)
tag_of() { printf '%s\n' "${wanted[@]}" | grep "/$1:"; }

rootfs="$cache/rootfs-$rootfs_key.tar"
if [ ! -s "$rootfs" ]; then
  command -v mmdebstrap >/dev/null || { log "mmdebstrap is not installed: apt-get install mmdebstrap"; exit 1; }
  log "building the node's Debian bookworm root filesystem (systemd, containerd, runc, CNI plugins; a few minutes)"
  mkdir -p "$work/overlay/usr/bin" "$work/overlay/usr/local/bin"
  cp "$bin/kubelet" "$bin/kubeadm" "$bin/kubectl" "$work/overlay/usr/bin/"
  cp "$bin/kube-proxy" "$work/overlay/usr/local/bin/"
  # shellcheck disable=SC2016 # the hooks are run by mmdebstrap, which passes the root as $1.
  mmdebstrap --variant=minbase \
    --include=systemd,dbus,containerd,runc,containernetworking-plugins,iptables,nftables,conntrack,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,procps \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="cp -a '$work/overlay/.' \"\$1/\"" \
    --customize-hook="install -m 0755 '$kind_files/usr/local/bin/entrypoint' '$here/node/egpu-entrypoint' \"\$1/usr/local/bin/\"" \
    --customize-hook="mkdir -p \"\$1/kind/bin\" \"\$1/kind/manifests\" \"\$1/kind/images\" \"\$1/etc/kubernetes/manifests\" \"\$1/etc/systemd/system/kubelet.service.d\" \"\$1/etc/systemd/system/containerd.service.d\" \"\$1/etc/containerd\" \"\$1/etc/cni/net.d\"" \
    --customize-hook="install -m 0755 '$kind_files'/kind/bin/* \"\$1/kind/bin/\"" \
    --customize-hook="install -m 0644 '$kind_files'/etc/sysctl.d/* \"\$1/etc/sysctl.d/\"" \
    --customize-hook="install -m 0644 '$kind_files/etc/default/kubelet' \"\$1/etc/default/\"" \
    --customize-hook="install -m 0644 '$kind_files/etc/crictl.yaml' \"\$1/etc/\"" \
    --customize-hook="install -m 0644 '$kind_files/etc/systemd/system/kubelet.service' '$kind_files/etc/systemd/system/kubelet.slice' '$kind_files/etc/systemd/system/undo-mount-hacks.service' '$here/node/egpu-import-images.service' \"\$1/etc/systemd/system/\"" \
    --customize-hook="install -m 0644 '$kind_files/etc/systemd/system/kubelet.service.d/10-kubeadm.conf' '$here/node/kubelet-after-images.conf' \"\$1/etc/systemd/system/kubelet.service.d/\"" \
    --customize-hook="install -m 0644 '$here/node/containerd-no-pull.conf' \"\$1/etc/systemd/system/containerd.service.d/\"" \
    --customize-hook="install -m 0644 '$here/node/containerd.toml' \"\$1/etc/containerd/config.toml\"" \
    --customize-hook="install -m 0644 '$here/node/default-storage.yaml' \"\$1/kind/manifests/\"" \
    --customize-hook="echo '$kube_version' > \"\$1/kind/version\"" \
    --customize-hook='rm -f "$1"/lib/systemd/system/multi-user.target.wants/* "$1"/etc/systemd/system/*.wants/* "$1"/lib/systemd/system/local-fs.target.wants/* "$1"/lib/systemd/system/sockets.target.wants/*udev* "$1"/lib/systemd/system/sockets.target.wants/*initctl* "$1"/lib/systemd/system/basic.target.wants/*' \
    --customize-hook='find "$1"/lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete' \
    --customize-hook='echo ReadKMsg=no >> "$1/etc/systemd/journald.conf"; ln -sf /usr/lib/systemd/systemd "$1/sbin/init"' \
    --customize-hook='chroot "$1" systemctl enable kubelet.service containerd.service undo-mount-hacks.service egpu-import-images.service' \
    --customize-hook='chroot "$1" systemctl mask systemd-binfmt.service' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$work/rootfs.tar" >&2
  mv "$work/rootfs.tar" "$rootfs"
  find "$cache" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$rootfs_key.tar" -delete  # older builds
  log "root filesystem built ($(du -h "$rootfs" | cut -f1))"
fi

log "building the control-plane images around the built binaries"
images=()
scratch_image() { # <name> <binary>
  local dir="$work/$1" ref
  ref=$(tag_of "$1")
  mkdir -p "$dir/usr/local/bin"
  cp "$2" "$dir/usr/local/bin/$1"
  tar -C "$dir" -c usr | docker import --change 'ENV PATH=/usr/local/bin' - "$ref" >/dev/null
  images+=("$ref")
}
for component in kube-apiserver kube-controller-manager kube-scheduler etcd; do
  scratch_image "$component" "$bin/$component"
done
# pause: the C source in the Kubernetes module, linked statically.
mkdir -p "$work/pause"
cc -Os -static -o "$work/pause/pause" -DVERSION="$(tag_of pause | cut -d: -f2)" "$kube_src/build/pause/linux/pause.c"
strip "$work/pause/pause"
tar -C "$work/pause" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$(tag_of pause)" >/dev/null
images+=("$(tag_of pause)")
# kube-proxy needs iptables and conntrack: the node's own root filesystem has them.
docker import --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$rootfs" "$(tag_of kube-proxy)" >/dev/null
images+=("$(tag_of kube-proxy)")
grep -q 'pause:3.10.1"' "$here/node/containerd.toml" || { log "node/containerd.toml's sandbox_image is not $(tag_of pause)"; exit 1; }

log "assembling $image"
mkdir -p "$work/context"
docker save "${images[@]}" -o "$work/context/images.tar"
docker import --change 'ENTRYPOINT ["/usr/local/bin/egpu-entrypoint", "/sbin/init"]' \
  --change 'ENV container=docker' "$rootfs" "$image-base" >/dev/null
cat >"$work/context/Dockerfile" <<DOCKERFILE
FROM $image-base
STOPSIGNAL SIGRTMIN+3
COPY images.tar /kind/images/images.tar
DOCKERFILE
if ! DOCKER_BUILDKIT=0 docker build --network none --pull=false -t "$image" "$work/context" >"$work/build.log" 2>&1; then
  log "docker build of $image failed:"
  cat "$work/build.log" >&2
  exit 1
fi
docker rmi "$image-base" "${images[@]}" >/dev/null
# Older node images of this script, replaced by this one.
# (grep finds nothing on a first build: that is not a failure.)
docker images egpu-kind-node --format '{{.Repository}}:{{.Tag}}' | { grep -vx "$image" || true; } | xargs -r docker rmi >/dev/null
log "built $image in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}'))"
echo "$image"
