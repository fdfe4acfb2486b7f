"""The GPUMaintenance controller's writes as data (``decide``, ``decide_report``, ``decide_deletion``),
and its applier against ``FakeKube``: a refused eviction is a refusal in the outcome and in the status.

Worlds are written down as ``drain.World`` values; nothing here re-reads the cluster the way
``maintenance.step`` does."""

from datetime import UTC, datetime
from typing import Any

from egpu_api import keys
from egpu_api.maintenance import GPUMaintenanceSpec, GPUMaintenanceStatus
from egpu_operator import drain
from egpu_operator.cache import Cache
from egpu_operator.controllers import applier
from egpu_operator.controllers import gpumaintenance as controller
from egpu_operator.fakekube import FakeKube

NOW = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
NODE = "pi5-rtx4090"
REPLICA = drain.GpuPod("ml", "llm-0-old", deployment="ml/llm", replica=0)


def maintenance(phase: str | None = None, finalizers: tuple[str, ...] = (), **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{keys.API_GROUP}/{keys.API_VERSION}",
        "kind": "GPUMaintenance",
        "metadata": {
            "name": "reseat",
            "uid": "uid-reseat",
            "generation": 1,
            "resourceVersion": "7",
            "finalizers": list(finalizers),
        },
        "spec": {"nodeName": NODE, "reason": "reseat eGPU dock"},
    }
    if phase is not None:
        body["status"] = {"phase": phase, **status}
    return body


def view(body: dict[str, Any], node: drain.NodeState) -> controller.View:
    return controller.View(
        body,
        GPUMaintenanceSpec.model_validate(body["spec"]),
        GPUMaintenanceStatus.model_validate(body.get("status") or {}),
        node,
        NOW,
    )


def test_a_new_maintenance_adds_its_finalizer_records_the_cordon_then_cordons() -> None:
    seen = view(maintenance(), drain.NodeState())
    world = drain.World(node=seen.node)
    decision = drain.decide(seen.spec, seen.previous, world, NOW)
    writes = controller.decide(seen, decision, world)
    assert writes.add_finalizer == controller.FinalizerWrite("7", [drain.FINALIZER])
    assert writes.cordon_record is not None
    assert writes.cordon_record["nodeWasCordoned"] is False, (
        "written before the cordon: a restart never takes ours for an admin's"
    )
    assert writes.node_patch == {"spec": {"unschedulable": True}, "metadata": {"labels": {keys.MAINTENANCE_LABEL: "reseat"}}}
    assert writes.evictions == []


def test_a_replica_whose_replacement_is_ready_is_evicted_and_known_as_replaced() -> None:
    state = drain.NodeState(unschedulable=True, maintenance_label="reseat")
    body = maintenance("Evacuating", (drain.FINALIZER,), nodeWasCordoned=False, startedAt="2026-12-04T07:59:00Z")
    seen = view(body, state)
    world = drain.World(node=state, pods=[REPLICA], replacements={("ml/llm", 0): drain.Replacement("llm-0-new", "minipc", True)})
    decision = drain.decide(seen.spec, seen.previous, world, NOW)
    writes = controller.decide(seen, decision, world)
    assert [(eviction.pod, eviction.replaced) for eviction in writes.evictions] == [(REPLICA, True)]
    assert (writes.add_finalizer, writes.cordon_record, writes.node_patch) == (None, None, None)


