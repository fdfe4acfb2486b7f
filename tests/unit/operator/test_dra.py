"""GPUs through Dynamic Resource Allocation: devices of the gpu.nvidia.com driver's ResourceSlices
are counted like slices of their own, a replica's ResourceClaim pins the device placement chose,
claims of gone pods are removed, and a drain counts the GPUs a pod's claims were allocated."""

from typing import Any

import pytest

from egpu_api import keys
from egpu_api.fleet import load_fleet
from egpu_api.inference import InferenceDeploymentSpec
from egpu_localcluster.nodes import resource_slice
from egpu_operator import facts
from egpu_operator.controllers.inferencedeployment import pod_writes, stale_claims
from egpu_operator.placement import DRA_HOLD, Create, Device, Plan, PodView
from tests.unit.operator.cluster import NAMESPACE, Cluster, deployment

PI = "pi5-rtx4090"
SWITCH = "switch-4x-a5000"
DRIVERS = (keys.DRA_GPU_DRIVER,)
DRA = {"maxLoadSeconds": 60, "allowedModes": ["bare-metal", "passthrough"], "gpuAllocation": "DRA"}


def dra_node(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` as the DRA driver leaves it: no GPU extended resource, its GPUs in a ResourceSlice."""
    node["status"]["allocatable"] = {k: v for k, v in node["status"]["allocatable"].items() if k != keys.GPU_RESOURCE}
    return node


def published(name: str) -> dict[str, Any]:
    entry = next(node for node in load_fleet().nodes if node.name == name)
    return resource_slice(entry.model_copy(update={"dra": True}))


def test_a_slice_of_the_driver_publishes_its_gpus_with_uuid_and_memory() -> None:
    node, devices = facts.slice_devices(published(SWITCH), DRIVERS)
    assert node == SWITCH
    assert [(d.name, d.vram_mib) for d in devices] == [(f"gpu-{i}", 24564) for i in range(4)]
    assert all(d.uuid.startswith("GPU-") and d.pool == SWITCH and d.driver == "gpu.nvidia.com" for d in devices)
    assert devices[0].path == f"gpu.nvidia.com/{SWITCH}/gpu-0"
    assert devices[0].key == f"{DRA_HOLD}gpu.nvidia.com/{SWITCH}/gpu-0"


@pytest.mark.parametrize(
    ("change", "count"),
    [
        pytest.param(lambda s: s["spec"].update(driver="nic.example.com"), 0, id="another driver"),
        pytest.param(lambda s: s["spec"].pop("nodeName"), 0, id="no node (a network-attached pool)"),
        pytest.param(lambda s: s["spec"]["devices"][0]["attributes"].pop("uuid"), 3, id="a device without uuid"),
        pytest.param(lambda s: s["spec"]["devices"][1]["capacity"]["memory"].update(value="lots"), 3,
                     id="a memory capacity that is no byte count"),
        pytest.param(lambda s: s["spec"]["devices"][2]["attributes"].update(
            {"gpu.nvidia.com/uuid": s["spec"]["devices"][2]["attributes"].pop("uuid")}), 4, id="uuid qualified by the driver"),
    ],
)  # fmt: skip
def test_what_cannot_be_placed_on_is_left_out(change: Any, count: int) -> None:
    body = published(SWITCH)
    change(body)
    assert len(facts.slice_devices(body, DRIVERS)[1]) == count


@pytest.mark.parametrize(
    ("claim", "held"),
    [
        pytest.param({"status": {"allocation": {"devices": {"results": [
            {"driver": "gpu.nvidia.com", "pool": "n1", "device": "gpu-1", "request": "gpu"},
            {"driver": "nic.example.com", "pool": "n1", "device": "eth0", "request": "nic"}]}}}},
            ["gpu.nvidia.com/n1/gpu-1"], id="allocated: the driver's devices"),
        pytest.param({"metadata": {"annotations": {keys.DRA_DEVICE_ANNOTATION: "gpu.nvidia.com/n1/gpu-2"}}},
                     ["gpu.nvidia.com/n1/gpu-2"], id="a replica's claim not yet allocated: the device chosen"),
        pytest.param({"metadata": {"annotations": {keys.DRA_DEVICE_ANNOTATION: "gpu.nvidia.com/n1/gpu-2"}},
                      "status": {"allocation": {"devices": {"results": [
                          {"driver": "gpu.nvidia.com", "pool": "n1", "device": "gpu-3"}]}}}},
                     ["gpu.nvidia.com/n1/gpu-3"], id="allocated: the allocation, not the annotation"),
        pytest.param({"metadata": {}}, [], id="a claim of someone else, not allocated"),
    ],
)  # fmt: skip
def test_a_claim_holds_what_its_allocation_names(claim: dict[str, Any], held: list[str]) -> None:
    assert facts.claim_holds(claim, DRIVERS) == held


def test_pod_claims_by_name_and_from_templates() -> None:
    pod = {
        "spec": {"resourceClaims": [{"name": "a", "resourceClaimName": "mine"}, {"name": "b", "resourceClaimTemplateName": "t"},
                                    {"name": "c", "resourceClaimTemplateName": "t"}]},
        "status": {"resourceClaimStatuses": [{"name": "b", "resourceClaimName": "pod-b-x7"}]},
    }  # fmt: skip
    assert facts.pod_claim_names(pod) == ["mine", "pod-b-x7"]  # c's claim is not made yet


def cluster_with_dra(nodes: dict[str, Any], *names: str) -> Cluster:
    cluster = Cluster({name: dra_node(nodes[name]) for name in names})
    cluster.resource_slices = [published(name) for name in names]
    return cluster


def test_a_dra_replica_gets_a_claim_pinning_the_device_placement_chose(nodes: dict[str, Any]) -> None:
    cluster = cluster_with_dra(nodes, SWITCH)
    cluster.kube.add_deployment(deployment(replicas=2, placement=DRA))
    cluster.reconcile()
    pods = sorted(cluster.kube.pods.values(), key=lambda pod: pod["metadata"]["name"])
    assert len(pods) == 2
    devices = facts.slice_devices(published(SWITCH), DRIVERS)[1]
    chosen = []
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimName": name}]
        container = pod["spec"]["containers"][0]
        assert container["resources"]["claims"] == [{"name": "gpu"}]
        assert "limits" not in container["resources"], "no extended resource beside the claim"
        claim = cluster.kube.claims[(NAMESPACE, name)]
        request = claim["spec"]["devices"]["requests"][0]
        assert request["exactly"]["deviceClassName"] == "gpu.nvidia.com"
        path = claim["metadata"]["annotations"][keys.DRA_DEVICE_ANNOTATION]
        device = next(d for d in devices if d.path == path)
        expression = f"device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].uuid == '{device.uuid}'"
        assert request["exactly"]["selectors"] == [{"cel": {"expression": expression}}]
        assert claim["metadata"]["ownerReferences"][0]["kind"] == "InferenceDeployment"
        chosen.append(path)
    assert len(set(chosen)) == 2, "two replicas on one node get two devices"
    order = [verb for verb, _ in cluster.kube.writes if verb in ("create", "create-claim")]
    assert order == ["create-claim", "create", "create-claim", "create"], "the claim exists before its pod"


def test_devices_claims_hold_are_not_free_and_the_rest_are_counted(nodes: dict[str, Any]) -> None:
    cluster = cluster_with_dra(nodes, SWITCH)
    for index in range(3):  # someone else's workload holds three of the four GPUs
        cluster.kube.claims[("other", f"c{index}")] = {"metadata": {"name": f"c{index}"}, "status": {"allocation": {"devices": {
            "results": [{"driver": "gpu.nvidia.com", "pool": SWITCH, "device": f"gpu-{index}"}]}}}}  # fmt: skip
    cluster.kube.add_deployment(deployment(replicas=2, placement=DRA))
    cluster.reconcile()
    (claim,) = [c for (namespace, _), c in cluster.kube.claims.items() if namespace == NAMESPACE]
    assert claim["metadata"]["annotations"][keys.DRA_DEVICE_ANNOTATION] == f"gpu.nvidia.com/{SWITCH}/gpu-3"
    assert len(cluster.kube.pods) == 1
    placed = cluster.condition("Placed")
    assert placed["status"] == "False"
    assert placed["message"] == "1 of 2 replica(s) cannot be placed: 1/1 nodes adequate", "its one free device went to replica 0"


def test_dra_and_device_plugin_nodes_refuse_each_other_by_name(nodes: dict[str, Any]) -> None:
    cluster = cluster_with_dra(nodes, SWITCH)
    cluster.kube.nodes[PI] = nodes[PI]
    cluster.kube.add_deployment(deployment("plugin"))
    cluster.kube.add_deployment(deployment("dra", placement={**DRA, "nodeSelector": {"kubernetes.io/arch": "arm64"}}))
    cluster.reconcile("plugin")
    cluster.reconcile("dra")
    assert set(cluster.pods_of("plugin").values()) == {PI}
    assert "1 GPUs only through DRA (gpuAllocation: DRA)" in cluster.condition("Placed", "plugin")["message"]
    assert cluster.pods_of("dra") == {}
    assert "1 no DRA GPU devices" in cluster.condition("Placed", "dra")["message"]


def test_a_model_no_device_holds_is_refused_for_vram(nodes: dict[str, Any]) -> None:
    cluster = cluster_with_dra(nodes, SWITCH)
    big = deployment(placement={**DRA, "maxLoadSeconds": 600})
    big["spec"]["model"]["size"] = "30G"
    cluster.kube.add_deployment(big)
    cluster.reconcile()
    assert cluster.kube.claims == {}
    assert cluster.kube.pods == {}
    assert "1 VRAM < 28.9 GiB" in cluster.condition("Placed")["message"]


def test_a_refused_pod_takes_its_claim_with_it(nodes: dict[str, Any]) -> None:
    cluster = cluster_with_dra(nodes, SWITCH)
    cluster.kube.refuse_pods = lambda _: 'pods "x" is forbidden: exceeded quota'
    cluster.kube.add_deployment(deployment(placement=DRA))
    assert cluster.reconcile() is True
    assert cluster.kube.claims == {}
    assert [verb for verb, _ in cluster.kube.writes if "claim" in verb] == ["create-claim", "delete-claim"]


def test_the_claim_of_a_gone_pod_is_removed_and_its_device_placed_again(nodes: dict[str, Any]) -> None:
    cluster = cluster_with_dra(nodes, SWITCH)
    cluster.kube.add_deployment(deployment(replicas=1, placement=DRA))
    cluster.reconcile()
    cluster.kube.schedule()
    ((_, name),) = cluster.kube.claims
    assert cluster.kube.claims[(NAMESPACE, name)]["status"]["reservedFor"][0]["name"] == name
    cluster.kube.deployments[(NAMESPACE, "llm")]["spec"]["replicas"] = 0
    cluster.reconcile()
    assert cluster.kube.pods == {}
    assert (NAMESPACE, name) in cluster.kube.claims, "the pod was there when this reconcile began"
    cluster.reconcile()
    assert cluster.kube.claims == {}


def test_stale_claims_are_those_without_a_pod_and_not_about_to_be_made() -> None:
    pods = [PodView("llm-0-aaaaa", 0, "n1", terminating=True)]
    assert stale_claims(["llm-0-aaaaa", "llm-1-bbbbb"], pods) == ["llm-1-bbbbb"], "a terminating pod keeps its claim"
    device = Device("gpu.nvidia.com", "n1", "gpu-0", "GPU-1", 24564)
    body = deployment(placement=DRA) | {"metadata": {"name": "llm", "namespace": NAMESPACE, "uid": "u"}}
    spec = InferenceDeploymentSpec.model_validate(body["spec"])
    made = Plan(creates=[Create(1, "n1", 10.0, device=device)])
    writes = pod_writes(body["metadata"], spec, made, "gpu.nvidia.com", ["llm-1-bbbbb"])
    (pod_name,) = writes.claims
    assert writes.claim_deletes == ([] if pod_name == "llm-1-bbbbb" else ["llm-1-bbbbb"])


def test_a_drain_waits_for_a_pod_whose_claim_holds_a_gpu(nodes: dict[str, Any]) -> None:
    cluster = cluster_with_dra(nodes, SWITCH)
    cluster.kube.add_deployment(deployment(placement=DRA))
    cluster.reconcile()
    cluster.kube.schedule()
    # A bare pod of someone else, holding a GPU through a claim made from a template.
    cluster.kube.claims[("other", "job-gpu-x1")] = {"metadata": {"name": "job-gpu-x1"}, "status": {"allocation": {"devices": {
        "results": [{"driver": "gpu.nvidia.com", "pool": SWITCH, "device": "gpu-3"}]}}}}  # fmt: skip
    cluster.kube.pods[("other", "job")] = {
        "metadata": {"name": "job", "namespace": "other"},
        "spec": {"nodeName": SWITCH, "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
                 "containers": [{"name": "job", "image": "x"}]},
        "status": {"phase": "Running", "resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": "job-gpu-x1"}]},
    }  # fmt: skip
    cluster.kube.add_maintenance(
        {"metadata": {"name": "m"}, "spec": {"nodeName": SWITCH, "reason": "reseat", "unmanagedGpuPods": "Evict"}}
    )
    for _ in range(3):
        cluster.step("m")
    assert ("evict", "other/job") in cluster.kube.writes, "the pod holding a GPU through DRA is drained"
    status = cluster.kube.maintenances["m"]["status"]
    assert status["phase"] != "Ready", "the replica holding its GPU through a claim is still there"
    assert not any("no GPU workload" in c["message"] for c in status.get("conditions") or [])
