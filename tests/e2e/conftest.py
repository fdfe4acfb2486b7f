"""Session fixture: one real Kubernetes API server with the default fleet as fake GPU nodes.

By default the local control plane is started (and built first if needed). With
``EGPU_E2E_KUBECONFIG`` set, the tests use that cluster instead, e.g. the kind cluster made by
``hack/kind/up.sh``; the fleet's nodes are applied to it either way. With
``EGPU_E2E_OPERATOR=chart`` as well (``make e2e-kind``), the operator is the chart's pod in
``egpu-system``, not a local process: tests that stop, kill or pause the operator skip there.
"""

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from egpu_api.fleet import FleetProfile, load_fleet
from egpu_localcluster import LocalCluster, ensure_tools
from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.operator_process import OperatorProcess, install_crds
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client
from tests.e2e.helpers import NAMESPACE, wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
MODEL_LOAD_SCALE = 0.1


def ensure_crds(kubectl: Kubectl) -> None:
    """The CRDs, installed and Established. With the chart's operator (make e2e-kind) they are the
    chart's: helm owns their fields, so they are only waited for."""
    if os.environ.get("EGPU_E2E_OPERATOR") == "chart":
        kubectl.run("wait", "--for", "condition=Established", "--timeout", "30s", "-f", str(REPO / "crds"))
        return
    install_crds(kubectl)


@pytest.fixture(scope="session")
def fleet() -> FleetProfile:
    return load_fleet()


@pytest.fixture(scope="session")
def local_cluster(fleet: FleetProfile) -> Iterator[LocalCluster | None]:
    """The local control plane the session runs on; None with ``EGPU_E2E_KUBECONFIG`` (fault
    tests that kill its processes skip then)."""
    if os.environ.get("EGPU_E2E_KUBECONFIG"):
        yield None
        return
    # stop() raises if any process of the cluster outlives it, failing the run at teardown.
    # Replica pods take a tenth of their estimated model load time to become Ready (2.1 s for
    # 18 GB over Gen3 x1): quick, yet a drain that evicts before the replacement loads shows its outage.
    with LocalCluster(ensure_tools(), model_load_scale=MODEL_LOAD_SCALE) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kube(fleet: FleetProfile, local_cluster: LocalCluster | None) -> Kubectl:
    """kubectl bound to a cluster that has every fleet node Ready."""
    if local_cluster is None:
        binary = shutil.which("kubectl")
        kubectl = Kubectl(Path(binary) if binary else ensure_tools().kubectl, Path(os.environ["EGPU_E2E_KUBECONFIG"]))
    else:
        kubectl = local_cluster.kubectl
    kubectl.apply_fleet(fleet)
    kubectl.wait_nodes_ready(node.name for node in fleet.nodes)
    ensure_crds(kubectl)
    return kubectl


@pytest.fixture
def namespace(kube: Kubectl) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for finalization)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", name)
    kube.wait_default_service_account(name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def simulator(kube: Kubectl, fleet: FleetProfile) -> Iterator[FleetSimulator]:
    """One real node agent per fleet node, on fake NVML and sysfs, polling every second."""
    kube.run("create", "namespace", NAMESPACE, check=False)
    with tempfile.TemporaryDirectory(prefix="egpu-e2e-sysfs-") as sysfs:
        sim = FleetSimulator(fleet, api_client(kube.kubeconfig), NAMESPACE, Path(sysfs), poll_interval_s=1.0)
        sim.start()
        yield sim
        sim.stop()


def e2e_operator(kubeconfig: Path, log: Path) -> OperatorProcess:
    """The operator as the suite runs it: resyncing every 3 s, so tests of missed events stay short. One
    leader identity across restarts, as a pod's name: a restarted (even SIGKILLed) operator resumes its
    own Lease at once instead of waiting for it to expire."""
    env = {"EGPU_OPERATOR_RESYNC_SECONDS": "3", "EGPU_OPERATOR_LEADER_ELECTION_IDENTITY": "e2e-operator"}
    return OperatorProcess(kubeconfig, log, env=env)


class PodLog:
    """The chart operator's log, read like the local process's log file (``read_text()``)."""

    def __init__(self, kube: Kubectl) -> None:
        self.kube = kube

    def read_text(self) -> str:
        return self.kube.run("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator", "--tail=-1").stdout


class ChartOperator(OperatorProcess):
    """The operator as the chart runs it on kind: already running as a pod. Stopping, killing or
    pausing it is a local-process scenario, so a test that tries skips with that reason."""

    def __init__(self, kube: Kubectl) -> None:
        super().__init__(kube.kubeconfig, Path(os.devnull))
        self.log = PodLog(kube)  # type: ignore[assignment]

    def start(self, *extra_args: str) -> None:
        pytest.skip("restarts the operator process; here the operator is the chart's pod (EGPU_E2E_OPERATOR=chart)")

    def signal(self, sig: int) -> None:
        pytest.skip("signals the operator process; here the operator is the chart's pod (EGPU_E2E_OPERATOR=chart)")

    def stop(self, kill: bool = False) -> None:
        pytest.skip("stops the operator process; here the operator is the chart's pod (EGPU_E2E_OPERATOR=chart)")

    def metrics(self) -> str:
        pytest.skip("reads the operator process's /metrics; here the operator is the chart's pod (EGPU_E2E_OPERATOR=chart)")


@pytest.fixture(scope="session")
def operator(kube: Kubectl, simulator: FleetSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator, running against the session cluster with the simulated fleet's agents."""
    if os.environ.get("EGPU_E2E_OPERATOR") == "chart":
        yield ChartOperator(kube)
        return
    process = e2e_operator(kube.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def workspace(kube: Kubectl, operator: OperatorProcess) -> Iterator[str]:
    """A namespace for InferenceDeployments; afterwards they are deleted and their pods awaited, freeing the GPUs."""
    name = f"idep-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", name)
    kube.wait_default_service_account(name)
    yield name
    kube.run("delete", "inferencedeployments", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False)
    wait_for(lambda: True if not kube.get_json("pods", "-n", name)["items"] else None, timeout_s=60, what=f"pods of {name} to go")
    kube.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def maintenances(kube: Kubectl, operator: OperatorProcess) -> Iterator[None]:
    """Afterwards every GPUMaintenance is deleted and awaited, so each node is back in service."""
    yield
    kube.run("delete", "gpumaintenances", "--all", "--wait=true", "--timeout=60s", check=False)
