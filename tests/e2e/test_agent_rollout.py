"""A rollout of a new agent image, one node at a time, where each new pod takes longer than
TTL + grace (60 s) to start: an image pulled over a slow edge link. The agent's Lease stops
changing for that long on each node, yet no replica moves, because the agent's own pod says it
is restarting. Before the fix each node's agent counted as dead and its replicas were surged
away and evicted, a full model reload each. (A stopped agent with no such pod still moves its
replica: test_fault_one_agent_stopped.py.)

The local tier runs the agents as threads (``FleetSimulator``) beside KWOK nodes, not as
DaemonSet pods, so the test plays both halves of the DaemonSet controller's rollout: it stops
a node's agent and replaces that node's agent pod (revision ``old``) by one of revision ``new``
that stays Pending (KWOK delays its readiness by the load-time annotation), then after the gap
starts the agent again and lets the new pod run.
"""

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from egpu_api import keys
from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.ledger import PodLedger
from egpu_localcluster.operator_process import OperatorProcess
from egpu_node_agent.simulator import FleetSimulator
from tests.e2e.faults import SERVICE, assert_nothing_lost, start_service
from tests.e2e.helpers import NAMESPACE, wait_for

pytestmark = pytest.mark.e2e
#: Longer than the operator's TTL + grace (40 + 20 s), with its 3 s resync to act on a verdict.
PULL_S = 80
#: Agent pods of this test carry this label too, so the cleanup removes exactly them.
RUN_LABEL = "egpu-e2e/agent-rollout"


def agent_pod(name: str, node: str, revision: str, run: str, *, pulling: bool = False) -> dict[str, Any]:
    """An agent pod as the DaemonSet controller makes it: bound to its node, labelled with the
    chart's component and the template revision. ``pulling``: KWOK keeps it Pending for hours."""
    annotations = {keys.ESTIMATED_LOAD_ANNOTATION: "100000"} if pulling else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {keys.COMPONENT_LABEL: keys.AGENT_COMPONENT, keys.CONTROLLER_REVISION_LABEL: revision, RUN_LABEL: run},
            "annotations": annotations,
        },
        "spec": {
            "nodeName": node,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "agent", "image": f"egpu-operator/node-agent:{revision}"}],
        },
    }


def phase(kube: Kubectl, name: str) -> str | None:
    found = kube.run("get", "pod", "-n", NAMESPACE, name, "-o", "jsonpath={.status.phase}", check=False)
    return found.stdout or None


def remove(kube: Kubectl, name: str) -> None:
    kube.run("delete", "pod", "-n", NAMESPACE, name, "--grace-period=0", "--force", "--wait=true", check=False)


@pytest.fixture
def agent_pods(kube: Kubectl, local_cluster: LocalCluster | None) -> Iterator[str]:
    """Old-revision agent pods Running on every node; afterwards every pod of this run is gone."""
    if local_cluster is None:
        pytest.skip("plays the agent DaemonSet with pods on the local tier's KWOK nodes; a real cluster runs the chart's")
    run = uuid.uuid4().hex[:8]
    try:
        yield run
    finally:
        kube.run("delete", "pods", "-n", NAMESPACE, "-l", f"{RUN_LABEL}={run}", "--grace-period=0", "--force", check=False)


@pytest.mark.timeout(900)  # five nodes at PULL_S each, beyond the suite's 600 s
def test_an_agent_rollout_slower_than_ttl_and_grace_moves_no_replica(
    kube: Kubectl, workspace: str, operator: OperatorProcess, simulator: FleetSimulator, agent_pods: str
) -> None:
    for node in simulator.agents:
        kube.apply(agent_pod(f"egpu-node-agent-{node}-old", node, "old", agent_pods))
    for node in simulator.agents:
        old = f"egpu-node-agent-{node}-old"
        wait_for(lambda old=old: phase(kube, old) == "Running" or None, 30, f"{old} Running")  # type: ignore[misc]
    nodes = start_service(kube, workspace)
    rolled = list(dict.fromkeys(node for placed in nodes.values() for node in placed))  # every node with a replica
    started = time.monotonic()
    with PodLedger(kube.kubeconfig, workspace, SERVICE) as ledger:
        before = set(ledger.pods)
        for node in rolled:
            simulator.stop_agents([node])  # SIGTERM: the old agent exits, its Lease stops changing
            try:
                remove(kube, f"egpu-node-agent-{node}-old")
                kube.apply(agent_pod(f"egpu-node-agent-{node}-pulling", node, "new", agent_pods, pulling=True))
                time.sleep(PULL_S)  # the image pull itself: nothing to poll for while it lasts
                assert phase(kube, f"egpu-node-agent-{node}-pulling") == "Pending", "the new agent pod must still be pulling"
            finally:
                simulator.start_agents([node])
            # The image is in: the new agent runs (KWOK cannot be told to start a Pending pod late).
            remove(kube, f"egpu-node-agent-{node}-pulling")
            kube.apply(agent_pod(f"egpu-node-agent-{node}-new", node, "new", agent_pods))
        rolled_s = time.monotonic() - started
    fewest = ", ".join(f"{name} {ledger.minimum.get(name)}/{count}" for name, (count, _) in SERVICE.items())
    print(f"agent rollout over {len(rolled)} nodes, {PULL_S} s without a renewal each, {rolled_s:.0f} s in all: "
          f"fewest Ready {fewest}; pods deleted {len(ledger.deleted)}")  # fmt: skip
    assert set(ledger.pods) == before, f"replicas were surged elsewhere during the rollout: {set(ledger.pods) - before}"
    assert_nothing_lost(ledger)
    held = {
        entry.get("node")
        for entry in log_entries(operator)
        if entry.get("msg") == "node agent silent but restarting: not judged dead"
    }
    assert set(rolled) <= held, f"nodes whose silent agent was never held back as restarting: {set(rolled) - held}"


def log_entries(operator: OperatorProcess) -> list[dict[str, Any]]:
    entries = []
    for line in operator.log.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # kopf's own start-up lines before logging is configured
    return entries
