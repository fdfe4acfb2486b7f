import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from egpu_api import keys
from egpu_api.fleet import load_fleet
from egpu_api.gpus import dump_gpus
from egpu_localcluster.nodes import node_manifest
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.labels import gpu_statuses, node_labels
from egpu_node_agent.nvml import NvmlBackend
from egpu_operator.facts import node_facts
from egpu_operator.placement import NodeFacts

NOW = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)


def fleet_nodes() -> dict[str, dict[str, Any]]:
    """Every default-fleet node as a Node object carrying the labels the real agent computes."""
    nodes = {}
    for entry in load_fleet().nodes:
        with tempfile.TemporaryDirectory() as sysfs:
            host = FakeGpuHost(entry, Path(sysfs))
            gpus = gpu_statuses(NvmlBackend(host.nvml, host.sysfs_root).read())
        nodes[entry.name] = {
            "metadata": {
                "name": entry.name,
                "labels": {"kubernetes.io/arch": entry.host.arch, **node_labels(gpus)},
                "annotations": {keys.GPUS_ANNOTATION: dump_gpus(gpus)},
            },
            "spec": {},
            # CPU, memory and pod slots as the simulated fleet advertises them (whole-pod fit reads them).
            "status": {"allocatable": {**node_manifest(entry)["status"]["allocatable"], keys.GPU_RESOURCE: str(entry.gpu_units)}},
        }
    return nodes


NODES = fleet_nodes()


@pytest.fixture
def nodes() -> dict[str, dict[str, Any]]:
    return json.loads(json.dumps(NODES))  # a private copy each test may change


def facts(nodes: dict[str, dict[str, Any]]) -> list[NodeFacts]:
    """Every node with a live agent."""
    return [node_facts(node) for node in nodes.values()]
