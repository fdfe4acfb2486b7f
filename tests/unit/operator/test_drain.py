"""The drain planner: one step of a GPUMaintenance, as case tables over plain data."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from egpu_api.maintenance import DEFAULT_DRAIN_TIMEOUT_SECONDS, GPUMaintenanceSpec, GPUMaintenanceStatus
from egpu_operator.drain import (
    GpuPod,
    NodeState,
    Replacement,
    World,
    auto_maintenance,
    decide,
    listed,
    record_moves,
    slot_wait,
    status,
)
from egpu_operator.facts import ready_by

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
STARTED = (NOW - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
CORDONED = NodeState(unschedulable=True, maintenance_label="m")
REPLICA = GpuPod("ns", "llm-0-abc", deployment="ns/llm", replica=0)
NO_NODE = {"ns/llm": "0/8 nodes adequate: 1 replica(s) run on nodes no longer adequate"}
UNMANAGED = GpuPod("ns", "batch")
DAEMON = GpuPod("kube-system", "dcgm-exporter", daemonset=True)


def spec(**fields: Any) -> GPUMaintenanceSpec:
    return GPUMaintenanceSpec.model_validate({"nodeName": "n1", "reason": "reseat dock", **fields})


def previous(phase: str, **fields: Any) -> GPUMaintenanceStatus:
    return GPUMaintenanceStatus.model_validate({"phase": phase, "startedAt": STARTED, "nodeWasCordoned": False, **fields})


@pytest.mark.parametrize(
    ("phase", "world", "fields", "expected_phase", "evicted", "wait_reason"),
    [
        # Pending: start when a slot is free, remembering whether the node was cordoned already.
        ("Pending", World(NodeState()), {}, "Cordoned", [], ""),
        ("Pending", World(NodeState(), slot_wait="1 of at most 1 in progress"), {}, "Pending", [], "WaitingForSlot"),
        ("Pending", World(NodeState(exists=False)), {}, "Failed", [], ""),
        ("Pending", World(NodeState()), {"completed": True}, "Completed", [], ""),
        # Cordoned, but the cordon is not visible yet: nothing moves.
        ("Cordoned", World(NodeState(), pods=[REPLICA]), {}, "Cordoned", [], ""),
        # Evacuating: a Ready replacement lets the old pod go; a loading one makes it wait.
        ("Cordoned", World(CORDONED, pods=[REPLICA], replacements={("ns/llm", 0): Replacement("llm-0-new", "n2", True)}),
         {}, "Evacuating", ["llm-0-abc"], ""),
        ("Evacuating", World(CORDONED, pods=[REPLICA], replacements={("ns/llm", 0): Replacement("llm-0-new", "n2", False)}),
         {}, "Evacuating", [], "WaitingForReplacement"),
        # No other adequate node (the deployment says Placed=False): wait by default, evict when
        # reduced capacity is allowed.
        ("Evacuating", World(CORDONED, pods=[REPLICA], placement_why=NO_NODE), {}, "Evacuating", [], "NoAdequateNode"),
        ("Evacuating", World(CORDONED, pods=[REPLICA], placement_why=NO_NODE), {"capacityPolicy": "AllowReducedCapacity"},
         "Evacuating", ["llm-0-abc"], ""),
        # The deployment has not judged the cordoned node yet: its surge is coming, so even
        # AllowReducedCapacity waits rather than dropping a replica that could move.
        ("Evacuating", World(CORDONED, pods=[REPLICA]), {}, "Evacuating", [], "WaitingForReplacement"),
        ("Evacuating", World(CORDONED, pods=[REPLICA]), {"capacityPolicy": "AllowReducedCapacity"},
         "Evacuating", [], "WaitingForReplacement"),
        # Unmanaged GPU pods (bare pods, Jobs) are waited for unless evicting them is asked for,
        # as kubectl drain without --force; DaemonSet pods never count.
        ("Evacuating", World(CORDONED, pods=[UNMANAGED, DAEMON]), {}, "Evacuating", [], "WaitingForPods"),
        ("Evacuating", World(CORDONED, pods=[UNMANAGED, DAEMON]), {"unmanagedGpuPods": "Evict"}, "Evacuating", ["batch"], ""),
        ("Evacuating", World(CORDONED, pods=[UNMANAGED]), {"unmanagedGpuPods": "Wait"}, "Evacuating", [], "WaitingForPods"),
        ("Evacuating", World(CORDONED, pods=[GpuPod("ns", "going", terminating=True)]), {}, "Evacuating", [], "WaitingForPods"),
        ("Evacuating", World(CORDONED, pods=[DAEMON]), {}, "Ready", [], ""),
        # Done: back to service; a failed one too once a human says so.
        ("Ready", World(CORDONED), {"completed": True}, "Completed", [], ""),
        ("Failed", World(CORDONED), {}, "Failed", [], ""),
        ("Failed", World(CORDONED), {"completed": True}, "Completed", [], ""),
        ("Evacuating", World(NodeState(exists=False)), {}, "Failed", [], ""),
    ],
)  # fmt: skip
def test_one_step(
    phase: str, world: World, fields: dict[str, Any], expected_phase: str, evicted: list[str], wait_reason: str
) -> None:
    decision = decide(spec(**fields), previous(phase), world, NOW)
    assert decision.phase == expected_phase
    assert [pod.name for pod, _ in decision.evict] == evicted
    assert decision.wait_reason == wait_reason


def test_starting_records_an_admin_cordon_and_cordons() -> None:
    fresh = GPUMaintenanceStatus()
    decision = decide(spec(), fresh, World(NodeState(unschedulable=True)), NOW)
    assert (decision.phase, decision.cordon, decision.add_finalizer) == ("Cordoned", True, True)
    assert decision.status["node_was_cordoned"] is True
    assert decide(spec(), fresh, World(NodeState()), NOW).status["node_was_cordoned"] is False


def test_completion_restores_only_a_started_maintenance() -> None:
    assert decide(spec(completed=True), previous("Ready"), World(CORDONED), NOW).restore is True
    assert decide(spec(completed=True), GPUMaintenanceStatus(), World(NodeState()), NOW).restore is False


def test_timeout_fails_and_leaves_the_node_cordoned() -> None:
    decision = decide(spec(drainTimeoutSeconds=10), previous("Evacuating"), World(CORDONED, pods=[REPLICA]), NOW)
    assert decision.phase == "Failed"
    assert decision.failure is not None
    reason, message = decision.failure
    assert reason == "DrainTimeout"
    assert message == (
        "node not drained within drainTimeoutSeconds (10 s); still on it: ns/llm-0-abc; node left cordoned: "
        "move or delete those pods, then set spec.completed=true (or delete this GPUMaintenance)"
    )
    assert decision.restore is False
    # A Ready node has nothing left to time out.
    assert decide(spec(drainTimeoutSeconds=10), previous("Evacuating"), World(CORDONED), NOW).phase == "Ready"


def test_the_drain_timeout_defaults_to_an_hour() -> None:
    assert spec().drain_timeout_seconds == DEFAULT_DRAIN_TIMEOUT_SECONDS == 3600
    an_hour_ago = previous("Evacuating", startedAt=(NOW - timedelta(seconds=3599)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert decide(spec(), an_hour_ago, World(CORDONED, pods=[UNMANAGED]), NOW).phase == "Evacuating"
    past = previous("Evacuating", startedAt=(NOW - timedelta(seconds=3601)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    decision = decide(spec(), past, World(CORDONED, pods=[UNMANAGED]), NOW)
    assert decision.failure is not None
    assert decision.failure[0] == "DrainTimeout"
    assert decision.failure[1].startswith("node not drained within drainTimeoutSeconds (3600 s); still on it: ns/batch;")


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], ""),
        (["a/1"], "a/1"),
        ([f"a/{n}" for n in range(5)], "a/0, a/1, a/2, a/3, a/4"),
        ([f"a/{n}" for n in range(6)], "a/0, a/1, a/2, a/3, a/4 and 1 more"),
        ([f"a/{n}" for n in range(40)], "a/0, a/1, a/2, a/3, a/4 and 35 more"),
    ],
)
def test_pod_lists_are_bounded(names: list[str], expected: str) -> None:
    assert listed(names) == expected


def test_waited_for_unmanaged_pods_are_named_in_status() -> None:
    pods = [GpuPod("ns", f"job-{n}") for n in range(7)]
    decision = decide(spec(), previous("Evacuating"), World(CORDONED, pods=pods), NOW)
    written = status(decision, previous("Evacuating"), [], 1, {}, [], [], NOW)
    assert written["unmanagedGpuPods"] == [f"ns/job-{n}" for n in range(7)]
    assert written["message"] == (
        "waiting for: ns/job-0, ns/job-1, ns/job-2, ns/job-3, ns/job-4 and 2 more (GPU pods not managed by "
        "egpu-operator) to finish (unmanagedGpuPods: Wait; set it to Evict to evict them)"
    )
    drained = decide(spec(), previous("Evacuating"), World(CORDONED), NOW)
    assert status(drained, previous("Evacuating"), [], 1, {}, [], [], NOW)["unmanagedGpuPods"] == [], "cleared once gone"


@pytest.mark.parametrize(
    ("others", "tail"),
    [
        ((), ""),
        (("web/nginx",), "; 1 non-GPU pod(s) still run on the node and were not drained: web/nginx "
                         "(drain them too before powering the node off)"),
        (tuple(f"web/p{n}" for n in range(8)), "; 8 non-GPU pod(s) still run on the node and were not drained: "
         "web/p0, web/p1, web/p2, web/p3, web/p4 and 3 more (drain them too before powering the node off)"),
    ],
)  # fmt: skip
def test_ready_lists_the_non_gpu_pods_left(others: tuple[str, ...], tail: str) -> None:
    decision = decide(spec(), previous("Evacuating"), World(CORDONED, other_pods=others), NOW)
    written = status(decision, previous("Evacuating"), [], 1, {}, [], [], NOW)
    assert written["phase"] == "Ready"
    assert written["message"] == (
        "no GPU workload left on the node: safe to service the GPUs; set spec.completed=true when done" + tail
    )


@pytest.mark.parametrize(
    ("phase", "fields"),
    [
        # Completed while waiting for a slot (or created so, where the CRD is older than its rule).
        ("Pending", {}),
        # Failed before the cordon (the node did not exist), then completed.
        ("Failed", {"startedAt": None, "nodeWasCordoned": None}),
    ],
)
def test_a_maintenance_that_never_started_does_not_claim_an_evacuation(phase: str, fields: dict[str, Any]) -> None:
    before = previous(phase, **fields) if phase != "Pending" else GPUMaintenanceStatus()
    decision = decide(spec(completed=True), before, World(NodeState(unschedulable=True)), NOW)
    assert (decision.phase, decision.restore, decision.never_started) == ("Completed", False, True)
    written = status(decision, before, [], 1, {}, [], [], NOW)
    assert written["message"] == "completed before the drain started: the node was neither cordoned nor drained"
    kinds = {c["type"]: (c["status"], c["reason"]) for c in written["conditions"]}
    assert kinds == {"Started": ("False", "NotStarted")}, "no Cordoned or Evacuated claim"


def test_status_names_what_it_waits_for_and_refused_evictions() -> None:
    world = World(CORDONED, pods=[REPLICA], placement_why={"ns/llm": "0/8 nodes adequate: 7 VRAM < 20 GiB"})
    decision = decide(spec(), previous("Evacuating"), world, NOW)
    written = status(decision, previous("Evacuating"), [], 1, {}, [], [], NOW)
    evacuated = next(c for c in written["conditions"] if c["type"] == "Evacuated")
    assert (evacuated["status"], evacuated["reason"]) == ("False", "NoAdequateNode")
    assert (
        evacuated["message"] == "waiting for: ns/llm replica 0 has no other adequate node (0/8 nodes adequate: 7 VRAM < 20 GiB)"
    )

    refused = {"ns/batch": "Cannot evict pod as it would violate the pod's disruption budget."}
    blocked = decide(spec(), previous("Evacuating"), World(CORDONED, pods=[UNMANAGED]), NOW)
    written = status(blocked, previous("Evacuating"), [], 1, refused, [], [], NOW)
    evacuated = next(c for c in written["conditions"] if c["type"] == "Evacuated")
    assert evacuated["reason"] == "DisruptionBudget"
    assert "eviction of ns/batch refused: Cannot evict pod" in evacuated["message"]


def test_moves_are_recorded_once_and_completed_when_the_replacement_is_ready() -> None:
    loading = World(CORDONED, pods=[REPLICA], replacements={("ns/llm", 0): Replacement("llm-0-new", "n2", False)})
    moved = record_moves([], loading)
    assert moved == [{"deployment": "ns/llm", "replica": 0, "fromPod": "ns/llm-0-abc"}]
    gone = World(CORDONED, replacements={("ns/llm", 0): Replacement("llm-0-new", "n2", True)})
    assert record_moves(moved, gone) == [
        {"deployment": "ns/llm", "replica": 0, "fromPod": "ns/llm-0-abc", "toPod": "llm-0-new", "toNode": "n2"}
    ]


def maintenance(name: str, node: str, phase: str | None, created: str, **spec_fields: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"nodeName": node, **spec_fields},
        "status": {"phase": phase} if phase else {},
    }


@pytest.mark.parametrize(
    ("others", "limit", "expected"),
    [
        ([], 1, None),
        ([maintenance("a", "n2", "Evacuating", "T1")], 1, "1 of at most 1 maintenance(s) in progress (a)"),
        ([maintenance("a", "n2", "Evacuating", "T1")], 2, None),
        ([maintenance("a", "n2", "Completed", "T1"), maintenance("b", "n3", "Failed", "T1")], 1, None),
        # The oldest pending goes first; a completed pending one does not hold the line.
        ([maintenance("a", "n2", None, "T0")], 1, "0 of at most 1 maintenance(s) in progress (none); queued behind a"),
        ([maintenance("a", "n2", None, "T0", completed=True)], 1, None),
        ([maintenance("a", "n2", None, "T9")], 1, None),
        # One node, one maintenance at a time, whatever the limit.
        ([maintenance("a", "n1", "Ready", "T0")], 5, "node n1 is already in maintenance a"),
    ],
)
def test_parallel_limit(others: list[dict[str, Any]], limit: int, expected: str | None) -> None:
    assert slot_wait("me", "n1", "T5", [maintenance("me", "n1", "Pending", "T5"), *others], limit) == expected


def test_automatic_maintenance_has_a_stable_name() -> None:
    body = auto_maintenance("pi5-rtx4090", "lost", "2026-11-22T10:00:00Z", "GPU 0 fell off the bus (Xid 79)")
    assert body["metadata"]["name"] == "pi5-rtx4090-gpu-lost-20261122100000"
    assert body["metadata"]["labels"] == {"egpu-operator.io/auto-maintenance": "true"}
    assert body["spec"] == {"nodeName": "pi5-rtx4090", "reason": "automatic: GPU lost: GPU 0 fell off the bus (Xid 79)"}


def test_automatic_maintenance_names_of_long_nodes_fit_a_label_value() -> None:
    node = "gpu-worker-" + "x" * 200 + ".rack-7.example.com"
    name = auto_maintenance(node, "degraded", "2026-11-22T10:00:00Z", "")["metadata"]["name"]
    assert len(name) <= 63
    assert name.startswith("gpu-worker-xxx")
    assert name.endswith("-gpu-degraded-20261122100000")
    assert name == auto_maintenance(node, "degraded", "2026-11-22T10:00:00Z", "")["metadata"]["name"]
    sibling = auto_maintenance(node.replace("rack-7", "rack-8"), "degraded", "2026-11-22T10:00:00Z", "")
    assert sibling["metadata"]["name"] != name


def test_the_planned_finish_is_the_last_loading_replacements_estimate() -> None:
    second = GpuPod("ns", "llm-1-abc", deployment="ns/llm", replica=1)
    world = World(
        CORDONED,
        pods=[REPLICA, second],
        replacements={
            ("ns/llm", 0): Replacement("llm-0-new", "n2", False, NOW + timedelta(seconds=21)),
            ("ns/llm", 1): Replacement("llm-1-new", "n3", False, NOW + timedelta(seconds=42)),
        },
    )
    decision = decide(spec(), previous("Evacuating"), world, NOW)
    written = status(decision, previous("Evacuating"), [], 1, {}, [], [], NOW)

    assert written["plannedReadyAt"] == "2026-11-22T12:00:42Z"
    assert "replacement llm-1-new on n3 is loading the model, Ready by 2026-11-22T12:00:42Z as planned" in written["message"]
    GPUMaintenanceStatus.model_validate(written)


def test_a_replica_pods_ready_by_comes_from_its_creation_and_estimate() -> None:
    pod = {
        "metadata": {
            "creationTimestamp": "2026-11-22T12:00:00Z",
            "annotations": {"egpu-operator.io/estimated-load-seconds": "21.5"},
        }
    }
    assert ready_by(pod) == NOW + timedelta(seconds=21.5)
    assert ready_by({"metadata": {"creationTimestamp": "2026-11-22T12:00:00Z"}}) is None
    assert ready_by({"metadata": {"annotations": {"egpu-operator.io/estimated-load-seconds": "soon"}}}) is None
