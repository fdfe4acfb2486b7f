#!/usr/bin/env bash
# Builds the operator and node agent images with nothing pulled and nothing fetched inside a
# build: the base comes from hack/images/base.sh (Debian packages), the Python packages from a
# wheelhouse downloaded on this host from the images' lock files (hashes checked twice: by
# `pip download` here and `pip install --require-hashes` in the image), the project itself as a
# wheel built from this checkout. Builds run with --network none.
#
# Usage: hack/images/build.sh [TAG]    default tag "dev"; prints each image's name and size
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tag=${1:-dev}
cache="${EGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/egpu-operator}/images"
log() { printf '[images] %s\n' "$*" >&2; }

base=$("$root/hack/images/base.sh")
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

# Locked wheels for the image's Python (Debian bookworm: CPython 3.11) and this machine's
# architecture, cached per lock file content.
wheelhouse() { # <image>
  local lock="$root/images/$1.lock" key dest tmp
  key=$(sha256sum "$lock" | cut -c1-16)
  dest="$cache/wheels-$1-$key"
  if [ ! -d "$dest" ]; then
    log "downloading the wheels locked in images/$1.lock (cached afterwards)"
    tmp=$(mktemp -d "$cache/.wheels-XXXXXX")
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
      --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
      --platform "manylinux_2_36_$(uname -m)" --platform "manylinux_2_17_$(uname -m)" \
      --platform "manylinux2014_$(uname -m)" --platform "any" \
      -r "$lock" -d "$tmp" >&2
    mv "$tmp" "$dest"
  fi
  echo "$dest"
}

log "building the project wheel from this checkout"
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$context/project" "$root" >&2

for image in operator node-agent; do
  rm -rf "$context/wheels" && mkdir "$context/wheels"
  cp "$(wheelhouse "$image")"/* "$context/wheels/"
  cp "$context/project"/*.whl "$context/wheels/"
  cp "$root/images/$image.lock" "$context/wheels/requirements.lock"
  log "building egpu-$image:$tag"
  # The legacy builder uses the local base as it is (BuildKit may ask a registry about it).
  if ! DOCKER_BUILDKIT=0 docker build --quiet --network none --pull=false --build-arg "BASE=$base" --label egpu-operator.io/image="$image" \
    -f "$root/images/$image.Dockerfile" -t "egpu-$image:$tag" "$context" >"$context/build.log" 2>&1; then
    grep -v -e DEPRECATED -e 'BuildKit is' -e 'environment-variable' "$context/build.log" >&2
    log "egpu-$image:$tag did not build"
    exit 1
  fi
  # The previous build of this image, untagged by this one.
  docker image prune --force --filter "label=egpu-operator.io/image=$image" >/dev/null
  echo "egpu-$image:$tag $(docker image inspect -f '{{.Size}}' "egpu-$image:$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
done
