"""The kind tier's GPU worker: a real kubelet with one fake GPU, its node agent the chart's
DaemonSet pod, its replicas real containers (`make e2e-kind` names it in EGPU_E2E_GPU_WORKER).

Elsewhere the suite's agents are in-process simulators and its replicas KWOK's pretend pods; here
the agent runs from the image as the chart runs it (uid 65532, read-only root, its own-node
admission policy, a node-bound token), and a fault is what a cluster does to a pod: the DaemonSet
controller removes the agent, the kubelet stops an evicted replica's container.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.ledger import PodLedger
from tests.e2e import maintenances as gm
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, ready_on, replica_pods
from tests.e2e.helpers import NAMESPACE, labels, node, wait_for

GPU_WORKER = os.environ.get("EGPU_E2E_GPU_WORKER", "")
REPLICA_IMAGE = os.environ.get("EGPU_E2E_REPLICA_IMAGE", "")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (GPU_WORKER and REPLICA_IMAGE),
        reason="kind tier only (make e2e-kind sets EGPU_E2E_GPU_WORKER and EGPU_E2E_REPLICA_IMAGE): "
        "needs a real node running the chart's node agent",
    ),
]

NFD_LABEL = "feature.node.kubernetes.io/pci-10de.present"
#: The same GPU as the worker's, on Gen4 x4 instead of x16: where a replica goes when the worker
#: cannot serve. Only these two nodes carry PAIR, and the tests' deployments select it.
FALLBACK = "minipc-rtx4070ti"
PAIR = "e2e.egpu-operator.io/kind-pair"


def agent_pods(kube: Kubectl) -> list[dict[str, Any]]:
    pods = kube.get_json("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=node-agent")["items"]
    return [pod for pod in pods if pod["spec"].get("nodeName") == GPU_WORKER and not pod["metadata"].get("deletionTimestamp")]


def agent_ready(kube: Kubectl) -> dict[str, Any] | None:
    for pod in agent_pods(kube):
        if any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])):
            return pod
    return None


def lease_renewed(kube: Kubectl) -> str:
    return str(kube.get_json("lease", f"egpu-node-agent-{GPU_WORKER}", "-n", NAMESPACE)["spec"]["renewTime"])


def in_pod(kube: Kubectl, pod: str, namespace: str, script: str) -> subprocess.CompletedProcess[str]:
    return kube.run("exec", "-n", namespace, pod, "--", "python3", "-c", script, check=False)


@pytest.fixture
def paired(kube: Kubectl) -> Iterator[None]:
    """The worker and its fallback carry PAIR for the test; the agent on the worker is Ready."""
    wait_for(lambda: agent_ready(kube), 120, f"the chart's node agent Ready on {GPU_WORKER}")
    kube.run("label", "node", GPU_WORKER, FALLBACK, f"{PAIR}=true", "--overwrite")
    yield
    kube.run("label", "node", GPU_WORKER, FALLBACK, f"{PAIR}-", check=False)


def served() -> dict[str, Any]:
    """A small model whose replica is a real container on the worker: a TCP server the startupProbe
    waits for, from an image the nodes already hold (nothing is pulled)."""
    manifest = deployment("served", "1G", 60, disruption={"minAvailable": 1})
    manifest["spec"]["placement"]["nodeSelector"] = {PAIR: "true"}
    manifest["spec"]["placement"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    manifest["spec"]["template"]["spec"] = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "server",
                "image": REPLICA_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["python3", "-m", "http.server", "8080", "--directory", "/tmp"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    return manifest


def serve_on_worker(kube: Kubectl, namespace: str) -> str:
    """``served`` Ready on the worker; returns its pod's name, checked to be a container the
    kubelet really started."""
    apply(kube, namespace, served())
    assert wait_for(lambda: ready_on(kube, namespace, "served", 1), 120, "served: 1 replica Ready") == [GPU_WORKER]
    [pod] = [pod for pod in replica_pods(kube, namespace, "served") if pod["spec"]["nodeName"] == GPU_WORKER]
    [container] = pod["status"]["containerStatuses"]
    assert container["containerID"].startswith("containerd://"), container
    assert "running" in container["state"], container
    return str(pod["metadata"]["name"])


def wait_gone(ledger: PodLedger, pod: str) -> None:
    """Until the pod is deleted: the kubelet stops the evicted container, then the pod goes."""
    wait_for(lambda: True if pod in [name for _, name, _ in ledger.deleted] else None, 60, f"{pod} to be gone")


def test_the_chart_agent_publishes_the_workers_gpu_and_stays_on_its_node(kube: Kubectl) -> None:
    pod = wait_for(lambda: agent_ready(kube), 120, f"the chart's node agent Ready on {GPU_WORKER}")
    name = pod["metadata"]["name"]
    on_node = labels(kube, GPU_WORKER)
    assert on_node["egpu-operator.io/gpu-product"] == "NVIDIA-GeForce-RTX-4070-Ti"
    assert (on_node["egpu-operator.io/pcie-gen"], on_node["egpu-operator.io/pcie-width"]) == ("4", "16")
    assert (on_node["egpu-operator.io/gpu-mode"], on_node["egpu-operator.io/health"]) == ("bare-metal", "ok")
    healthy = [c for c in node(kube, GPU_WORKER)["status"]["conditions"] if c["type"] == "GPUHealthy"]
    assert [c["status"] for c in healthy] == ["True"]
    renewed = lease_renewed(kube)
    wait_for(lambda: True if lease_renewed(kube) != renewed else None, 30, "the agent's Lease to be renewed")

    # As the chart runs it: uid 65532, a read-only root.
    identity = in_pod(kube, name, NAMESPACE, "import os; print(os.getuid())")
    assert identity.stdout.strip() == "65532", identity.stderr
    read_only = in_pod(kube, name, NAMESPACE, "open('/written', 'w')")
    assert read_only.returncode != 0
    assert "Read-only file system" in read_only.stderr

    # Its token is bound to its node: the own-node admission policy refuses a label on another node.
    other = next(n["metadata"]["name"] for n in kube.get_json("nodes")["items"] if n["metadata"]["name"] != GPU_WORKER)
    script = (
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        "try:\n"
        f"    client.CoreV1Api().patch_node({other!r}, {{'metadata': {{'labels': {{'egpu-operator.io/gpu-count': '8'}}}}}})\n"
        "    print('allowed')\n"
        "except client.ApiException as error:\n"
        "    print(error.status, error.body)\n"
    )
    refused = in_pod(kube, name, NAMESPACE, script)
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.split()[0] in ("403", "422"), refused.stdout
    assert labels(kube, other).get("egpu-operator.io/gpu-count") != "8"


def test_maintenance_moves_a_real_replica_off_the_worker_without_an_outage(
    kube: Kubectl, workspace: str, paired: None, maintenances: None
) -> None:
    old = serve_on_worker(kube, workspace)

    with PodLedger(kube.kubeconfig, workspace, ["served"]) as ledger:
        gm.create(kube, "reseat-kind-gpu", GPU_WORKER, reason="reseat the worker's GPU")
        done = gm.wait_phase(kube, "reseat-kind-gpu", "Ready", timeout_s=120)
        after = wait_for(lambda: ready_on(kube, workspace, "served", 1), 60, "served: 1 replica Ready elsewhere")
        wait_gone(ledger, old)
    print(f"maintenance of {GPU_WORKER}: fewest Ready {ledger.minimum['served']}/1; pods deleted {len(ledger.deleted)}")

    assert after == [FALLBACK]
    assert [(m["deployment"], m["toNode"]) for m in done["status"]["moved"]] == [(f"{workspace}/served", FALLBACK)]
    assert [name for _, name, _ in ledger.deleted] == [old]
    assert ledger.minimum["served"] == 1, "the replica went before its replacement was Ready"
    # The agent stays, serving the node's facts through the maintenance.
    assert agent_ready(kube) is not None
    gm.complete(kube, "reseat-kind-gpu")


def test_a_stopped_chart_agent_gets_its_replica_surged_away_then_evicted(
    kube: Kubectl, workspace: str, paired: None, operator: OperatorProcess
) -> None:
    old = serve_on_worker(kube, workspace)
    try:
        with PodLedger(kube.kubeconfig, workspace, ["served"]) as ledger:
            # The agent stops for real: without NFD's label the DaemonSet controller deletes its pod.
            stopped = time.monotonic()
            kube.run("label", "node", GPU_WORKER, f"{NFD_LABEL}-")
            wait_for(lambda: True if not agent_pods(kube) else None, 60, f"the node agent on {GPU_WORKER} to stop")
            # Its labels stay (blindness is not death); after TTL + grace without a renewal the
            # operator surges a replacement elsewhere, then evicts the old replica.
            assert labels(kube, GPU_WORKER)["egpu-operator.io/gpu-product"] == "NVIDIA-GeForce-RTX-4070-Ti"
            after = wait_for(
                lambda: found if (found := ready_on(kube, workspace, "served", 1)) and GPU_WORKER not in found else None,
                180, f"served's replica on {GPU_WORKER} to be replaced and the old pod gone",
            )  # fmt: skip
            wait_gone(ledger, old)
            moved_s = time.monotonic() - stopped
        print(f"chart agent on {GPU_WORKER} stopped: fewest Ready {ledger.minimum['served']}/1; moved after {moved_s:.1f} s")
    finally:
        kube.run("label", "node", GPU_WORKER, f"{NFD_LABEL}=true", "--overwrite")
        wait_for(lambda: agent_ready(kube), 120, f"the chart's node agent back on {GPU_WORKER}")
    assert after == [FALLBACK]
    assert [name for _, name, _ in ledger.deleted] == [old], "only the replaced replica's pod may go"
    assert ledger.minimum["served"] == 1, "the replica went before its replacement was Ready"
    assert "replica evicted" in operator.log.read_text()


def test_helm_test_passes_against_the_release(kube: Kubectl) -> None:
    helm = shutil.which("helm")
    assert helm, "make e2e-kind puts the cached helm on PATH"
    result = subprocess.run(
        [helm, "--kubeconfig", str(kube.kubeconfig), "test", "egpu-operator", "-n", NAMESPACE, "--logs", "--timeout", "120s"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Phase:          Succeeded" in result.stdout
    assert "/readyz answered 200; /metrics has egpu_operator_build_info" in result.stdout
