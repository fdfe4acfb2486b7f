from typing import Any

import pytest

from egpu_localcluster.kubectl import is_ready


def node(ready: str, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "spec": {"taints": taints} if taints is not None else {},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (node("True"), True),
        (node("False"), False),
        ({"status": {}}, False),
        # Ready, but the node lifecycle controller has not lifted its taint yet: the scheduler and
        # the DaemonSet controller still pass the node over.
        (node("True", [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]), False),
        (node("True", [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]), False),
        # Taints of users (and cordon) are not the lifecycle controller's: the node is up.
        (node("True", [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]), True),
        (node("True", [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]), True),
    ],
)
def test_a_node_is_ready_once_up_and_free_of_lifecycle_taints(manifest: dict[str, Any], expected: bool) -> None:
    assert is_ready(manifest) is expected
