"""Power limits requested through the node annotation: applied, clamped, re-applied, restored, refused."""

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.agent import AgentConfig, NodeAgent
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.publisher import NodePublisher
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client
from tests.e2e.helpers import NAMESPACE, extra_node, labels, node, wait_for, wait_label

pytestmark = pytest.mark.e2e
REQUEST, STATUS = "egpu-operator.io/power-limit-request", "egpu-operator.io/power-limit-status"


def uuids(kube: Kubectl, name: str) -> list[str]:
    wait_for(lambda: True if "egpu-operator.io/gpus" in node(kube, name)["metadata"]["annotations"] else None, 10, "gpus")
    return [gpu["uuid"] for gpu in json.loads(node(kube, name)["metadata"]["annotations"]["egpu-operator.io/gpus"])]


def request(kube: Kubectl, name: str, limits: dict[str, int] | None) -> None:
    value = f"{REQUEST}={json.dumps(limits)}" if limits is not None else f"{REQUEST}-"
    kube.run("annotate", "node", name, value, "--overwrite")


def status_of(kube: Kubectl, name: str) -> dict[str, Any]:
    return json.loads(node(kube, name)["metadata"]["annotations"].get(STATUS, "{}"))


def test_request_is_clamped_applied_reapplied_after_reload_and_restored(kube: Kubectl, simulator: FleetSimulator) -> None:
    name = "switch-4x-a5000"
    first, second = uuids(kube, name)[:2]
    request(kube, name, {first: 180, second: 500})  # 500 W is above the A5000's 230 W maximum
    try:
        wait_label(kube, name, "power-limit-watts", "180")
        status = wait_for(lambda: s if (s := status_of(kube, name)).get(first, {}).get("appliedWatts") == 180 else None,
                          10, "status of the first GPU")  # fmt: skip
        assert status[first] == {"requestedWatts": 180, "targetWatts": 180, "appliedWatts": 180, "clamped": False,
                                 "dryRun": False, "error": None, "state": "Managed", "message": None,
                                 "setByAgentWatts": 180}  # fmt: skip
        assert status[second]["targetWatts"] == 230
        assert status[second]["clamped"] is True

        simulator.hosts[name].driver_reload()  # NVML limits do not survive a driver reload
        assert simulator.hosts[name].nvml.gpus[0].power_mw[0] == 230_000
        wait_for(lambda: True if simulator.hosts[name].nvml.gpus[0].power_mw[0] == 180_000 else None, 10, "re-apply")
    finally:
        request(kube, name, None)
    wait_label(kube, name, "power-limit-watts", "230")
    wait_for(lambda: True if STATUS not in node(kube, name)["metadata"]["annotations"] else None, 10, "status removed")
    assert simulator.hosts[name].nvml.gpus[0].power_mw[0] == 230_000


def test_refused_limit_is_reported_with_an_event_not_a_crash(kube: Kubectl, simulator: FleetSimulator) -> None:
    name = "x220-tesla-p4"
    host = simulator.hosts[name]
    host.fail_set_power(0)  # an agent without CAP_SYS_ADMIN
    (gpu,) = uuids(kube, name)
    request(kube, name, {gpu: 70})
    try:
        status = wait_for(lambda: s if (s := status_of(kube, name)).get(gpu, {}).get("error") else None, 10, "error")
        assert "CAP_SYS_ADMIN" in status[gpu]["error"]
        assert status[gpu]["appliedWatts"] == 75
        events = kube.get_json("events", "-n", "default", "--field-selector", f"involvedObject.name={name}")
        assert "PowerLimitFailed" in {event["reason"] for event in events["items"]}
        assert labels(kube, name)["egpu-operator.io/power-limit-watts"] == "75"
    finally:
        host.nvml.gpus[0].set_power_error = None
        request(kube, name, None)


def test_malformed_request_becomes_an_event(kube: Kubectl, simulator: FleetSimulator) -> None:
    name = "minipc-rtx4070ti"
    kube.run("annotate", "node", name, f"{REQUEST}=lots of watts", "--overwrite")
    try:

        def reported() -> bool | None:
            events = kube.get_json("events", "-n", "default", "--field-selector", f"involvedObject.name={name}")
            return True if "InvalidPowerRequest" in {e["reason"] for e in events["items"]} else None

        wait_for(reported, 10, "an InvalidPowerRequest event")
        assert labels(kube, name)["egpu-operator.io/health"] == "ok"  # the agent kept going
    finally:
        request(kube, name, None)


@pytest.fixture
def read_only_agent(kube: Kubectl, fleet: FleetProfile) -> Iterator[tuple[NodeAgent, FakeGpuHost]]:
    """An extra node (a second Pi 5) whose agent runs read-only, as on shared hardware."""
    extra = extra_node(kube, fleet, "pi5-rtx4090", "pi5-readonly")
    with tempfile.TemporaryDirectory() as sysfs:
        host = FakeGpuHost(extra.nodes[0], Path(sysfs))
        publisher = NodePublisher(api_client(kube.kubeconfig), "pi5-readonly", NAMESPACE)
        agent = NodeAgent(AgentConfig("pi5-readonly", read_only=True), NvmlBackend(host.nvml, host.sysfs_root),
                          publisher, AgentMetrics())  # fmt: skip
        yield agent, host
        publisher.close()
    kube.run("delete", "node", "pi5-readonly")


def test_read_only_agent_reports_a_dry_run_and_changes_nothing(
    kube: Kubectl, read_only_agent: tuple[NodeAgent, FakeGpuHost]
) -> None:
    agent, host = read_only_agent
    agent.poll()
    (gpu,) = uuids(kube, "pi5-readonly")
    request(kube, "pi5-readonly", {gpu: 300})
    wait_for(lambda: True if REQUEST in agent.publisher.annotations() else None, 10, "the agent to see the request")
    agent.poll()

    status = status_of(kube, "pi5-readonly")[gpu]
    assert (status["targetWatts"], status["appliedWatts"], status["dryRun"]) == (300, 450, True)
    assert host.nvml.gpus[0].power_mw[0] == 450_000
    assert labels(kube, "pi5-readonly")["egpu-operator.io/power-limit-watts"] == "450"
