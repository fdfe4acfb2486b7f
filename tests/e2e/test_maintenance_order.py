"""Maintenances respect an administrator's cordon and the cluster-wide parallel limit (1 by default)."""

import pytest

from egpu_localcluster.kubectl import Kubectl
from tests.e2e import maintenances as gm

pytestmark = pytest.mark.e2e


def test_an_admin_cordon_outlives_the_maintenance(kube: Kubectl, maintenances: None) -> None:
    kube.run("cordon", "vm-vgpu-a10")
    try:
        gm.create(kube, "a10-host-patch", "vm-vgpu-a10", reason="hypervisor patch")
        ready = gm.wait_phase(kube, "a10-host-patch", "Ready")
        assert ready["status"]["nodeWasCordoned"] is True
        assert gm.node_spec(kube, "vm-vgpu-a10") == (True, "a10-host-patch")
        done = gm.complete(kube, "a10-host-patch")
        assert gm.node_spec(kube, "vm-vgpu-a10") == (True, None), "the administrator's cordon stays"
        assert gm.condition(done, "Cordoned")["reason"] == "AdminCordon"
    finally:
        kube.run("uncordon", "vm-vgpu-a10")


def test_two_maintenances_run_one_after_the_other(kube: Kubectl, maintenances: None) -> None:
    gm.create(kube, "first", "laptop-rtx3060-tb", reason="Thunderbolt firmware")
    gm.wait_phase(kube, "first", "Ready")
    gm.create(kube, "second", "pi5-rtx4090", reason="dock PSU swap")
    waiting = gm.wait_condition(kube, "second", "Started", "WaitingForSlot")
    assert waiting["status"] == "False"
    assert "1 of at most 1 maintenance(s) in progress (first)" in waiting["message"]
    assert gm.get(kube, "second")["status"]["phase"] == "Pending"
    assert gm.node_spec(kube, "pi5-rtx4090") == (False, None), "not touched while it waits"

    gm.complete(kube, "first")
    gm.wait_phase(kube, "second", "Ready")
    assert gm.node_spec(kube, "pi5-rtx4090") == (True, "second")
    kube.run("delete", "gpumaintenance", "second", "--wait=true", "--timeout=30s")
    assert gm.node_spec(kube, "pi5-rtx4090") == (False, None), "deleting a maintenance returns the node"
