#!/usr/bin/env bash
# Deletes the kind cluster, its network and the images loaded for it, and stops the Docker
# engine if hack/kind/engine.sh started it. Leaves the caches (~/.cache/egpu-operator).
#
#   hack/kind/down.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
name=${KIND_CLUSTER_NAME:-egpu}
if docker info >/dev/null 2>&1; then
  bin=$("$root/hack/build-tools.sh" kind)
  "$bin/kind" delete cluster --name "$name" >&2
  if docker network inspect kind >/dev/null 2>&1 && [ -z "$(docker network inspect -f '{{range .Containers}}x{{end}}' kind)" ]; then
    docker network rm kind >/dev/null
  fi
fi
"$root/hack/kind/engine.sh" down
