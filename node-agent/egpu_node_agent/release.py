"""Whether the agent's stop is the end of its power management: then it restores the limits it set. Pure.

A DaemonSet pod stops for many reasons: an upgrade's rolling update, a node drain, an eviction,
an uninstall. Restoring on every stop would lift a cap the host's power path may need for the
seconds until the next agent starts, so by default (``uninstall``) the agent restores only when
its DaemonSet says no agent will manage power after it: the DaemonSet is gone or being deleted
(``helm uninstall``), or its pod template now runs the agent read-only
(``agent.powerActuation.enabled=false``). Helm deletes the agent's RBAC in the same uninstall, so
a DaemonSet the agent may no longer read (401, 403) counts as gone too. Any other failure to read
it is unknown, and the limits stay: a cap left on is safer than one lifted on a guess.
"""

from collections.abc import Mapping
from typing import Any, Final, Literal

RestoreMode = Literal["never", "uninstall", "always"]
RESTORE_MODES: Final[tuple[RestoreMode, ...]] = ("never", "uninstall", "always")


def restore_reason(mode: RestoreMode, daemonset: Mapping[str, Any] | None, read_status: int | None = None) -> str | None:
    """Why the stopping agent restores its limits, or None to leave them for the next agent.

    ``daemonset`` is the agent's DaemonSet as read at the stop; None with ``read_status`` None
    means it does not exist (404), None with an HTTP status means the read failed with it.
    """
    if mode == "never":
        return None
    if mode == "always":
        return "the agent stopped (--restore-power-on-exit=always)"
    if daemonset is None:
        if read_status is None:
            return "the agent's DaemonSet is gone (uninstalled)"
        if read_status in (401, 403):
            return f"the agent may no longer read its DaemonSet (HTTP {read_status}: its RBAC was removed, an uninstall)"
        return None
    if daemonset.get("metadata", {}).get("deletionTimestamp"):
        return "the agent's DaemonSet is being deleted (uninstall)"
    containers = daemonset.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    if any("--read-only" in (container.get("args") or []) for container in containers):
        return "the agent's DaemonSet now runs it read-only (agent.powerActuation.enabled=false)"
    return None
