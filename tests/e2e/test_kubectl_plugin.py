"""``kubectl egpu``, the plugin, against a live cluster: the fleet, placements, why not elsewhere, maintenance."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import placed_condition, ready_on
from tests.e2e.helpers import non_fleet_nodes, wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def plugin(kube: Kubectl, *args: str) -> subprocess.CompletedProcess[str]:
    """As kubectl runs a plugin: found on PATH, with KUBECONFIG in the environment."""
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "PATH": f"{kube.binary.parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "egpu_localcluster.plugin", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=60)


def test_the_plugin_explains_what_the_operator_decided(
    kube: Kubectl, fleet: FleetProfile, workspace: str, operator: OperatorProcess
) -> None:
    others = non_fleet_nodes(kube, fleet)  # the kind tier's own nodes: no GPU, no labels
    kube.run("apply", "-n", workspace, "-f", str(REPO / "examples"))
    nodes = wait_for(lambda: ready_on(kube, workspace, "llm-18gb", 2), 60, "llm-18gb: 2 replicas Ready")
    wait_for(lambda: placed_condition(kube, workspace, "llm-140gb"), 30, "llm-140gb reconciled")

    fleet = plugin(kube, "fleet")
    assert fleet.returncode == 0, fleet.stderr
    assert "switch-4x-a5000" in fleet.stdout
    assert "Gen3 x1" in fleet.stdout

    placed = plugin(kube, "placements", "-n", workspace)
    assert placed.returncode == 0, placed.stderr
    assert all(node in placed.stdout for node in nodes)

    why = plugin(kube, "why", "llm-140gb", "-n", workspace)
    assert why.returncode == 0, why.stderr
    assert f"{workspace}/llm-140gb: Placed=False NoAdequateNode" in why.stdout
    verdicts = [line for line in why.stdout.splitlines()[3:] if line.strip()]  # after: Placed, needs, header
    fleet_verdicts = [line for line in verdicts if line.split()[0] not in others]
    assert len(fleet_verdicts) == 8
    assert all(line.endswith("VRAM < 141 GiB") for line in fleet_verdicts)
    assert len(verdicts) == 8 + len(others)

    assert plugin(kube, "maintenance").returncode == 0
    missing = plugin(kube, "why", "no-such", "-n", workspace)
    assert missing.returncode == 1
    assert missing.stderr.startswith("kubectl egpu: ")
    assert "Traceback" not in missing.stderr
