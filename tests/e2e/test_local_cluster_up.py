"""`egpu-localcluster up` leaves a working cluster (nodes, agents, CRDs, operator) that places the
examples as they are, with both components' metrics on; `down` stops all of it."""

import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from egpu_localcluster import ensure_tools
from egpu_localcluster.cli import CLUSTERS_DIR
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.helpers import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="tests the local control plane's CLI"),
]
REPO = Path(__file__).resolve().parents[2]


def localcluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "egpu_localcluster", *args], capture_output=True, text=True, check=False)


def metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_up_gives_a_cluster_where_the_examples_just_work() -> None:
    name = f"egpu-up-{uuid.uuid4().hex[:6]}"
    started = localcluster("up", "--name", name)
    try:
        assert started.returncode == 0, started.stderr
        lines = started.stdout.splitlines()
        kubeconfig = Path(lines[0].removeprefix("export KUBECONFIG="))
        [urls] = [line for line in lines if line.startswith("# metrics: ")]
        agent_url, operator_url = urls.split()[4].rstrip(","), urls.split()[6]
        kube = Kubectl(ensure_tools().kubectl, kubeconfig)

        kube.run("apply", "-f", str(REPO / "examples"))
        wait_for(
            lambda: True if (kube.get_json("idep", "llm-6gb").get("status") or {}).get("readyReplicas") == 1 else None,
            90,
            "the example llm-6gb placed and Ready",
        )
        assert kube.get_json("service", "llm-18gb")["spec"]["selector"] == {"egpu-operator.io/inference-deployment": "llm-18gb"}
        crd = kube.get_json("crd", "inferencedeployments.egpu-operator.io")
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == "egpu-operator"
        assert 'egpu_gpu_health{Hostname="pi5-rtx4090"' in metrics(agent_url)
        assert 'egpu_operator_deployment_replicas_ready{name="llm-6gb",namespace="default"} 1.0' in metrics(operator_url)
    finally:
        stopped = localcluster("down", "--name", name)
    assert stopped.returncode == 0, stopped.stderr
    again = localcluster("down", "--name", name)
    assert again.returncode == 1
    assert f"found no cluster named {name!r}" in again.stderr
    shutil.rmtree(CLUSTERS_DIR / name, ignore_errors=True)  # `down` keeps the logs; this test does not need them
