"""A power limit someone else sets under a running agent is left alone and reported; the agent takes the
GPU back when the request changes; a stopping agent restores only the defaults it changed."""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent import cli
from egpu_node_agent.agent import AgentConfig, NodeAgent
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.publisher import NodePublisher
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client
from tests.e2e.helpers import NAMESPACE, extra_node, node, wait_for

pytestmark = pytest.mark.e2e
REQUEST, STATUS = "egpu-operator.io/power-limit-request", "egpu-operator.io/power-limit-status"
NODE = "switch-4x-a5000"  # four A5000s: default 230 W, 100-230 W


def gpu_uuids(kube: Kubectl, name: str) -> list[str]:
    wait_for(lambda: True if "egpu-operator.io/gpus" in node(kube, name)["metadata"]["annotations"] else None, 10, "gpus")
    return [gpu["uuid"] for gpu in json.loads(node(kube, name)["metadata"]["annotations"]["egpu-operator.io/gpus"])]


def request(kube: Kubectl, name: str, limits: dict[str, int] | None) -> None:
    value = f"{REQUEST}={json.dumps(limits)}" if limits is not None else f"{REQUEST}-"
    kube.run("annotate", "node", name, value, "--overwrite")


def status_of(kube: Kubectl, name: str, uuid: str) -> dict[str, Any] | None:
    entry: dict[str, Any] | None = json.loads(node(kube, name)["metadata"]["annotations"].get(STATUS, "{}")).get(uuid)
    return entry


def events(kube: Kubectl, name: str, reason: str) -> list[dict[str, Any]]:
    found = kube.get_json("events", "-n", "default", "--field-selector", f"involvedObject.name={name},reason={reason}")
    items: list[dict[str, Any]] = found["items"]
    return items


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    for family in registry.collect():
        for each in family.samples:
            if each.name == name and all(each.labels.get(key) == value for key, value in labels.items()):
                return float(each.value)
    return None


def polls(simulator: FleetSimulator, name: str) -> float:
    return sample(simulator.metrics.registry, "egpu_node_agent_poll_seconds_count", node=name) or 0.0


def test_an_external_limit_is_left_alone_and_reported_until_the_request_changes(kube: Kubectl, simulator: FleetSimulator) -> None:
    host = simulator.hosts[NODE]
    index = 2  # a GPU no other test of this node requests
    uuid = gpu_uuids(kube, NODE)[index]
    request(kube, NODE, {uuid: 180})
    try:
        wait_for(lambda: True if (status_of(kube, NODE, uuid) or {}).get("appliedWatts") == 180 else None, 15, "180 W")
        assert (uuid, 180_000) in host.nvml.power_limit_sets
        assert status_of(kube, NODE, uuid) == {"requestedWatts": 180, "targetWatts": 180, "appliedWatts": 180,
                                               "clamped": False, "dryRun": False, "error": None, "state": "Managed",
                                               "message": None, "setByAgentWatts": 180}  # fmt: skip

        host.set_power_limit_externally(index, 200)  # an administrator's nvidia-smi -pl 200
        sets_before = len(host.nvml.power_limit_sets)
        reported = wait_for(
            lambda: s if (s := status_of(kube, NODE, uuid) or {}).get("state") == "ExternallyManaged" else None,
            15, "state ExternallyManaged",
        )  # fmt: skip
        assert reported["appliedWatts"] == 200
        assert reported["setByAgentWatts"] is None
        assert "NVML enforces 200 W, not the 180 W the agent set" in reported["message"]
        [event] = wait_for(lambda: events(kube, NODE, "PowerLimitExternallyManaged") or None, 15, "the Event")
        assert event["type"] == "Warning"
        assert uuid in event["message"]
        assert sample(simulator.metrics.registry, "egpu_gpu_power_limit_external", UUID=uuid) == 1.0

        # The agent keeps polling (five more polls, each woken early by a node change) and never sets it back.
        seen = polls(simulator, NODE)
        for round_ in range(5):
            kube.run("annotate", "node", NODE, f"example.com/nudge={round_}", "--overwrite")
            wait_for(lambda: True if polls(simulator, NODE) > seen + round_ else None, 15, "another poll")  # noqa: B023
        assert host.nvml.power_limit_sets[sets_before:] == []
        assert host.nvml.gpus[index].power_mw == (200_000, 230_000, 100_000, 230_000)
        assert len(events(kube, NODE, "PowerLimitExternallyManaged")) == 1, "reported once, not per poll"

        request(kube, NODE, {uuid: 150})  # a new request from the operator: the agent takes the GPU back
        wait_for(lambda: True if (status_of(kube, NODE, uuid) or {}).get("appliedWatts") == 150 else None, 15, "150 W")
        assert host.nvml.power_limit_sets[sets_before:] == [(uuid, 150_000)]
        assert (status_of(kube, NODE, uuid) or {})["state"] == "Managed"
        assert sample(simulator.metrics.registry, "egpu_gpu_power_limit_external", UUID=uuid) == 0.0
        assert wait_for(lambda: events(kube, NODE, "PowerLimitManaged") or None, 15, "the Event")[0]["type"] == "Normal"
    finally:
        request(kube, NODE, None)
        kube.run("annotate", "node", NODE, "example.com/nudge-", check=False)
    # The agent set 150 W itself, so a withdrawn request puts back the default.
    wait_for(lambda: True if status_of(kube, NODE, uuid) is None else None, 15, "the status entry removed")
    assert host.nvml.power_limit_sets[-1] == (uuid, 230_000)


