"""The InferenceDeployment controller in its three parts: ``decide``'s writes asserted as data, and
the applier against ``FakeKube`` (refusals come back as data; a node annotation conflict is retried).

The views are made with the controller's own ``gather`` from node facts and pod views the tests
write down; nothing here rebuilds what the runtime reads from its indexes.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from egpu_api import keys
from egpu_api.power import PowerLimitStatus
from egpu_operator import facts, metrics, power, reconcile
from egpu_operator.cache import Cache
from egpu_operator.controllers import applier
from egpu_operator.controllers import inferencedeployment as controller
from egpu_operator.controllers.inferencedeployment import Invalid, Outcome, View
from egpu_operator.fakekube import FakeKube
from egpu_operator.liveness import Liveness, Verdicts
from egpu_operator.metrics import OperatorMetrics
from egpu_operator.placement import NodeFacts, Plan, PodView, plan

NOW = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
NS = "ml"
PI, MINI, SWITCH = "pi5-rtx4090", "minipc-rtx4070ti", "switch-4x-a5000"


@dataclass
class Facts:
    """The fleet as ``gather`` reads it: node facts made by the production ``facts.node_facts``."""

    facts: dict[str, NodeFacts]
    power_status: dict[str, dict[str, PowerLimitStatus]] = field(default_factory=dict)
    dra_device_class: str = keys.DRA_GPU_DEVICE_CLASS


def body(replicas: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "llm", "namespace": NS, "uid": "uid-llm", "generation": 1},
        "spec": {
            "replicas": replicas,
            "model": {"name": "llama", "size": "6G", "vramOverhead": "1Gi"},
            "placement": {"maxLoadSeconds": 60, "allowedModes": ["bare-metal", "passthrough"]},
            "template": {"spec": {"containers": [{"name": "server", "image": "example/llm:1"}]}},
            **spec,
        },
    }


def fleet(nodes: dict[str, Any], names: tuple[str, ...], dead: tuple[str, ...] = ()) -> Facts:
    return Facts({name: facts.node_facts(nodes[name], Liveness.DEAD if name in dead else Liveness.ALIVE) for name in names})


def view(deployment: dict[str, Any], seen: Facts, pods: Sequence[PodView] = (), budget_pending: bool = False) -> View:
    parsed = controller.parse(deployment)
    assert not isinstance(parsed, Invalid)
    return controller.gather(deployment, parsed, seen, pods, budget_pending, None, (), NOW)


def planned(seen: View) -> Plan:
    free = {name: node.gpu_allocatable for name, node in seen.nodes.items()}
    for pod in seen.pods:
        free[pod.node] = free.get(pod.node, 0) - 1
    return plan(seen.demand, seen.spec.replicas, list(seen.nodes.values()), free, seen.pods)


def pod_view(name: str, replica: int, node: str, ready: bool = True) -> PodView:
    return PodView(name, replica, node, ready=ready)


# -- decide: the writes as data ---------------------------------------------------------------------


def test_a_new_deployment_decides_one_create_per_replica_each_with_its_event(nodes: dict[str, Any]) -> None:
    seen = view(body(replicas=2), fleet(nodes, (PI, MINI)))
    writes = controller.decide(seen, planned(seen))
    assert sorted(made.create.node for made in writes.creates) == [MINI, PI]
    assert [made.manifest["metadata"]["labels"][keys.REPLICA_LABEL] for made in writes.creates] == ["0", "1"]
    assert all(made.event.reason == "ReplicaPlaced" and not made.event.warning for made in writes.creates)
    assert (writes.deletes, writes.evictions, writes.claim_deletes, writes.status) == ([], [], [], None)


def test_a_dead_agent_surges_first_and_evicts_only_once_the_replacement_is_ready(nodes: dict[str, Any]) -> None:
    old = pod_view("llm-0-old", 0, PI)
    seen = view(body(), fleet(nodes, (PI, MINI), dead=(PI,)), [old])
    writes = controller.decide(seen, planned(seen))
    assert [made.create.node for made in writes.creates] == [MINI], "a replacement elsewhere"
    assert (writes.deletes, writes.evictions) == ([], []), "the old replica serves until the replacement is Ready"

    new = pod_view(writes.creates[0].manifest["metadata"]["name"], 0, MINI, ready=True)
    seen = view(body(), fleet(nodes, (PI, MINI), dead=(PI,)), [old, new])
    writes = controller.decide(seen, planned(seen))
    assert (writes.creates, writes.deletes, writes.evictions) == ([], [], [old.name])
    assert writes.why[old.name], "an eviction says which observation justified it"


def test_scaling_down_deletes_the_highest_replica(nodes: dict[str, Any]) -> None:
    running = [pod_view("llm-0-a", 0, PI), pod_view("llm-1-b", 1, MINI)]
    seen = view(body(replicas=1), fleet(nodes, (PI, MINI)), running)
    writes = controller.decide(seen, planned(seen))
    assert (writes.creates, writes.deletes, writes.evictions) == ([], ["llm-1-b"], [])


def test_power_budget_and_service_are_decided_for_the_pods_that_exist(nodes: dict[str, Any]) -> None:
    spec = {"power": {"limitWatts": 200}, "disruption": {"minAvailable": 1}, "service": {"ports": [{"port": 8080}]}}
    running = [pod_view("llm-0-a", 0, SWITCH), pod_view("llm-1-b", 1, SWITCH)]
    seen = view(body(replicas=2, **spec), fleet(nodes, (SWITCH,)), running, budget_pending=True)
    writes = controller.decide_nodes(seen, running)
    assert writes.finalizer is True
    [want] = writes.power
    assert (want.node, want.owner, want.pods, want.whole, want.limit_watts) == (
        SWITCH,
        f"{NS}/llm",
        ("llm-0-a", "llm-1-b"),
        True,
        200,
    )
    assert writes.budget is not None
    assert writes.budget.min_available == 1
    assert writes.budget.manifest is not None
    assert writes.budget.manifest["spec"]["minAvailable"] == 1
    assert writes.service is not None
    assert writes.service.manifest is not None
    assert writes.service.exists is False
    assert writes.service.manifest["spec"]["ports"] == [{"port": 8080, "targetPort": 8080, "protocol": "TCP"}]


def test_a_node_no_longer_used_gets_a_want_with_no_pods_and_the_merge_releases_its_limits(nodes: dict[str, Any]) -> None:
    deployment = body(power={"limitWatts": 200})
    deployment["metadata"]["finalizers"] = [keys.POWER_FINALIZER]
    deployment["status"] = {"placements": [{"replica": 0, "pod": "llm-0-a", "node": PI, "power": {"requestedWatts": 200}}]}
    seen = view(deployment, fleet(nodes, (PI, MINI)), [])
    writes = controller.decide_nodes(seen, [])
    assert writes.finalizer is False
    [want] = writes.power
    assert (want.node, want.pods) == (PI, ())
    uuid = seen.nodes[PI].gpu_uuids[0]
    annotations = {
        power.OWNERS_ANNOTATION: json.dumps({uuid: f"{NS}/llm"}),
        keys.POWER_REQUEST_ANNOTATION: json.dumps({uuid: 200}),
    }
    decided = power.node_decision(want, annotations)
    assert json.loads(decided.values[power.OWNERS_ANNOTATION]) == {}
    assert json.loads(decided.values[keys.POWER_REQUEST_ANNOTATION]) == {}
    assert decided.shares == {}


def test_deletion_releases_only_this_deployments_limits(nodes: dict[str, Any]) -> None:
    kube = FakeKube({SWITCH: nodes[SWITCH]})
    uuids = facts.node_facts(nodes[SWITCH]).gpu_uuids
    kube.nodes[SWITCH]["metadata"]["annotations"].update({
        power.OWNERS_ANNOTATION: json.dumps({uuids[0]: f"{NS}/llm", uuids[1]: f"{NS}/other"}),
        keys.POWER_REQUEST_ANNOTATION: json.dumps({uuids[0]: 200, uuids[1]: 150}),
    })  # fmt: skip
    deployment = kube.add_deployment(body() | {"metadata": {**body()["metadata"], "finalizers": [keys.POWER_FINALIZER]}})
    reconcile.release_power(kube, deployment, [SWITCH])
    annotations = kube.nodes[SWITCH]["metadata"]["annotations"]
    assert json.loads(annotations[power.OWNERS_ANNOTATION]) == {uuids[1]: f"{NS}/other"}
    assert json.loads(annotations[keys.POWER_REQUEST_ANNOTATION]) == {uuids[1]: 150}
    assert (NS, "llm") not in kube.deployments or not kube.deployments[(NS, "llm")]["metadata"]["finalizers"]


def test_an_invalid_spec_is_reported_once(nodes: dict[str, Any]) -> None:
    kube = FakeKube(nodes)
    broken = body()
    broken["spec"]["replicas"] = "many"
    kube.add_deployment(broken)
    invalid = controller.parse(broken)
    assert isinstance(invalid, Invalid)
    assert invalid.message.startswith("spec cannot be used: spec.replicas:"), "the message names the field"

    for _ in range(3):
        current = kube.deployments[(NS, "llm")]
        reconcile.reconcile(kube, Cache(), current, reconcile.Fleet(Cache(), {}, _alive(), {}), [])
    patches = [write for write in kube.writes if write == ("patch", f"inferencedeployment/{NS}/llm/status")]
    assert len(patches) == 1
    [placed] = kube.deployments[(NS, "llm")]["status"]["conditions"]
    assert (placed["type"], placed["status"], placed["reason"]) == ("Placed", "False", "InvalidSpec")


def _alive() -> Verdicts:
    return Verdicts({}, False, 0)


# -- the applier against FakeKube -------------------------------------------------------------------


def test_a_refused_pod_is_a_refusal_in_the_outcome_and_in_the_status(nodes: dict[str, Any]) -> None:
    kube, cache = FakeKube(nodes), Cache()
    deployment = kube.add_deployment(body())
    kube.refuse_pods = lambda manifest: 'pods "x" is forbidden: exceeded quota: gpus'
    seen = view(deployment, fleet(nodes, (PI,)))
    result = planned(seen)
    [made] = controller.decide(seen, result).creates
    cache.assume(made.manifest["metadata"]["name"], PI)

    outcome = applier.apply(kube, cache, controller.decide(seen, result), Outcome(after=[]))
    assert outcome.refusals == ['replica 0: pods "x" is forbidden: exceeded quota: gpus']
    assert (outcome.created, outcome.after, kube.pods) == (set(), [], {})
    assert cache.reserved() == {}, "a refused pod's GPU is released at once"

    report = controller.decide_report(seen, result, outcome)
    assert report.status is not None
    placed = report.status["conditions"][0]
    assert (placed["status"], placed["reason"]) == ("False", "PodRejected")
    assert "exceeded quota" in placed["message"]
    assert [event.reason for event in report.events] == ["PodRejected"]


def test_a_refused_eviction_keeps_its_pod_and_asks_for_a_retry(nodes: dict[str, Any]) -> None:
    kube, cache = FakeKube(nodes), Cache()
    deployment = kube.add_deployment(body())
    seen = view(deployment, fleet(nodes, (PI,)))
    [made] = controller.decide(seen, planned(seen)).creates
    kube.create_pod(made.manifest)
    kube.schedule()
    kube.pdbs[(NS, "strict")] = {
        "metadata": {"name": "strict", "namespace": NS},
        "spec": {"minAvailable": 5, "selector": {"matchLabels": {keys.DEPLOYMENT_LABEL: "llm"}}},
    }
    pod = facts.controlled_replicas(deployment, kube.pods.values())[0]
    writes = controller.Writes(f"{NS}/llm", {"metadata": deployment["metadata"]}, evictions=[pod.name], why={pod.name: "test"})
    outcome = applier.apply(kube, cache, writes, Outcome(after=[pod]))
    assert outcome.retry is True
    assert (outcome.after, outcome.deleted) == ([pod], set())
    assert (NS, pod.name) in kube.pods


def test_a_conflict_on_the_node_annotations_is_merged_again_and_keeps_the_other_owner(nodes: dict[str, Any]) -> None:
    kube, cache = FakeKube({SWITCH: nodes[SWITCH]}), Cache()
    deployment = kube.add_deployment(body(replicas=1, power={"limitWatts": 200}))
    uuids = facts.node_facts(nodes[SWITCH]).gpu_uuids
    # Between the read and the write another deployment takes the first GPU.
    kube.node_races[SWITCH] = [{
        power.OWNERS_ANNOTATION: json.dumps({uuids[0]: f"{NS}/other"}),
        keys.POWER_REQUEST_ANNOTATION: json.dumps({uuids[0]: 150}),
    }]  # fmt: skip
    running = [pod_view("llm-0-a", 0, SWITCH)]
    seen = view(deployment, fleet(nodes, (SWITCH,)), running)
    outcome = applier.apply(kube, cache, controller.decide_nodes(seen, running), Outcome(after=running))

    assert ("conflict", f"node/{SWITCH}") in kube.writes
    annotations = kube.nodes[SWITCH]["metadata"]["annotations"]
    assert json.loads(annotations[power.OWNERS_ANNOTATION]) == {uuids[0]: f"{NS}/other", uuids[1]: f"{NS}/llm"}
    assert json.loads(annotations[keys.POWER_REQUEST_ANNOTATION]) == {uuids[0]: 150, uuids[1]: 200}
    want, decided = outcome.power[SWITCH]
    assert decided.pod_limits(want) == {"llm-0-a": (uuids[1], 200)}, "the status reports what was written"
    assert kube.deployments[(NS, "llm")]["metadata"]["finalizers"] == [keys.POWER_FINALIZER]


def test_a_restart_with_pods_not_yet_indexed_waits_and_never_creates_twice(nodes: dict[str, Any]) -> None:
    kube, cache = FakeKube({PI: nodes[PI], MINI: nodes[MINI]}), Cache()
    deployment = kube.add_deployment(body(replicas=2))
    seen_fleet = reconcile.Fleet(cache, kube.nodes, _alive_on(kube), {})
    assert reconcile.reconcile(kube, cache, deployment, seen_fleet, []) is False
    created = [write for write in kube.writes if write[0] == "create"]
    assert len(created) == 2

    # Expectations: the pod index has not shown the new pods yet, so nothing is planned again.
    writes = len(kube.writes)
    assert reconcile.reconcile(kube, cache, deployment, reconcile.Fleet(cache, kube.nodes, _alive_on(kube), {}), []) is False
    assert kube.writes[writes:] == []

    # After a restart the expectations are gone; the stable pod names make the creates 409s: no
    # second pod, no second ReplicaPlaced Event.
    fresh = Cache()
    events = len(kube.events)
    reconcile.reconcile(kube, fresh, deployment, reconcile.Fleet(fresh, kube.nodes, _alive_on(kube), {}), [])
    assert len(kube.pods) == 2
    assert [event["reason"] for event in kube.events[events:]] == []


def _alive_on(kube: FakeKube) -> Verdicts:
    return Verdicts(dict.fromkeys(kube.nodes, Liveness.ALIVE), False, 0)


@pytest.mark.parametrize("refusal", ["status.replicas: Invalid value"])
def test_a_refused_status_is_told_once_and_retried(nodes: dict[str, Any], refusal: str) -> None:
    kube, cache = FakeKube({PI: nodes[PI]}), Cache()
    deployment = kube.add_deployment(body())
    kube.refuse_status = lambda status: refusal
    for _ in range(2):
        replicas = facts.controlled_replicas(deployment, kube.pods.values())
        seen_fleet = reconcile.Fleet(cache, kube.nodes, _alive_on(kube), {})
        assert reconcile.reconcile(kube, cache, deployment, seen_fleet, replicas) is True, "asked again with backoff"
        deployment = kube.deployments[(NS, "llm")]
    assert kube.writes.count(("patch", f"inferencedeployment/{NS}/llm/status")) == 2
    assert kube.reasons().count("StatusRefused") == 1


def test_the_metrics_go_to_the_recorder_passed_in(nodes: dict[str, Any]) -> None:
    kube, cache = FakeKube({PI: nodes[PI]}), Cache()
    deployment = kube.add_deployment(body())
    recorder = OperatorMetrics(CollectorRegistry())
    default_before = generate_latest(metrics.REGISTRY).decode()
    seen_fleet = reconcile.Fleet(cache, kube.nodes, _alive_on(kube), {})
    reconcile.reconcile(kube, cache, deployment, seen_fleet, [], recorder=recorder)
    text = generate_latest(recorder.registry).decode()
    assert f'egpu_operator_deployment_replicas_desired{{name="llm",namespace="{NS}"}} 1.0' in text
    assert 'egpu_operator_reconciles_total{result="placed"} 1.0' in text
    assert "egpu_operator_placement_seconds_count 1.0" in text
    assert generate_latest(metrics.REGISTRY).decode().count(f'namespace="{NS}",') == default_before.count(f'namespace="{NS}",')
