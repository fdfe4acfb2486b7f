"""The node watch keeps slim copies and wakes placement only when placement facts change."""

from typing import Any

from egpu_operator.nodewatch import NodeWatch, slim


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
    watch = NodeWatch(None, on_change=lambda: None)
    assert watch._store(node()) is True  # new
    assert watch._store(node(heartbeat="t1")) is False  # status churn
    first = watch.snapshot()["pi5"]
    assert watch._store(node(labels={"beta.kubernetes.io/arch": "arm64"})) is False  # kept, but no wake-up
    assert watch.snapshot()["pi5"]["metadata"]["labels"]["beta.kubernetes.io/arch"] == "arm64"
    assert watch.snapshot()["pi5"] is not first
    assert watch._store(node(labels={"beta.kubernetes.io/arch": "arm64"}, unschedulable=True)) is True  # cordon
    assert watch._store(node(labels={"beta.kubernetes.io/arch": "arm64", "egpu-operator.io/health": "lost"},
                             unschedulable=True)) is True  # fmt: skip
