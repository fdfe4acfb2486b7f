"""When a stopping agent restores the power limits it set: only when no agent manages power after it."""

from typing import Any

import pytest

from egpu_node_agent.release import RestoreMode, restore_reason


def daemonset(*args: str, deleting: bool = False) -> dict[str, Any]:
    metadata = {"name": "egpu-operator-node-agent"} | ({"deletionTimestamp": "2026-12-04T14:00:00Z"} if deleting else {})
    return {
        "metadata": metadata,
        "spec": {"template": {"spec": {"containers": [{"name": "node-agent", "args": ["run", *args]}]}}},
    }


@pytest.mark.parametrize(
    ("mode", "found", "status", "expected"),
    [
        pytest.param("never", None, None, None, id="never: not even on uninstall"),
        pytest.param("always", daemonset(), None, "the agent stopped (--restore-power-on-exit=always)", id="always"),
        pytest.param("uninstall", daemonset(), None, None, id="a restart (rolling update, drain): the next agent keeps them"),
        pytest.param("uninstall", None, None, "the agent's DaemonSet is gone (uninstalled)", id="DaemonSet gone"),
        pytest.param("uninstall", daemonset(deleting=True), None, "the agent's DaemonSet is being deleted (uninstall)",
                     id="DaemonSet being deleted"),
        pytest.param("uninstall", daemonset("--read-only"), None,
                     "the agent's DaemonSet now runs it read-only (agent.powerActuation.enabled=false)",
                     id="power actuation turned off"),
        pytest.param("uninstall", None, 403,
                     "the agent may no longer read its DaemonSet (HTTP 403: its RBAC was removed, an uninstall)",
                     id="RBAC removed with the release"),
        pytest.param("uninstall", None, 401,
                     "the agent may no longer read its DaemonSet (HTTP 401: its RBAC was removed, an uninstall)",
                     id="service account removed with the release"),
        pytest.param("uninstall", None, 503, None, id="API unavailable: unknown, the caps stay"),
    ],
)  # fmt: skip
def test_restore_reason(mode: RestoreMode, found: dict[str, Any] | None, status: int | None, expected: str | None) -> None:
    assert restore_reason(mode, found, status) == expected
