"""From the demo to `helm install`: CRDs the demo installed are adopted by the release, and the
InferenceDeployments made before stay. Without the ownership marks Helm refuses them."""

import json
import os
from collections.abc import Iterator

import pytest

from egpu_localcluster import LocalCluster, ensure_tools
from egpu_localcluster.adoption import mark_crds_for_helm
from tests.e2e.conftest import REPO, install_crds
from tests.e2e.deployments import deployment
from tests.unit.chart.helm import CHART, NAMESPACE, RELEASE, helm

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]


def adoption_flags() -> list[str]:
    return [] if os.environ.get("EGPU_HELM") == "3" else ["--force-conflicts"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(ensure_tools()) as cluster:
        yield cluster


def helm_install(cluster: LocalCluster, *extra: str) -> tuple[int, str]:
    # No --wait: this cluster has no GPU nodes; what matters is whether Helm takes the CRDs.
    done = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace", *extra,
                kubeconfig=cluster.kubeconfig, check=False)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_the_demos_crds_are_adopted_by_helm_install(cluster: LocalCluster) -> None:
    kube = cluster.kubectl
    install_crds(kube)  # as the demo does: kubectl apply --server-side -f crds/
    kube.run("create", "namespace", "models")
    kube.run("apply", "-n", "models", "-f", "-", stdin=json.dumps(deployment("kept", "6G", 20)))

    refused, output = helm_install(cluster)
    assert refused != 0
    assert "cannot be imported into the current release" in output

    assert mark_crds_for_helm(kube) == ["gpumaintenances.egpu-operator.io", "inferencedeployments.egpu-operator.io"]
    # Helm 4 applies server-side, and kubectl's server-side apply owns the CRDs' fields: Helm takes
    # them over with --force-conflicts (Helm 3 applies client-side and needs no flag).
    status, output = helm_install(cluster, *adoption_flags())
    assert status == 0, output
    crd = kube.get_json("crd", "inferencedeployments.egpu-operator.io")
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", "the chart's own CRD template applied"
    manifest = helm("get", "manifest", RELEASE, "--namespace", NAMESPACE, kubeconfig=cluster.kubeconfig).stdout
    assert "name: inferencedeployments.egpu-operator.io" in manifest
    assert kube.get_json("idep", "kept", "-n", "models")["spec"]["model"]["size"] == "6G", "the deployment made before is kept"
    assert (REPO / "crds").is_dir()
