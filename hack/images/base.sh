#!/usr/bin/env bash
# Builds the images' base, egpu-base:bookworm, from Debian packages with mmdebstrap and
# `docker import`: no image is pulled. Debian bookworm's Python 3.11, a passwd/group entry for
# the uid the images run as (65532, "nonroot": kopf's peering id asks getpass.getuser(), which
# fails for a uid without one), and no docs, man pages or locales.
#
# The tarball is cached under ~/.cache/egpu-operator/images keyed by this script's hash; the
# package list it was made from is written beside it (<key>.packages), so what shipped is known.
#
# Usage: hack/images/base.sh    prints the image name once it is in the local engine
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache="${EGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/egpu-operator}/images"
image=egpu-base:bookworm
mkdir -p "$cache"
log() { printf '[base] %s\n' "$*" >&2; }

key=$(sha256sum "$here/base.sh" | cut -c1-16)
tarball="$cache/base-$key.tar"
if [ ! -s "$tarball" ]; then
  command -v mmdebstrap >/dev/null || {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing mmdebstrap from Debian"
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap >&2
    else
      log "mmdebstrap is not installed: apt-get install mmdebstrap, then run this again"; exit 1
    fi
  }
  log "building the Debian bookworm root filesystem (python3, python3-venv; about a minute)"
  started=$SECONDS
  tmp=$(mktemp "$cache/.base-XXXXXX.tar")
  trap 'rm -f "$tmp"' EXIT
  # shellcheck disable=SC2016 # the hooks are run by mmdebstrap, which passes the root as $1.
  # python3-venv brings ensurepip's wheels, which the images' build stage needs to make a venv.
  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='echo "nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin" >> "$1/etc/passwd"' \
    --customize-hook='echo "nonroot:x:65532:" >> "$1/etc/group"' \
    --customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" > "$1/.packages"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$tmp" >&2
  tar -xOf "$tmp" ./.packages >"$cache/base-$key.packages"
  mv "$tmp" "$tarball"
  find "$cache" -maxdepth 1 -name 'base-*' ! -name "base-$key.*" -delete  # older builds
  trap - EXIT
  log "root filesystem built in $((SECONDS - started)) s ($(du -h "$tarball" | cut -f1))"
fi
if [ "$(docker images -q "$image")" != "$(cat "$cache/base-$key.id" 2>/dev/null)" ] || [ -z "$(docker images -q "$image")" ]; then
  log "importing $image"
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
  docker images -q "$image" >"$cache/base-$key.id"
fi
echo "$image"