def test_a_refused_eviction_is_a_refusal_in_the_outcome_and_in_the_status() -> None:
    kube, cache = FakeKube(), Cache()
    kube.pods[("ml", REPLICA.name)] = {
        "metadata": {"name": REPLICA.name, "namespace": "ml", "labels": {keys.DEPLOYMENT_LABEL: "llm"}},
        "spec": {"nodeName": NODE},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    kube.pdbs[("ml", "llm")] = {
        "metadata": {"name": "llm", "namespace": "ml"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {keys.DEPLOYMENT_LABEL: "llm"}}},
    }
    state = drain.NodeState(unschedulable=True, maintenance_label="reseat")
    body = kube.add_maintenance(
        maintenance("Evacuating", (drain.FINALIZER,), nodeWasCordoned=False, startedAt="2026-12-04T07:59:00Z")
    )
    seen = view(body, state)
    world = drain.World(node=state, pods=[REPLICA], replacements={("ml/llm", 0): drain.Replacement("llm-0-new", "minipc", True)})
    decision = drain.decide(seen.spec, seen.previous, world, NOW)

    outcome = applier.apply_maintenance(kube, cache, controller.decide(seen, decision, world), controller.Outcome())
    assert list(outcome.refused) == [REPLICA.key]
    assert outcome.evicted == []
    assert ("ml", REPLICA.name) in kube.pods

    report = controller.decide_report(seen, decision, world, outcome)
    assert report.status is not None
    assert f"eviction of {REPLICA.key} refused" in report.status["message"]
    evacuated = next(c for c in report.status["conditions"] if c["type"] == "Evacuated")
    assert (evacuated["status"], evacuated["reason"]) == ("False", "DisruptionBudget")


def test_an_evicted_replica_without_a_replacement_is_recorded_once() -> None:
    kube, cache = FakeKube(), Cache()
    kube.pods[("ml", REPLICA.name)] = {"metadata": {"name": REPLICA.name, "namespace": "ml"}, "spec": {"nodeName": NODE}}
    body = kube.add_maintenance(maintenance("Evacuating", (drain.FINALIZER,)))
    writes = controller.Writes("reseat", body, evictions=[controller.Eviction(REPLICA, "no other adequate node", False)] * 2)
    outcome = applier.apply_maintenance(kube, cache, writes, controller.Outcome())
    assert outcome.evicted == [REPLICA.key]
    assert kube.reasons() == ["Evicted", "Evicted"]


def test_deletion_gives_the_node_back_then_releases_the_finalizer_last() -> None:
    state = drain.NodeState(unschedulable=True, maintenance_label="reseat")
    body = maintenance("Evacuating", (drain.FINALIZER, "other/keep"), nodeWasCordoned=False)
    writes = controller.decide_deletion(view(body, state))
    assert writes.node_patch == {"metadata": {"labels": {keys.MAINTENANCE_LABEL: None}}, "spec": {"unschedulable": None}}
    assert [event.reason for event in writes.events] == ["Completed"]
    assert writes.release_finalizer == controller.FinalizerWrite("7", ["other/keep"])
    assert writes.add_finalizer is None


def test_an_administrators_cordon_stays_when_the_node_is_given_back() -> None:
    state = drain.NodeState(unschedulable=True, maintenance_label="reseat")
    assert controller.restore_patch("reseat", True, state) == {"metadata": {"labels": {keys.MAINTENANCE_LABEL: None}}}
    assert controller.restore_patch("reseat", False, drain.NodeState()) is None, "nothing of ours left: no write"


def test_a_spec_that_cannot_be_used_becomes_a_failed_status() -> None:
    body = maintenance()
    body["spec"] = {"nodeName": ""}
    parsed = controller.parse(body, NOW)
    assert isinstance(parsed, controller.Writes)
    assert parsed.status is not None
    assert parsed.status["phase"] == "Failed"
    assert parsed.status["message"].startswith("spec cannot be used")


def test_the_pods_on_a_node_become_gpu_pods_and_other_pods() -> None:
    gpu = {
        "metadata": {
            "name": "llm-0-a", "namespace": "ml", "labels": {keys.DEPLOYMENT_LABEL: "llm", keys.REPLICA_LABEL: "0"},
            "ownerReferences": [{"kind": "InferenceDeployment", "controller": True, "name": "llm", "uid": "u"}],
        },
        "spec": {"containers": [{"name": "s", "resources": {"limits": {keys.GPU_RESOURCE: "1"}}}]},
    }  # fmt: skip
    web = {"metadata": {"name": "web", "namespace": "ml"}, "spec": {"containers": [{"name": "s"}]}}
    world = controller.world(NODE, drain.NodeState(), [(gpu, 0), (web, 0)], lambda key: None, lambda key: [], [])
    assert [(pod.key, pod.deployment, pod.replica) for pod in world.pods] == [("ml/llm-0-a", "ml/llm", 0)]
    assert list(world.other_pods) == ["ml/web"]
