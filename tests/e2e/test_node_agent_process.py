"""The agent as it runs in a DaemonSet: a process with NODE_NAME, /metrics, JSON logs, clean SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.helpers import NAMESPACE, extra_node, wait_for, wait_label

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_agent_process_labels_its_node_serves_metrics_and_stops_cleanly(
    kube: Kubectl, fleet: FleetProfile, tmp_path: Path
) -> None:
    kube.run("create", "namespace", NAMESPACE, check=False)
    extra = extra_node(kube, fleet, "x220-tesla-p4", "x220-process")
    profile = tmp_path / "fleet.yaml"
    profile.write_text(yaml.safe_dump(extra.model_dump(by_alias=True, exclude_none=True)))
    port = free_port()
    command = [sys.executable, "-m", "egpu_node_agent", "run", "--backend", "fake", "--fleet", str(profile),
               "--kubeconfig", str(kube.kubeconfig), "--namespace", NAMESPACE, "--poll-interval", "1",
               "--metrics-port", str(port)]  # fmt: skip
    agent = subprocess.Popen(command, env={**os.environ, "NODE_NAME": "x220-process"}, stderr=subprocess.PIPE, text=True)
    try:
        wait_label(kube, "x220-process", "pcie-bandwidth-mbps", "435", timeout_s=20)

        def scrape() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    body: str = response.read().decode()
            except OSError:
                return None
            return body if "egpu_gpu_power_limit_watts" in body else None

        metrics = wait_for(scrape, 10, "the agent's /metrics")
        assert 'node="x220-process"' in metrics
        assert "egpu_node_agent_label_publishes_total" in metrics
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=15)
        kube.run("delete", "node", "x220-process", check=False)
    assert agent.returncode == 0, stderr
    logs = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert any(entry["msg"] == "node agent started" and entry["node"] == "x220-process" for entry in logs)
    assert all({"ts", "level", "logger", "msg"} <= entry.keys() for entry in logs)
