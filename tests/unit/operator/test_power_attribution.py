"""Which GPU a replica's power limit lands on: the GPU its pod got, where the node's agent says
(egpu-operator.io/gpu-assignments), and by count where it does not."""

import json
from typing import Any

import pytest

from egpu_api import keys
from egpu_api.assignments import dump_assignments
from egpu_api.fleet import load_fleet
from egpu_node_agent.assignments import SimulatedAssigner, simulated_devices
from egpu_operator.power import assigned_gpus, desired_annotations, pod_limits
from tests.unit.operator.cluster import NAMESPACE, Cluster, deployment

UUIDS, DEFAULTS = ("GPU-a", "GPU-b", "GPU-c", "GPU-d"), (200, 200, 200, 200)
REQUEST, OWNERS, ASSIGNMENTS = keys.POWER_REQUEST_ANNOTATION, keys.POWER_OWNERS_ANNOTATION, keys.GPU_ASSIGNMENTS_ANNOTATION


def annotations(owners: dict[str, str] | None = None, request: dict[str, int] | None = None) -> dict[str, str]:
    found = {}
    if owners is not None:
        found[OWNERS] = json.dumps(owners)
    if request is not None:
        found[REQUEST] = json.dumps(request)
    return found


# (case, owners before, replicas here, GPUs the node says its pods got (None: it does not say), limit,
#  request after, owners after)
DESIRED: list[tuple[str, dict[str, str], int, set[str] | None, int | None, dict[str, int], dict[str, str]]] = [
    ("by count: the lowest free GPUs", {}, 2, None, 150, {"GPU-a": 150, "GPU-b": 150},
     {"GPU-a": "ai/me", "GPU-b": "ai/me"}),
    ("by count: the GPUs another deployment owns are skipped", {"GPU-a": "ai/other"}, 1, None, 150, {"GPU-b": 150},
     {"GPU-a": "ai/other", "GPU-b": "ai/me"}),
    ("exact: the GPU the pod got, not the lowest free", {}, 1, {"GPU-c"}, 150, {"GPU-c": 150}, {"GPU-c": "ai/me"}),
    ("exact: a GPU a count gave another deployment is taken over", {"GPU-c": "ai/other"}, 1, {"GPU-c"}, 150,
     {"GPU-c": 150}, {"GPU-c": "ai/me"}),
    ("exact: the limit moves from the counted GPU to the pod's", {"GPU-a": "ai/me"}, 1, {"GPU-d"}, 150, {"GPU-d": 150},
     {"GPU-d": "ai/me"}),
    ("exact: a pod not reported yet gets none", {"GPU-a": "ai/me"}, 1, set(), 150, {}, {}),
    ("exact: another deployment's GPUs stay its own", {"GPU-a": "ai/other"}, 2, {"GPU-b", "GPU-d"}, 150,
     {"GPU-b": 150, "GPU-d": 150}, {"GPU-a": "ai/other", "GPU-b": "ai/me", "GPU-d": "ai/me"}),
    ("exact: no power wanted releases what it held", {"GPU-b": "ai/me"}, 1, {"GPU-b"}, None, {}, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("owners", "replicas", "assigned", "limit", "requested", "owners_after"),
    [case[1:] for case in DESIRED],
    ids=[case[0] for case in DESIRED],
)
def test_desired_annotations(
    owners: dict[str, str],
    replicas: int,
    assigned: set[str] | None,
    limit: int | None,
    requested: dict[str, int],
    owners_after: dict[str, str],
) -> None:
    before = annotations(owners, {uuid: 100 for uuid, owner in owners.items() if owner != "ai/me"})
    values, shares = desired_annotations(before, "ai/me", replicas, UUIDS, DEFAULTS, limit, None, assigned)
    assert json.loads(values[OWNERS]) == owners_after
    others = {uuid: 100 for uuid, owner in owners_after.items() if owner != "ai/me"}
    assert json.loads(values[REQUEST]) == {**others, **requested}
    assert shares == requested


ASSIGNED: list[tuple[str, str | None, dict[str, tuple[str, ...]] | None]] = [
    ("no annotation: count", None, None),
    ("garbage: count", "GPU-a", None),
    ("each pod its GPUs, in the node's order", '{"ai/p0":["GPU-c","GPU-a"],"ai/p1":["GPU-b"]}',
     {"p0": ("GPU-a", "GPU-c"), "p1": ("GPU-b",)}),
    ("a pod not reported yet has none", '{"ai/p0":["GPU-c"]}', {"p0": ("GPU-c",), "p1": ()}),
    ("another namespace's pod of the same name is not ours", '{"other/p0":["GPU-c"]}', {"p0": (), "p1": ()}),
    ("a device that is not one of the node's GPUs (a MIG slice) is none", '{"ai/p0":["MIG-x"],"ai/p1":["GPU-d"]}',
     {"p0": (), "p1": ("GPU-d",)}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in ASSIGNED], ids=[case[0] for case in ASSIGNED])
def test_assigned_gpus(text: str | None, expected: dict[str, tuple[str, ...]] | None) -> None:
    node = {} if text is None else {ASSIGNMENTS: text}
    assert assigned_gpus(node, "ai", ["p0", "p1"], UUIDS) == expected


@pytest.mark.parametrize(
    ("shares", "assigned", "expected"),
    [
        # By count: the lowest replica reports the lowest GPU index.
        ({"GPU-c": 150, "GPU-a": 150}, None, {"p0": ("GPU-a", 150), "p1": ("GPU-c", 150)}),
        ({"GPU-b": 150}, None, {"p0": ("GPU-b", 150)}),
        # Exact: each pod its own GPU, whatever the order.
        ({"GPU-c": 150, "GPU-a": 150}, {"p0": ("GPU-c",), "p1": ("GPU-a",)}, {"p0": ("GPU-c", 150), "p1": ("GPU-a", 150)}),
        ({"GPU-c": 150}, {"p0": (), "p1": ("GPU-c",)}, {"p1": ("GPU-c", 150)}),
    ],
)
def test_pod_limits(
    shares: dict[str, int], assigned: dict[str, tuple[str, ...]] | None, expected: dict[str, tuple[str, int]]
) -> None:
    assert pod_limits(["p0", "p1"], shares, UUIDS, assigned) == expected


# -- through the controller --------------------------------------------------------------------

SWITCH = "switch-4x-a5000"


def foreign_gpu_pod() -> dict[str, Any]:
    """A pod that is no replica of ours, already running on GPU 0 of the switch host."""
    return {
        "metadata": {"name": "trainer", "namespace": "batch", "uid": "trainer", "creationTimestamp": "2026-11-22T07:00:00Z"},
        "spec": {"nodeName": SWITCH, "containers": [{"name": "t", "resources": {"limits": {keys.GPU_RESOURCE: "1"}}}]},
        "status": {"phase": "Running"},
    }


def agent_reports(cluster: Cluster) -> SimulatedAssigner:
    """The switch host's agent, playing its device plugin over the fake's pods."""
    return SimulatedAssigner(
        simulated_devices(load_fleet().node(SWITCH)),
        lambda: [pod for pod in cluster.kube.pods.values() if pod.get("spec", {}).get("nodeName") == SWITCH],
    )


def publish(cluster: Cluster, source: SimulatedAssigner) -> dict[str, list[str]]:
    found = source.assignments()
    assert found is not None
    cluster.kube.nodes[SWITCH]["metadata"]["annotations"][ASSIGNMENTS] = dump_assignments(found)
    return found


@pytest.fixture
def switch_cluster(nodes: dict[str, Any]) -> Cluster:
    cluster = Cluster({SWITCH: nodes[SWITCH]})
    cluster.kube.pods[("batch", "trainer")] = foreign_gpu_pod()
    return cluster


def test_each_limit_lands_on_the_gpu_its_pod_got(switch_cluster: Cluster) -> None:
    cluster, uuids = switch_cluster, [load_fleet().node(SWITCH).gpu_uuid(i) for i in range(4)]
    source = agent_reports(cluster)
    publish(cluster, source)
    cluster.kube.add_deployment(deployment("low", power={"limitWatts": 120}))
    cluster.kube.add_deployment(deployment("high", power={"limitWatts": 200}))
    cluster.reconcile("low")
    cluster.reconcile("high")
    cluster.kube.schedule()

    # Not reported yet: no limit anywhere, and the status says why.
    cluster.reconcile("low")
    assert json.loads(cluster.kube.nodes[SWITCH]["metadata"]["annotations"][REQUEST]) == {}
    message = cluster.status("low")["placements"][0]["power"]["message"]
    assert message == "waiting for the node agent to report which GPU the pod got"

    got = publish(cluster, source)
    [low_pod], [high_pod] = cluster.pods_of("low"), cluster.pods_of("high")
    # The fake's pods have no creation time, so the simulated plugin serves them by name: high first.
    assert got == {"batch/trainer": [uuids[0]], f"{NAMESPACE}/{high_pod}": [uuids[1]], f"{NAMESPACE}/{low_pod}": [uuids[2]]}
    cluster.reconcile("low")
    cluster.reconcile("high")
    node = cluster.kube.nodes[SWITCH]["metadata"]["annotations"]
    assert json.loads(node[REQUEST]) == {uuids[1]: 200, uuids[2]: 120}, "the trainer's GPU 0 is never capped"
    assert json.loads(node[OWNERS]) == {uuids[1]: f"{NAMESPACE}/high", uuids[2]: f"{NAMESPACE}/low"}
    assert cluster.status("low")["placements"][0]["gpu"] == uuids[2]
    assert cluster.status("high")["placements"][0]["gpu"] == uuids[1]
    assert cluster.status("high")["placements"][0]["power"]["requestedWatts"] == 200


def test_without_the_annotation_limits_are_attributed_by_count(switch_cluster: Cluster) -> None:
    cluster, uuids = switch_cluster, [load_fleet().node(SWITCH).gpu_uuid(i) for i in range(4)]
    cluster.kube.add_deployment(deployment("low", power={"limitWatts": 120}))
    cluster.kube.add_deployment(deployment("high", power={"limitWatts": 200}))
    cluster.reconcile("low")
    cluster.reconcile("high")
    node = cluster.kube.nodes[SWITCH]["metadata"]["annotations"]
    # Lowest index first: the count cannot know GPU 0 is the trainer's.
    assert json.loads(node[REQUEST]) == {uuids[0]: 120, uuids[1]: 200}
    assert cluster.status("low")["placements"][0]["gpu"] == uuids[0]
