"""Refusals end and say why: whole-pod fit before a pod is made, the scheduler's refusals remembered
per node with backoff, a refused status written again with backoff and told once."""

from typing import Any

import pytest

from egpu_operator import cache as cache_module
from egpu_operator import facts
from egpu_operator.placement import MAX_REFUSED_NODES
from tests.unit.operator.cluster import NAMESPACE, Cluster, deployment

PI = "pi5-rtx4090"
SCHEDULER = "0/8 nodes are available: 1 node(s) didn't match pod anti-affinity rules, 7 node(s) didn't match Pod's node affinity"


def server(**resources: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "server", "image": "example/llm:1", "resources": resources}]}}


def test_a_replica_the_pi_cannot_hold_in_memory_is_refused_naming_memory(nodes: dict[str, Any]) -> None:
    """The Pi 5 has 8Gi; a llama.cpp-style server asking 12Gi must not be created there at all."""
    cluster = Cluster(nodes)
    pinned = deployment(template=server(requests={"memory": "12Gi"}))
    pinned["spec"]["placement"]["nodeSelector"] = {"kubernetes.io/arch": "arm64"}
    cluster.kube.add_deployment(pinned)
    assert cluster.reconcile() is False
    assert cluster.pods_of() == {}
    placed = cluster.condition("Placed")
    assert (placed["status"], placed["reason"]) == ("False", "NoAdequateNode")
    assert "1 memory: needs 12Gi, 8Gi free" in placed["message"]


def test_without_the_pin_it_goes_where_the_memory_is(nodes: dict[str, Any]) -> None:
    cluster = Cluster(nodes)
    cluster.kube.add_deployment(deployment(template=server(requests={"memory": "12Gi"})))
    cluster.reconcile()
    (node,) = cluster.pods_of().values()
    assert node != PI
    assert cluster.condition("Placed")["status"] == "True"
    assert "memory: needs 12Gi, at most 8Gi free" in cluster.condition("Placed")["message"]


def test_ordinary_pods_on_a_node_take_their_share(nodes: dict[str, Any]) -> None:
    """Every pod bound to a node counts, not only replicas: a 6Gi web server on the Pi leaves 2Gi."""
    cluster = Cluster({PI: nodes[PI]})
    cluster.kube.pods[(NAMESPACE, "web")] = {
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {"nodeName": PI, "containers": [{"name": "web", "resources": {"requests": {"memory": "6Gi", "cpu": "3"}}}]},
        "status": {"phase": "Running"},
    }
    cluster.kube.add_deployment(deployment(template=server(requests={"memory": "4Gi", "cpu": "2"})))
    cluster.reconcile()
    assert cluster.pods_of() == {}
    assert "1 cpu: needs 2, 1 free" in cluster.condition("Placed")["message"]


@pytest.mark.parametrize(
    ("resources", "phrase"),
    [({"requests": {"cpu": "1000"}}, "cpu: needs 1000, at most 32 free"),
     ({"limits": {"nvidia.com/gpu": "8"}}, "nvidia.com/gpu: needs 8, at most 4 free"),
     ({"limits": {"example.com/fpga": "1"}}, "example.com/fpga: needs 1, at most 0 free")],
)  # fmt: skip
def test_requests_no_node_holds_create_no_pod(nodes: dict[str, Any], resources: dict[str, Any], phrase: str) -> None:
    cluster = Cluster(nodes)
    cluster.kube.add_deployment(deployment(template=server(**resources)))
    for _ in range(5):
        cluster.reconcile()
    assert not [write for write in cluster.kube.writes if write[0] == "create"]
    assert phrase in cluster.condition("Placed")["message"]
    assert cluster.kube.reasons() == ["FailedPlacement"], "told once, not per reconcile"


def test_a_scheduler_refusal_moves_the_replica_then_stays_pending_with_the_schedulers_words(nodes: dict[str, Any]) -> None:
    """Anti-affinity placement cannot see: each refusing node is left alone with backoff; after three
    the pod stays pending and the status carries the scheduler's message. No create-and-delete loop."""
    cluster = Cluster(nodes)
    cluster.kube.add_deployment(deployment())
    created: list[str] = []
    for _ in range(20):
        before = set(cluster.pods_of())
        cluster.reconcile()
        created += sorted(set(cluster.pods_of()) - before)
        cluster.kube.refuse_scheduling(SCHEDULER)
        cluster.clock.now += 5
    assert len(created) == MAX_REFUSED_NODES  # a pod on each of three nodes, then it waits
    assert len(set(cluster.pods_of().values())) == 1, "one pending pod, not one per node"
    placed = cluster.condition("Placed")
    assert (placed["status"], placed["reason"]) == ("False", "Unschedulable")
    assert f"replica 0: {SCHEDULER}" in placed["message"]
    assert "refused by kube-scheduler" in placed["message"]

    # The scheduler changes its mind (the other pod went): the pending pod binds where it is.
    cluster.kube.schedule()
    cluster.clock.now += 5
    cluster.reconcile()
    assert cluster.condition("Placed")["status"] == "True"