@pytest.fixture
def stopping_agent(kube: Kubectl, fleet: FleetProfile) -> Iterator[tuple[NodeAgent, FakeGpuHost, list[str]]]:
    """An extra four-A5000 node whose agent the test polls by hand, then stops."""
    extra = extra_node(kube, fleet, NODE, "a5000-stopping")
    with tempfile.TemporaryDirectory() as sysfs:
        host = FakeGpuHost(extra.nodes[0], Path(sysfs))
        publisher = NodePublisher(api_client(kube.kubeconfig), "a5000-stopping", NAMESPACE)
        agent = NodeAgent(AgentConfig("a5000-stopping"), NvmlBackend(host.nvml, host.sysfs_root), publisher, AgentMetrics())
        agent.poll()
        yield agent, host, gpu_uuids(kube, "a5000-stopping")
        publisher.close()
    kube.run("delete", "node", "a5000-stopping")
    kube.run("delete", "events", "-n", "default", "--field-selector", "involvedObject.name=a5000-stopping", check=False)


def poll_until(agent: NodeAgent, kube: Kubectl, done: Any, what: str) -> Any:
    """Poll the agent (as its loop would) until ``done()`` holds against the API server."""

    def step() -> Any:
        agent.poll()
        return done()

    return wait_for(step, 15, what)


def test_a_stopping_agent_restores_only_the_defaults_it_changed_and_says_what_it_left(
    kube: Kubectl, stopping_agent: tuple[NodeAgent, FakeGpuHost, list[str]]
) -> None:
    agent, host, (ours, theirs, admins, _) = stopping_agent
    host.set_power_limit_externally(2, 190)  # set by an administrator before any request: never the agent's
    request(kube, "a5000-stopping", {ours: 180, theirs: 150})
    poll_until(agent, kube, lambda: True if (status_of(kube, "a5000-stopping", theirs) or {}).get("setByAgentWatts") == 150
               else None, "both limits applied")  # fmt: skip
    host.set_power_limit_externally(1, 200)  # a DCGM policy takes the second GPU
    poll_until(agent, kube, lambda: True if (status_of(kube, "a5000-stopping", theirs) or {}).get("state")
               == "ExternallyManaged" else None, "the second GPU handed over")  # fmt: skip
    sets_before = len(host.nvml.power_limit_sets)

    # The agent is told to stop managing power: its DaemonSet is gone (no DaemonSet of that name exists).
    args = argparse.Namespace(read_only=False, restore_power_on_exit="uninstall", daemonset_name="egpu-node-agent-gone",
                              node_name="a5000-stopping")  # fmt: skip
    cli.restore_on_exit(args, agent, agent.publisher)

    assert host.nvml.power_limit_sets[sets_before:] == [(ours, 230_000)], "only the agent's own limit went back"
    assert [gpu.power_mw[0] if gpu.power_mw else None for gpu in host.nvml.gpus] == [230_000, 200_000, 190_000, 230_000]
    left = status_of(kube, "a5000-stopping", theirs) or {}
    assert "left at 200 W (default 230 W): someone else set that limit" in left["message"]
    assert status_of(kube, "a5000-stopping", ours) is None
    assert status_of(kube, "a5000-stopping", admins) is None
    [event] = events(kube, "a5000-stopping", "PowerLimitsRestored")
    assert event["message"].startswith("the agent's DaemonSet is gone (uninstalled): restored the default limit of 1 GPU(s)")
    assert f"{ours} to 230 W" in event["message"]
    assert f"{theirs} left at 200 W" in event["message"]
    assert admins not in event["message"]


