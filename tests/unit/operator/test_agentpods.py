"""What the agent's own pods say: a restart (rollout, image pull) or nothing beyond the Lease."""

from typing import Any

import pytest

from egpu_operator.agentpods import AgentPod, agent_pod, restarts


def pod(
    name: str = "agent-a", node: str | None = "n0", revision: str | None = "old", *, deleting: bool = False,
    phase: str = "Running", waiting: tuple[str, ...] = (),
) -> AgentPod:  # fmt: skip
    return AgentPod(name, node, revision, deleting, phase, waiting)


def running(node: str, revision: str = "old") -> AgentPod:
    return pod(f"agent-{node}", node, revision)


def starting(reason: str) -> AgentPod:
    return pod(phase="Pending", waiting=(reason,))


OTHERS_OLD = [running("n1"), running("n2")]
OTHERS_MIXED = [running("n1", "new"), running("n2")]


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        # a restart: the node's agent pod replaced, or its successor not running yet
        ([pod(deleting=True), *OTHERS_OLD], "agent pod agent-a is being replaced"),
        ([pod(phase="Pending", revision="new"), *OTHERS_OLD], "agent pod agent-a is starting"),
        ([starting("ContainerCreating"), *OTHERS_OLD], "agent pod agent-a is starting (ContainerCreating)"),
        ([starting("ImagePullBackOff"), *OTHERS_OLD], "agent pod agent-a is starting (ImagePullBackOff)"),
        ([starting("PodInitializing"), *OTHERS_OLD], "agent pod agent-a is starting (PodInitializing)"),
        ([pod("old-a", deleting=True), pod("new-a", phase="Pending", revision="new"), *OTHERS_OLD],
         "agent pod old-a is being replaced"),
        (OTHERS_MIXED, "the agent DaemonSet is rolling out (its pods carry more than one revision) and this node has no pod yet"),
        # not a restart: failing, stuck, removed, or nothing to see (the Lease alone decides)
        ([pod(waiting=("CrashLoopBackOff",)), *OTHERS_MIXED], None),
        ([starting("CreateContainerConfigError"), *OTHERS_OLD], None),
        ([starting("InvalidImageName"), *OTHERS_OLD], None),
        ([pod(phase="Failed"), *OTHERS_OLD], None),
        ([pod("old-a", deleting=True), pod("new-a", waiting=("CrashLoopBackOff",), revision="new"), *OTHERS_OLD], None),
        ([pod(), *OTHERS_MIXED], None),  # Running and not renewing: stuck, or its node is gone
        (OTHERS_OLD, None),  # no pod, one revision: the agent was removed from the node
        ([], None),  # no agent pods at all (agents not run as pods, or none visible)
        ([pod(node=None, phase="Pending"), *OTHERS_OLD], None),  # not bound to any node yet
        ([pod(node="n9", phase="Pending"), *OTHERS_OLD], None),  # another node's pod
    ],
    ids=[
        "old-pod-terminating", "new-pod-pending", "container-creating", "image-pull-backoff", "init-containers",
        "old-terminating-new-pending", "no-pod-mid-rollout",
        "crash-looping", "config-error", "invalid-image", "pod-failed", "new-pod-crash-looping-beside-old",
        "running-not-renewing", "no-pod-no-rollout", "no-agent-pods", "unbound-pod", "other-nodes-pod",
    ],
)  # fmt: skip
def test_what_the_agent_pods_say_of_node_n0(pods: list[AgentPod], expected: str | None) -> None:
    assert restarts(pods, ["n0"]).get("n0") == expected


def test_only_the_asked_nodes_are_judged() -> None:
    pods = [pod("a0", "n0", phase="Pending"), pod("a1", "n1", phase="Pending")]
    assert restarts(pods, ["n1", "n5"]) == {"n1": "agent pod a1 is starting"}


def test_a_terminating_old_revision_does_not_make_a_rollout_alone() -> None:
    """Revisions of pods being deleted do not count: the last old pod going is not a rollout of n1."""
    pods = [pod("a0", "n0", "old", deleting=True), running("n2", "new")]
    assert restarts(pods, ["n1"]) == {}


POD_OBJECT: dict[str, Any] = {
    "metadata": {"name": "egpu-node-agent-x7", "labels": {"controller-revision-hash": "6d9f"}, "deletionTimestamp": None},
    "spec": {"nodeName": "edge-1"},
    "status": {
        "phase": "Pending",
        "initContainerStatuses": [{"state": {"terminated": {"reason": "Completed"}}}],
        "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}],
    },
}


def test_the_slim_view_of_a_pod_object() -> None:
    assert agent_pod(POD_OBJECT) == AgentPod("egpu-node-agent-x7", "edge-1", "6d9f", False, "Pending", ("ContainerCreating",))


def test_the_slim_view_of_a_fresh_pod_without_status() -> None:
    fresh = {"metadata": {"name": "p", "deletionTimestamp": "2026-12-04T17:00:00Z"}, "spec": {}}
    assert agent_pod(fresh) == AgentPod("p", None, None, True, "Pending", ())
