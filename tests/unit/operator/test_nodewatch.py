"""The node informer keeps slim copies and wakes placement only when placement facts change."""

from typing import Any

from egpu_operator import reads
from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube
from egpu_operator.nodewatch import slim
from egpu_operator.runtime import Operator


def node(labels: dict[str, str] | None = None, heartbeat: str = "t0", unschedulable: bool = False) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "pi5",
            "labels": {"egpu-operator.io/health": "ok", **(labels or {})},
            "annotations": {"egpu-operator.io/gpus": "[]", "node.alpha.kubernetes.io/ttl": "0"},
            "resourceVersion": heartbeat,
        },
        "spec": {"unschedulable": unschedulable, "taints": [{"key": "k", "effect": "PreferNoSchedule"}]},
        "status": {"allocatable": {"nvidia.com/gpu": "1", "cpu": "4"}, "conditions": [{"lastHeartbeatTime": heartbeat}]},
    }


def test_slim_keeps_only_what_placement_reads() -> None:
    assert slim(node()) == {
        "metadata": {"name": "pi5", "labels": {"egpu-operator.io/health": "ok"}, "annotations": {"egpu-operator.io/gpus": "[]"}},
        "spec": {"unschedulable": False, "taints": []},
        "status": {"allocatable": {"nvidia.com/gpu": "1", "cpu": "4"}},  # all of it: whole-pod fit reads every resource
    }


def test_only_placement_facts_wake_placement() -> None:
    running = Operator(OperatorConfig(), FakeKube(), watch_client=None)
    nodes = running.informers[reads.NODES]
    woken = running._nodes_changed

    def event(kind: str, item: dict[str, Any]) -> bool:
        woken.clear()
        nodes.apply(kind, item)
        return woken.is_set()

    assert event("ADDED", node()) is True  # new
    assert event("MODIFIED", node(heartbeat="t1")) is False  # status churn
    first = running.nodes()["pi5"]
    assert event("MODIFIED", node(labels={"beta.kubernetes.io/arch": "arm64"})) is False  # kept, but no wake-up
    assert running.nodes()["pi5"]["metadata"]["labels"]["beta.kubernetes.io/arch"] == "arm64"
    assert running.nodes()["pi5"] is not first
    assert event("MODIFIED", node(labels={"beta.kubernetes.io/arch": "arm64"}, unschedulable=True)) is True  # cordon
    health = {"beta.kubernetes.io/arch": "arm64", "egpu-operator.io/health": "lost"}
    assert event("MODIFIED", node(labels=health, unschedulable=True)) is True
    assert event("DELETED", node()) is True
    assert running.nodes() == {}