def test_a_refused_node_is_tried_again_after_its_backoff(nodes: dict[str, Any]) -> None:
    cluster = Cluster({PI: nodes[PI]})
    cluster.kube.add_deployment(deployment())
    cluster.reconcile()
    (first,) = cluster.kube.refuse_scheduling("0/1 nodes are available: 1 Insufficient memory.")
    cluster.reconcile()
    assert cluster.pods_of() == {first: PI}, "nowhere else to go: the pod stays pending"
    assert "Insufficient memory" in cluster.condition("Placed")["message"]
    cluster.kube.delete_pod(NAMESPACE, first)  # someone deletes it: the node is still refused for a while
    cluster.reconcile()
    assert cluster.pods_of() == {}
    cluster.clock.now += cache_module.REFUSAL_BASE_S + 1
    cluster.reconcile()
    assert list(cluster.pods_of().values()) == [PI]


def test_a_template_held_by_scheduling_gates_is_not_placed_true(nodes: dict[str, Any]) -> None:
    cluster = Cluster(nodes)
    gated = server()
    gated["spec"]["schedulingGates"] = [{"name": "example.com/quota"}]
    cluster.kube.add_deployment(deployment(template=gated))
    cluster.reconcile()
    cluster.reconcile()
    assert len(cluster.pods_of()) == 1
    placed = cluster.condition("Placed")
    assert (placed["status"], placed["reason"]) == ("False", "SchedulingGated")


def test_a_refused_status_is_written_again_with_backoff_and_told_once(nodes: dict[str, Any]) -> None:
    cluster = Cluster(nodes)
    cluster.kube.add_deployment(deployment())
    cluster.kube.refuse_status = lambda _: "status.placements[0].bandwidthMBps: Invalid value: must be <= 2147483647"
    assert cluster.reconcile() is True, "asked again with the work queue's backoff"
    assert cluster.reconcile() is True
    assert cluster.kube.reasons().count("StatusRefused") == 1
    cluster.kube.refuse_status = lambda _: None
    assert cluster.reconcile() is False
    assert cluster.condition("Placed")["status"] == "True"


def test_the_templates_own_node_affinity_is_kept_beside_the_pin(nodes: dict[str, Any]) -> None:
    cluster = Cluster(nodes)
    template = server()
    term = {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}
    template["spec"]["affinity"] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
    }
    cluster.kube.add_deployment(deployment(template=template))
    cluster.reconcile()
    ((name, node),) = cluster.pods_of().items()
    assert node == PI
    terms = cluster.kube.pods[(NAMESPACE, name)]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms["nodeSelectorTerms"] == [{**term, "matchFields": [{"key": "metadata.name", "operator": "In", "values": [PI]}]}]


def test_topology_spread_is_kept_by_placement(nodes: dict[str, Any]) -> None:
    for name, node in nodes.items():
        node["metadata"]["labels"]["zone"] = "a" if name in ("vm-h100-passthrough", PI) else "b"
    cluster = Cluster(nodes)
    template = server()
    template["metadata"] = {"labels": {"app": "llm"}}
    template["spec"]["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "llm"}},
        }
    ]
    cluster.kube.add_deployment(deployment(replicas=2, template=template))
    cluster.reconcile()
    zones = sorted(nodes[node]["metadata"]["labels"]["zone"] for node in cluster.pods_of().values())
    assert zones == ["a", "b"]


# -- every GPU form ------------------------------------------------------------------------------


def mixed(node: dict[str, Any], slices: dict[str, int], memory_mib: dict[str, int] | None = None) -> dict[str, Any]:
    """``node`` as the device plugin's MIG "mixed" strategy advertises it: one resource per profile."""
    allocatable = {k: v for k, v in node["status"]["allocatable"].items() if k != "nvidia.com/gpu"}
    node["status"]["allocatable"] = allocatable | {f"nvidia.com/mig-{p}": str(n) for p, n in slices.items()}
    node["metadata"]["labels"] |= {f"nvidia.com/mig-{p}.memory": str(m) for p, m in (memory_mib or {}).items()}
    return node


