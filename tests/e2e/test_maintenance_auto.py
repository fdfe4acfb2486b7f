"""Opt-in: the operator files a GPUMaintenance itself when a node agent reports a lost GPU."""

from collections.abc import Iterator
from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.simulator import FleetSimulator
from tests.e2e import maintenances as gm
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, ready_on
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def auto_operator(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    operator.stop()
    operator.start("--auto-maintenance")
    yield operator
    operator.stop()
    operator.start()


def test_a_lost_gpu_files_a_maintenance(
    kube: Kubectl, workspace: str, maintenances: None, auto_operator: OperatorProcess, simulator: FleetSimulator
) -> None:
    def filed_for(node_name: str) -> dict[str, Any] | None:
        items = kube.get_json("gpumaintenances", "-l", "egpu-operator.io/auto-maintenance=true")["items"]
        return next((item for item in items if item["spec"]["nodeName"] == node_name), None)

    # Before any InferenceDeployment exists: the ExpressCard P4 falls off the bus.
    p4 = simulator.hosts["x220-tesla-p4"]
    p4.lose_gpu(0)
    try:
        first = wait_for(lambda: filed_for("x220-tesla-p4"), 60, "an automatic GPUMaintenance for the ThinkPad")
        gm.wait_phase(kube, first["metadata"]["name"], "Ready")
    finally:
        p4.recover_gpu(0)
    gm.complete(kube, first["metadata"]["name"])

    apply(kube, workspace, deployment("watched", "6G", 20))
    assert wait_for(lambda: ready_on(kube, workspace, "watched", 1), 60, "watched: Ready") == ["minipc-rtx4070ti"]

    host = simulator.hosts["minipc-rtx4070ti"]
    host.lose_gpu(0)  # Xid 79: fallen off the bus
    try:
        maintenance = wait_for(lambda: filed_for("minipc-rtx4070ti"), 60, "an automatic GPUMaintenance for the mini-PC")
        spec = maintenance["spec"]
        assert spec["nodeName"] == "minipc-rtx4070ti"
        assert spec["reason"].startswith("automatic: GPU lost")
        name = maintenance["metadata"]["name"]
        gm.wait_phase(kube, name, "Ready")
        assert ready_on(kube, workspace, "watched", 1) != ["minipc-rtx4070ti"]
        assert len(kube.get_json("gpumaintenances")["items"]) == 2, "filed once per problem"
    finally:
        host.recover_gpu(0)
