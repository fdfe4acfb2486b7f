"""The agent as it runs in a DaemonSet: a process with NODE_NAME, /metrics, JSON logs, clean SIGTERM."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.helpers import NAMESPACE, extra_node, node, wait_for, wait_label
from tests.unit.node_agent.test_podresources import HAND_BUILT

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


def test_agent_process_publishes_which_gpu_the_kubelet_says_each_pod_got(
    kube: Kubectl, fleet: FleetProfile, tmp_path: Path
) -> None:
    """A gRPC server on a unix socket stands in for the kubelet's PodResources API."""
    kube.run("create", "namespace", NAMESPACE, check=False)
    extra = extra_node(kube, fleet, "x220-tesla-p4", "x220-kubelet")
    profile = tmp_path / "fleet.yaml"
    profile.write_text(yaml.safe_dump(extra.model_dump(by_alias=True, exclude_none=True)))
    folder = tempfile.mkdtemp(prefix="podres-", dir="/tmp")  # unix socket paths hold 107 bytes
    kubelet = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    kubelet.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "v1.PodResourcesLister", {"List": grpc.unary_unary_rpc_method_handler(lambda request, context: HAND_BUILT)}
    ),))  # fmt: skip
    kubelet.add_insecure_port(f"unix://{folder}/kubelet.sock")
    kubelet.start()
    command = [sys.executable, "-m", "egpu_node_agent", "run", "--backend", "fake", "--fleet", str(profile),
               "--kubeconfig", str(kube.kubeconfig), "--namespace", NAMESPACE, "--poll-interval", "1",
               "--metrics-port", "0", "--pod-resources-socket", f"{folder}/kubelet.sock"]  # fmt: skip
    agent = subprocess.Popen(command, env={**os.environ, "NODE_NAME": "x220-kubelet"}, stderr=subprocess.PIPE, text=True)
    try:
        annotation = wait_for(
            lambda: node(kube, "x220-kubelet")["metadata"].get("annotations", {}).get("egpu-operator.io/gpu-assignments"),
            20, "the assignments annotation",
        )  # fmt: skip
        assert annotation == '{"ai/llm-0":["GPU-b"]}'
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=15)
        kubelet.stop(grace=None)
        shutil.rmtree(folder, ignore_errors=True)
        kube.run("delete", "node", "x220-kubelet", check=False)
    assert agent.returncode == 0, stderr
