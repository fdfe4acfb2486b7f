"""The operator's gather for agent liveness: its agent-pod index turns a silent agent that is
restarting into unknown, logged once and counted, while a silent agent without a pod is dead."""

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from egpu_api import keys
from egpu_operator import reads
from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube
from egpu_operator.liveness import Liveness
from egpu_operator.metrics import REGISTRY
from egpu_operator.runtime import Operator

NODES = ["n0", "n1", "n2", "n3"]


def agent_node(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {keys.LABEL_SCHEMA_LABEL: "v1"}}}


def silent_fleet(agent_pods: list[dict[str, Any]]) -> Operator:
    """n0 and n1 silent for 100 s of clear sight (past TTL + grace), n2 and n3 renewing."""
    running = Operator(OperatorConfig(), FakeKube(), watch_client=None)
    running.informers[reads.AGENT_PODS].replace(agent_pods)
    now, wall = time.monotonic(), datetime.now(UTC)
    for ago in range(100, -1, -2):
        running.cache.visibility.probe_succeeded(now - ago)
    for node in NODES:
        running.cache.heartbeats.observe(node, wall - timedelta(seconds=100), now - 100)
    for node in ("n2", "n3"):
        running.cache.heartbeats.observe(node, wall, now - 1)
    return running


def test_a_silent_agent_whose_pod_is_starting_is_unknown_and_one_without_is_dead(caplog: pytest.LogCaptureFixture) -> None:
    starting = {
        "metadata": {"name": "agent-n0-new", "namespace": "egpu-system", "labels": {keys.CONTROLLER_REVISION_LABEL: "new"}},
        "spec": {"nodeName": "n0"},
        "status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]},
    }
    running = silent_fleet([starting])
    with caplog.at_level(logging.INFO, logger="egpu_operator.handlers"):
        verdicts = running._verdicts({node: agent_node(node) for node in NODES})
        running._verdicts({node: agent_node(node) for node in NODES})
    assert dict(verdicts.by_node) == {"n0": Liveness.UNKNOWN, "n1": Liveness.DEAD, "n2": Liveness.ALIVE, "n3": Liveness.ALIVE}
    assert dict(verdicts.restarting) == {"n0": "agent pod agent-n0-new is starting (ContainerCreating)"}
    held = [record for record in caplog.records if record.getMessage() == "node agent silent but restarting: not judged dead"]
    assert [getattr(record, "node", None) for record in held] == ["n0"], "logged once per node, not per judgment"
    assert REGISTRY.get_sample_value("egpu_operator_node_agents_restarting") == 1


def test_without_agent_pods_the_lease_alone_decides() -> None:
    verdicts = silent_fleet([])._verdicts({node: agent_node(node) for node in NODES})
    assert (verdicts["n0"], verdicts["n1"], dict(verdicts.restarting)) == (Liveness.DEAD, Liveness.DEAD, {})
    assert REGISTRY.get_sample_value("egpu_operator_node_agents_restarting") == 0
