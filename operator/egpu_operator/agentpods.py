"""Is a node's agent restarting? What the agent's own pods say, beside its Lease. Pure.

A Lease that stopped changing looks the same whether the agent died or is being replaced: a
DaemonSet rollout deletes the old pod, and the new one may pull its image over an edge link for
minutes. Moving replicas for that costs a full model reload each, fleet-wide. So the operator
also looks at the agent pods (pods in the agent namespace labelled as the chart's node-agent
component) and names a restart when it sees one on a node:

- a pod being deleted: the DaemonSet replaces it;
- a pod not running yet: Pending, or a container waiting to be created, initialising or pulling
  its image (even one that failed to pull: an edge link drops, and the kubelet tries again);
- no pod while the agent pods carry more than one controller revision: a rollout is under way
  and this node is between its old pod and its new one.

Not a restart, so judged on the Lease alone as before: a container in CrashLoopBackOff or one
that cannot be created, a Failed pod (it fails, it does not restart); a Running pod whose agent
does not renew (it is stuck, or its node is gone); no pod and one revision (the agent was
removed from the node). A failing pod on the node outweighs every sign of a restart.

A restart only holds back a dead verdict for a bounded time (``LivenessConfig.rollout_grace_s``).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from egpu_api import keys

#: Container waiting reasons of an agent that fails rather than starts: the kubelet will not get
#: it running by waiting longer (a bad image name, a bad config, a process that keeps exiting).
FAILING_REASONS = frozenset(
    {"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "InvalidImageName", "RunContainerError"}
)


@dataclass(frozen=True)
class AgentPod:
    """The little the liveness judgment needs of one agent pod."""

    name: str
    node: str | None  # spec.nodeName; None while not yet bound
    revision: str | None  # the DaemonSet's controller-revision-hash label
    deleting: bool
    phase: str
    waiting: tuple[str, ...] = ()  # reasons of the containers (init ones too) that are waiting


def agent_pod(pod: Mapping[str, Any]) -> AgentPod:
    """The slim view of one pod object (as the API returns it)."""
    metadata, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    waiting = tuple(
        str(reason)
        for container in statuses
        if (reason := ((container.get("state") or {}).get("waiting") or {}).get("reason")) is not None
    )
    return AgentPod(
        name=str(metadata.get("name", "")),
        node=spec.get("nodeName") or None,
        revision=(metadata.get("labels") or {}).get(keys.CONTROLLER_REVISION_LABEL),
        deleting=metadata.get("deletionTimestamp") is not None,
        phase=str(status.get("phase") or "Pending"),
        waiting=waiting,
    )


def restarts(pods: Iterable[AgentPod], nodes: Iterable[str]) -> dict[str, str]:
    """For each of ``nodes`` whose agent pods show a restart, the observation that says so;
    nodes without such a sign are left out (see the module docstring)."""
    by_node: dict[str, list[AgentPod]] = {}
    revisions: set[str] = set()
    for pod in pods:
        if pod.revision is not None and not pod.deleting:
            revisions.add(pod.revision)
        if pod.node is not None:
            by_node.setdefault(pod.node, []).append(pod)
    found: dict[str, str] = {}
    for node in nodes:
        reason = _restart(by_node.get(node, []), rolling=len(revisions) > 1)
        if reason is not None:
            found[node] = reason
    return found


def _restart(pods: list[AgentPod], rolling: bool) -> str | None:
    if any(_failing(pod) for pod in pods):
        return None
    for pod in pods:
        if pod.deleting:
            return f"agent pod {pod.name} is being replaced"
    for pod in pods:
        if pod.phase == "Pending" or pod.waiting:
            what = f" ({', '.join(pod.waiting)})" if pod.waiting else ""
            return f"agent pod {pod.name} is starting{what}"
    if not pods and rolling:
        return "the agent DaemonSet is rolling out (its pods carry more than one revision) and this node has no pod yet"
    return None


def _failing(pod: AgentPod) -> bool:
    return not pod.deleting and (pod.phase == "Failed" or any(reason in FAILING_REASONS for reason in pod.waiting))
