"""Statuses are written from the contract's models: every key the API server gets is a field of
``InferenceDeploymentStatus`` or ``GPUMaintenanceStatus`` (a misspelt one would be pruned there
without a word), and conditions keep their transition time while their status holds."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from egpu_api import keys
from egpu_api.inference import InferenceDeploymentStatus, ReplicaPlacement
from egpu_api.maintenance import GPUMaintenanceStatus
from egpu_api.power import EXTERNALLY_MANAGED, PowerLimitStatus, dump_status
from egpu_operator import drain, status
from tests.unit.operator.cluster import NAMESPACE, Cluster, deployment

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def round_trip(model: type[InferenceDeploymentStatus] | type[GPUMaintenanceStatus], written: dict[str, Any]) -> dict[str, Any]:
    """What survives reading ``written`` into the model and writing it back: unknown keys do not."""
    return model.model_validate(written).model_dump(by_alias=True, exclude_none=True, exclude={"kopf"})


def test_the_deployment_status_has_only_contract_fields(nodes: dict[str, Any]) -> None:
    cluster = Cluster(nodes)
    cluster.kube.add_deployment(deployment(replicas=2, power={"limitWatts": 300}))
    cluster.reconcile()
    cluster.kube.schedule()
    cluster.reconcile()
    written = cluster.status()
    assert round_trip(InferenceDeploymentStatus, written) == written
    assert set(written) == {"observedGeneration", "replicas", "readyReplicas", "selector", "worstLoadSeconds", "placements",
                            "conditions"}  # fmt: skip
    assert [c["type"] for c in written["conditions"]] == ["Placed", "Ready"]
    entry = written["placements"][0]
    assert set(entry) >= {"replica", "pod", "node", "ready", "linkGeneration", "linkWidth", "bandwidthMBps",
                          "estimatedLoadSeconds", "gpu", "power"}  # fmt: skip
    assert entry["power"] == {"requestedWatts": 300, "message": "waiting for the node agent"}, "no nulls are written"


def test_a_limit_someone_else_set_reaches_the_replica_s_power_status(nodes: dict[str, Any]) -> None:
    cluster = Cluster(nodes)
    cluster.kube.add_deployment(deployment(power={"limitWatts": 300}))
    cluster.reconcile()
    cluster.kube.schedule()
    cluster.reconcile()
    entry = cluster.status()["placements"][0]
    reported = PowerLimitStatus(requested_watts=300, target_watts=300, applied_watts=250, state=EXTERNALLY_MANAGED,
                                message="NVML enforces 250 W, not the 300 W the agent set: ...")  # fmt: skip
    annotations = cluster.kube.nodes[entry["node"]]["metadata"].setdefault("annotations", {})
    annotations[keys.POWER_STATUS_ANNOTATION] = dump_status({entry["gpu"]: reported})
    cluster.reconcile()
    power = cluster.status()["placements"][0]["power"]
    assert power == {
        "requestedWatts": 300,
        "appliedWatts": 250,
        "message": "NVML enforces 250 W, not the 300 W the agent set: ...",
    }


def test_a_load_estimate_no_replica_has_any_more_is_cleared(nodes: dict[str, Any]) -> None:
    cluster = Cluster(nodes)
    cluster.kube.add_deployment(deployment())
    cluster.reconcile()
    assert cluster.status()["worstLoadSeconds"] > 0
    cluster.kube.deployments[(NAMESPACE, "llm")]["spec"]["replicas"] = 0
    cluster.kube.deployments[(NAMESPACE, "llm")]["metadata"]["generation"] = 2
    cluster.reconcile()
    cluster.kube.pods.clear()  # the deleted pod is gone
    cluster.reconcile()
    assert "worstLoadSeconds" not in cluster.status(), "the merge patch's null removed the stale estimate"


def test_wire_writes_camel_case_only_what_was_set() -> None:
    placement = ReplicaPlacement(replica=0, pod="llm-0", node="n1", ready=True)
    placement.bandwidth_m_bps = 856
    assert status.wire(placement) == {"replica": 0, "pod": "llm-0", "node": "n1", "ready": True, "bandwidthMBps": 856}
    assert status.wire(GPUMaintenanceStatus(phase="Failed", message="spec cannot be used")) == {
        "phase": "Failed", "message": "spec cannot be used"
    }  # fmt: skip


@pytest.mark.parametrize(("before", "expected"), [("True", "2026-11-22T07:00:00Z"), ("False", "2026-11-22T08:00:00Z")])
def test_a_condition_keeps_its_transition_time_while_its_status_holds(before: str, expected: str) -> None:
    previous = [{"type": "Ready", "status": before, "lastTransitionTime": "2026-11-22T07:00:00Z"}]
    written = status.wire(status.condition(previous, "Ready", True, "AllReplicasReady", "2/2 replicas ready", 3, NOW))
    assert written == {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "2/2 replicas ready",
                       "lastTransitionTime": expected, "observedGeneration": 3}  # fmt: skip


def test_the_maintenance_status_has_only_contract_fields() -> None:
    spec = drain.GPUMaintenanceSpec.model_validate({"nodeName": "n1", "reason": "reseat dock"})
    fresh = GPUMaintenanceStatus()
    decision = drain.decide(spec, fresh, drain.World(drain.NodeState(unschedulable=True)), NOW)
    written = drain.status(decision, fresh, [], 1, {}, [], [], NOW)
    assert round_trip(GPUMaintenanceStatus, written) == written
    assert (written["phase"], written["nodeWasCordoned"], written["startedAt"]) == ("Cordoned", True, "2026-11-22T08:00:00Z")

    replica = drain.GpuPod("ns", "llm-0-abc", deployment="ns/llm", replica=0)
    world = drain.World(drain.NodeState(unschedulable=True, maintenance_label="m"), pods=[replica])
    evacuating = GPUMaintenanceStatus.model_validate(written)
    later = NOW + timedelta(seconds=5)
    moved = drain.record_moves([], world)
    step = drain.status(drain.decide(spec, evacuating, world, later), evacuating, written["conditions"], 1, {}, moved, [], later)
    assert round_trip(GPUMaintenanceStatus, step) == step
    assert step["moved"] == [{"deployment": "ns/llm", "replica": 0, "fromPod": "ns/llm-0-abc"}]
    started = next(c for c in step["conditions"] if c["type"] == "Started")
    assert started["lastTransitionTime"] == "2026-11-22T08:00:00Z", "Started held: its time did not move"
