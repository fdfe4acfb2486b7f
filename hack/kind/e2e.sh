#!/usr/bin/env bash
# The e2e-kind tier (`make e2e-kind`): builds everything with nothing pulled (hack/kind/up.sh),
# runs the image tests and the e2e suite against the chart's operator pod on kind, and tears
# everything down, whatever the result: no container, network or process of this run is left.
#
#   hack/kind/e2e.sh [PYTEST ARGS]    e.g. hack/kind/e2e.sh tests/e2e/test_maintenance_drain.py
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
started=$SECONDS
cleanup() {
  local rc=$?
  printf '[e2e-kind %4d s] tearing down\n' "$((SECONDS - started))" >&2
  "$root/hack/kind/down.sh" || rc=1
  printf '[e2e-kind %4d s] done (exit %d)\n' "$((SECONDS - started))" "$rc" >&2
  exit "$rc"
}
trap cleanup EXIT
kubeconfig=$("$root/hack/kind/up.sh")
bin=$("$root/hack/build-tools.sh")
# The suite's timing: the local operator resyncs every 3 s there (tests/e2e/conftest.py), so here too.
"$bin/kubectl" --kubeconfig "$kubeconfig" -n egpu-system set env deployment -l app.kubernetes.io/component=operator \
  EGPU_OPERATOR_RESYNC_SECONDS=3 >&2
"$bin/kubectl" --kubeconfig "$kubeconfig" -n egpu-system rollout status deployment -l app.kubernetes.io/component=operator \
  --timeout=180s >&2 2>/dev/null || "$bin/kubectl" --kubeconfig "$kubeconfig" -n egpu-system wait \
  --for=condition=Available deployment -l app.kubernetes.io/component=operator --timeout=180s >&2
printf '[e2e-kind %4d s] cluster up; running the suite\n' "$((SECONDS - started))" >&2
if [ "$#" = 0 ]; then set -- tests/kind tests/e2e; fi
# The GPU worker up.sh made, whose agent is the chart's pod; replicas there run this image.
PATH="$bin:$PATH" EGPU_E2E_KUBECONFIG="$kubeconfig" EGPU_E2E_OPERATOR=chart \
  EGPU_E2E_GPU_WORKER="${KIND_CLUSTER_NAME:-egpu}-worker2" EGPU_E2E_REPLICA_IMAGE=egpu-operator:dev \
  "$root/.venv/bin/python" -m pytest "$@"
