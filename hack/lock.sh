#!/usr/bin/env bash
# Regenerates the lock files from pyproject.toml's pins: every dependency, direct or not, at one
# version with the hashes of all its published files (any platform: a Raspberry Pi installs
# from the same lock).
#
#   requirements.lock           what the project needs at run time
#   requirements-dev.lock       that plus the dev tools; `make venv` installs it with --require-hashes
#   images/operator.lock        the operator image's subset (no NVML)
#   images/node-agent.lock      the node agent image's subset (no kopf)
#
# The image locks are constrained by requirements.lock, so a package has one version everywhere.
# pip-tools runs from its own virtualenv in ~/.cache/egpu-operator, not the project's.
#
# Usage: hack/lock.sh            after changing a pin in pyproject.toml; commit the four files
#        hack/lock.sh --upgrade  move the indirect dependencies to their newest versions too
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="${EGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/egpu-operator}"
venv="$cache/pip-tools-7.6.2"
if [ ! -x "$venv/bin/pip-compile" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pip==25.3 pip-tools==7.6.2
fi
flags=(--quiet --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links "$@")
cd "$root"
export CUSTOM_COMPILE_COMMAND="hack/lock.sh"
"$venv/bin/pip-compile" "${flags[@]}" -o requirements.lock pyproject.toml
"$venv/bin/pip-compile" "${flags[@]}" --extra dev -c requirements.lock -o requirements-dev.lock pyproject.toml
cd images
for image in operator node-agent; do
  "$venv/bin/pip-compile" "${flags[@]}" -o "$image.lock" "$image.in"
done
echo "locked: $(grep -c '^[A-Za-z0-9]' "$root/requirements-dev.lock") packages for development," \
  "$(grep -c '^[A-Za-z0-9]' operator.lock) in the operator image, $(grep -c '^[A-Za-z0-9]' node-agent.lock) in the node agent image"
