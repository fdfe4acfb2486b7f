"""Power limits only where a deployment owns a GPU whole, and operator-owned state that survives garbage."""

import json

import pytest

from egpu_localcluster.kubectl import Kubectl
from tests.e2e.deployments import apply, deployment, ready_on, status
from tests.e2e.helpers import node, wait_for

pytestmark = pytest.mark.e2e
OWNERS, REQUEST = "egpu-operator.io/power-limit-owners", "egpu-operator.io/power-limit-request"


def test_a_mig_slice_never_caps_the_whole_gpu(kube: Kubectl, workspace: str) -> None:
    apply(kube, workspace, deployment("slice", "6G", 60, modes=("mig",), power={"limitWatts": 150}))
    [where] = wait_for(lambda: ready_on(kube, workspace, "slice", 1), 60, "slice: Ready on the MIG node")
    placement = wait_for(
        lambda: p if (p := (status(kube, workspace, "slice").get("placements") or [{}])[0]).get("power") else None,
        30, "the placement's power entry",
    )  # fmt: skip
    assert where == "server-a100-mig"
    assert "the GPU is shared" in placement["power"]["message"]
    assert "requestedWatts" not in placement["power"]
    annotations = node(kube, where)["metadata"].get("annotations", {})
    assert json.loads(annotations.get(REQUEST, "{}")) == {}, "a MIG slice's tenant capped the whole A100"


def test_a_garbage_owners_annotation_is_ignored_with_one_event(kube: Kubectl, workspace: str) -> None:
    apply(kube, workspace, deployment("powered", "6G", 20, modes=("passthrough",), power={"fractionOfDefault": 0.5}))
    [where] = wait_for(lambda: ready_on(kube, workspace, "powered", 1), 60, "powered: Ready on the H100")
    kube.run("annotate", "node", where, f"{OWNERS}=5", "--overwrite")

    def rewritten() -> dict[str, str] | None:
        owners = node(kube, where)["metadata"].get("annotations", {}).get(OWNERS, "")
        return value if owners.startswith("{") and (value := json.loads(owners)) else None

    assert wait_for(rewritten, 40, "the owners annotation rewritten as JSON") == {
        next(iter(json.loads(node(kube, where)["metadata"]["annotations"][REQUEST]))): f"{workspace}/powered"
    }
    events = kube.get_json("events", "-n", workspace, "--field-selector", "involvedObject.name=powered")["items"]
    ignored = [e for e in events if e["reason"] == "PowerOwnersIgnored"]
    assert len(ignored) == 1
    assert "is not a JSON object" in ignored[0]["message"]
    assert (status(kube, workspace, "powered")["placements"][0]["power"]["requestedWatts"]) == 350