def test_a_restarting_agent_keeps_its_limits_for_the_next_one(
    kube: Kubectl, stopping_agent: tuple[NodeAgent, FakeGpuHost, list[str]]
) -> None:
    agent, host, (ours, *_) = stopping_agent
    request(kube, "a5000-stopping", {ours: 180})
    poll_until(agent, kube, lambda: True if (status_of(kube, "a5000-stopping", ours) or {}).get("setByAgentWatts") == 180
               else None, "the limit applied")  # fmt: skip
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "egpu-node-agent-restarting", "namespace": NAMESPACE},
        "spec": {"selector": {"matchLabels": {"app": "restarting"}}, "template": {
            "metadata": {"labels": {"app": "restarting"}},
            "spec": {"nodeSelector": {"example.com/none": "true"},
                     "containers": [{"name": "node-agent", "image": "example/agent:1", "args": ["run"]}]}}},
    }  # fmt: skip
    kube.apply(daemonset)
    try:
        sets_before = len(host.nvml.power_limit_sets)
        args = argparse.Namespace(read_only=False, restore_power_on_exit="uninstall",
                                  daemonset_name="egpu-node-agent-restarting", node_name="a5000-stopping")  # fmt: skip
        cli.restore_on_exit(args, agent, agent.publisher)
        assert host.nvml.power_limit_sets[sets_before:] == [], "a rolling update must not lift the cap"
        assert events(kube, "a5000-stopping", "PowerLimitsRestored") == []

        # The upgrade turned power actuation off: the new pods run read-only, so this one gives its limits back.
        daemonset["spec"]["template"]["spec"]["containers"][0]["args"] = ["run", "--read-only"]
        kube.apply(daemonset)
        cli.restore_on_exit(args, agent, agent.publisher)
        assert host.nvml.power_limit_sets[sets_before:] == [(ours, 230_000)]
        [event] = events(kube, "a5000-stopping", "PowerLimitsRestored")
        assert "now runs it read-only (agent.powerActuation.enabled=false)" in event["message"]
    finally:
        kube.run("delete", "daemonset", "-n", NAMESPACE, "egpu-node-agent-restarting", check=False)


def test_a_withdrawn_request_leaves_a_limit_someone_else_set_and_says_so(
    kube: Kubectl, stopping_agent: tuple[NodeAgent, FakeGpuHost, list[str]]
) -> None:
    agent, host, (ours, *_) = stopping_agent
    request(kube, "a5000-stopping", {ours: 180})
    poll_until(agent, kube, lambda: True if (status_of(kube, "a5000-stopping", ours) or {}).get("setByAgentWatts") == 180
               else None, "the limit applied")  # fmt: skip
    host.set_power_limit_externally(0, 200)
    poll_until(agent, kube, lambda: True if (status_of(kube, "a5000-stopping", ours) or {}).get("state")
               == "ExternallyManaged" else None, "handed over")  # fmt: skip
    sets_before = len(host.nvml.power_limit_sets)

    request(kube, "a5000-stopping", None)
    poll_until(agent, kube, lambda: events(kube, "a5000-stopping", "PowerLimitLeft") or None, "a PowerLimitLeft Event")
    [event] = events(kube, "a5000-stopping", "PowerLimitLeft")
    assert event["message"] == (
        f"GPU {ours}: left at 200 W (default 230 W): someone else set that limit, so it is theirs to change"
    )
    assert host.nvml.power_limit_sets[sets_before:] == []
    assert status_of(kube, "a5000-stopping", ours) is None


def test_the_agent_process_restores_its_limit_on_sigterm(kube: Kubectl, fleet: FleetProfile, tmp_path: Path) -> None:
    """As in the DaemonSet: a process, its own signal handling, SIGTERM; the log line, the Event, the annotation."""
    extra = extra_node(kube, fleet, "x220-tesla-p4", "x220-restoring")
    profile = tmp_path / "fleet.yaml"
    profile.write_text(yaml.safe_dump(extra.model_dump(by_alias=True, exclude_none=True)))
    command = [sys.executable, "-m", "egpu_node_agent", "run", "--backend", "fake", "--fleet", str(profile),
               "--kubeconfig", str(kube.kubeconfig), "--namespace", NAMESPACE, "--poll-interval", "600",
               "--metrics-port", "0", "--restore-power-on-exit", "always"]  # fmt: skip
    agent = subprocess.Popen(command, env={**os.environ, "NODE_NAME": "x220-restoring"}, stderr=subprocess.PIPE, text=True)
    try:
        (uuid,) = gpu_uuids(kube, "x220-restoring")
        request(kube, "x220-restoring", {uuid: 70})  # the node change wakes the agent
        wait_for(lambda: True if (status_of(kube, "x220-restoring", uuid) or {}).get("setByAgentWatts") == 70 else None,
                 15, "70 W applied")  # fmt: skip
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=20)
    try:
        assert agent.returncode == 0, stderr
        logs = [json.loads(line) for line in stderr.splitlines() if line.strip()]
        [restored] = [entry for entry in logs if entry["msg"] == "power limit restored"]
        assert (restored["gpu"], restored["watts"]) == (uuid, 75)
        assert restored["why"] == "the agent stopped (--restore-power-on-exit=always)"
        [event] = events(kube, "x220-restoring", "PowerLimitsRestored")
        assert event["message"] == f"the agent stopped (--restore-power-on-exit=always): restored the default limit of " \
                                   f"1 GPU(s); {uuid} to 75 W; left none"  # fmt: skip
        assert status_of(kube, "x220-restoring", uuid) is None
    finally:
        kube.run("delete", "node", "x220-restoring", check=False)
        kube.run("delete", "events", "-n", "default", "--field-selector", "involvedObject.name=x220-restoring", check=False)