def test_mig_mixed_replicas_ask_for_the_smallest_slice_that_holds_the_model(nodes: dict[str, Any]) -> None:
    node = mixed(nodes["server-a100-mig"], {"1g.10gb": 1, "3g.40gb": 1}, {"1g.10gb": 9728, "3g.40gb": 40192})
    node["metadata"]["labels"]["egpu-operator.io/gpu-vram-mib"] = "9728"  # the agent's worst slice
    cluster = Cluster({"server-a100-mig": node})
    cluster.kube.add_deployment(deployment(replicas=2, placement={"maxLoadSeconds": 60, "allowedModes": ["mig"]}))
    cluster.reconcile()
    asked = sorted(next(iter(pod["spec"]["containers"][0]["resources"]["limits"])) for pod in cluster.kube.pods.values())
    # 6 GB plus 1 GiB fits the 10 GB slice (9728 MiB) and the 40 GB one; the small one goes first.
    assert asked == ["nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb"]
    cluster.kube.schedule()
    big = deployment("big", placement={"maxLoadSeconds": 60, "allowedModes": ["mig"]})
    cluster.kube.add_deployment(big)
    cluster.reconcile("big")
    assert "no free GPU" in cluster.condition("Placed", "big")["message"], "both slices are taken"


def test_a_model_no_slice_holds_is_refused_for_vram(nodes: dict[str, Any]) -> None:
    node = mixed(nodes["server-a100-mig"], {"1g.10gb": 7})
    node["metadata"]["labels"]["egpu-operator.io/gpu-vram-mib"] = "9728"  # the agent's worst slice
    cluster = Cluster({"server-a100-mig": node})
    big = deployment(placement={"maxLoadSeconds": 60, "allowedModes": ["mig"]})
    big["spec"]["model"]["size"] = "20G"
    cluster.kube.add_deployment(big)
    cluster.reconcile()
    assert cluster.pods_of() == {}
    assert "VRAM <" in cluster.condition("Placed")["message"]


def test_renamed_shared_gpus_are_asked_for_by_their_name(nodes: dict[str, Any]) -> None:
    node = nodes[PI]
    del node["status"]["allocatable"]["nvidia.com/gpu"]
    node["status"]["allocatable"]["nvidia.com/gpu.shared"] = "4"
    cluster = Cluster({PI: node})
    cluster.kube.add_deployment(deployment(replicas=4))
    cluster.reconcile()
    limits = [pod["spec"]["containers"][0]["resources"]["limits"] for pod in cluster.kube.pods.values()]
    # 24 GB time-sliced four ways holds three 7 GiB replicas: its memory, not its four shares, decides.
    assert limits == [{"nvidia.com/gpu.shared": "1"}] * 3
    cluster.kube.schedule()
    cluster.reconcile()
    assert "1/1 nodes adequate" not in cluster.condition("Placed")["message"]
    assert "1 no free GPU" in cluster.condition("Placed")["message"]


def test_a_shared_gpu_renamed_to_a_name_of_the_clusters_choice_is_counted_once_configured(nodes: dict[str, Any]) -> None:
    """The device plugin's per-resource ``rename`` may pick any name; --shared-gpu-resources lists them."""
    node = nodes[PI]
    del node["status"]["allocatable"]["nvidia.com/gpu"]
    node["status"]["allocatable"]["nvidia.com/gpu-ts"] = "4"
    unconfigured = Cluster({PI: node})
    unconfigured.kube.add_deployment(deployment())
    unconfigured.reconcile()
    assert unconfigured.pods_of() == {}, "an unknown extended resource is not a GPU"
    cluster = Cluster({PI: node})
    cluster.cache = cache_module.Cache(clock=cluster.clock, shared_gpu_resources=("nvidia.com/gpu.shared", "nvidia.com/gpu-ts"))
    cluster.kube.add_deployment(deployment(replicas=2))
    cluster.reconcile()
    limits = [pod["spec"]["containers"][0]["resources"]["limits"] for pod in cluster.kube.pods.values()]
    assert limits == [{"nvidia.com/gpu-ts": "1"}] * 2
    shared = ("nvidia.com/gpu-ts",)
    assert [facts.gpu_requests(pod, shared) for pod in cluster.kube.pods.values()] == [1, 1]
    assert [facts.gpu_requests(pod) for pod in cluster.kube.pods.values()] == [0, 0]
