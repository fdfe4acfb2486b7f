"""Two PodDisruptionBudgets over one replica: the API server answers every eviction with 500.
The maintenance says so, quoting it, and asks again only at the eviction backoff's pace."""

import json
import re
import time

import pytest

from egpu_localcluster.kubectl import Kubectl
from tests.e2e import maintenances as gm
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, ready_on, replica_pods
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
#: Backoff 2, 4, 8, 16 ... s per pod: attempts at 0, 2, 6, 14, 30 s, so a 20 s window holds at most
#: four. The retry this replaces ran about three times a second: some 60 in the window.
WINDOW_S = 20
MAX_ATTEMPTS_IN_WINDOW = 5


def refused_evictions(operator: OperatorProcess) -> float:
    found = re.findall(r'^egpu_operator_evictions_total\{by="[a-z]+",result="refused"\} ([0-9.e+]+)$',
                       operator.metrics(), re.MULTILINE)  # fmt: skip
    return sum(float(value) for value in found)


def test_a_500_from_two_budgets_is_named_and_backed_off(
    kube: Kubectl, workspace: str, maintenances: None, operator: OperatorProcess
) -> None:
    apply(kube, workspace, deployment("doubled", "6G", 20, disruption={"minAvailable": 1}))
    [source] = wait_for(lambda: ready_on(kube, workspace, "doubled", 1), 60, "doubled: 1 replica Ready")
    [old_pod] = [pod["metadata"]["name"] for pod in replica_pods(kube, workspace, "doubled")]
    second = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "doubled-too"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"egpu-operator.io/inference-deployment": "doubled"}}},
    }
    kube.run("apply", "-n", workspace, "-f", "-", stdin=json.dumps(second))

    gm.create(kube, "two-budgets", source, reason="reseat the dock")
    refused = f"eviction of {workspace}/{old_pod} refused: the API server refused the eviction (HTTP 500): "
    blocked = wait_for(lambda: m if refused in (m := gm.get(kube, "two-budgets")).get("status", {}).get("message", "") else None,
                       90, "the maintenance to quote the API server's 500")  # fmt: skip
    assert (
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support"
        in (blocked["status"]["message"])
    )
    assert gm.condition(blocked, "Evacuated")["reason"] == "DisruptionBudget"

    before = refused_evictions(operator)
    time.sleep(WINDOW_S)  # counting attempts over a fixed window: there is no state change to poll for
    attempts = refused_evictions(operator) - before
    assert 1 <= attempts <= MAX_ATTEMPTS_IN_WINDOW, f"{attempts} evictions refused in {WINDOW_S} s"
    assert kube.get_json("pod", old_pod, "-n", workspace)["metadata"].get("deletionTimestamp") is None

    kube.run("delete", "pdb", "doubled-too", "-n", workspace)  # one budget again: the eviction goes through
    done = gm.wait_phase(kube, "two-budgets", "Ready", timeout_s=90)
    assert [entry["fromPod"] for entry in done["status"]["moved"]] == [f"{workspace}/{old_pod}"]
    gm.complete(kube, "two-budgets")
