"""The operator's own token is fenced: with a token of the chart's operator ServiceAccount (minted
through the TokenRequest API, every write a server-side dry run), replica pods, their Services and
PodDisruptionBudgets and the operator's node changes go through, and a pod in kube-system, a pod
without an InferenceDeployment owner, a privileged replica, a node taint or foreign label and a
foreign Service are refused. tests/e2e/test_helm_rbac_is_sufficient.py runs the operator's normal
work (placement, Service, drain) with the same token under the policy."""

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from egpu_api import keys
from egpu_api.inference import ServiceSpec
from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from egpu_operator import service
from egpu_operator.pods import disruption_budget, replica_pod, resource_claim
from tests.e2e.deployments import deployment
from tests.e2e.helpers import wait_for
from tests.unit.chart.helm import NAMESPACE, OPERATOR_SA, release_on_local_cluster, token_kubeconfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
MODELS, NODE = "models", "pi5-rtx4090"
DEPLOYMENT: dict[str, Any] = {
    "metadata": {"name": "llm", "namespace": MODELS, "uid": "0b8d3f4e-0000-4000-8000-000000000001"},
    "spec": {"template": {"spec": {"containers": [{"name": "server", "image": "registry.example/llm:1"}]}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with release_on_local_cluster() as cluster:
        cluster.kubectl.run("create", "namespace", MODELS)
        cluster.kubectl.wait_default_service_account(MODELS)
        # A powerful ServiceAccount of the namespace, as a tenant namespace may hold one.
        cluster.kubectl.run("create", "serviceaccount", "cluster-admin-sa", "-n", MODELS)
        # Replicas go only where an InferenceDeployment is (the fence's second policy).
        cluster.kubectl.run("apply", "-n", MODELS, "-f", "-", stdin=json.dumps(deployment("llm", "6G", 60)))
        yield cluster


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """kubectl with a fresh token of the operator's ServiceAccount; returns once the fence is enforced."""
    path = token_kubeconfig(cluster.kubectl, OPERATOR_SA, tmp_path_factory.mktemp("operator") / "kubeconfig")
    kube = Kubectl(cluster.kubectl.binary, path)
    wait_for(lambda: True if dry_run(kube, pod_in("kube-system")).returncode else None, 30, "the operator fence to be enforced")
    return kube


def replica(**changes: Any) -> dict[str, Any]:
    """The pod the operator makes for replica 0 of DEPLOYMENT on NODE."""
    pod = replica_pod(DEPLOYMENT, 0, NODE, load_seconds=20.0)
    pod["spec"].update(changes)
    return pod


def owned_service() -> dict[str, Any]:
    """The Service the operator makes for DEPLOYMENT (service.py)."""
    return service.manifest(DEPLOYMENT, ServiceSpec.model_validate({"ports": [{"port": 80}]}))


def pod_in(namespace: str) -> dict[str, Any]:
    """A replica pod in ``namespace``, within Pod Security "restricted" (the release namespace enforces
    it, and its refusal would come before the fence's)."""
    pod = replica(securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}})
    pod["metadata"]["namespace"] = namespace
    for container in pod["spec"]["containers"]:
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod


def dry_run(kube: Kubectl, manifest: dict[str, Any], verb: str = "create") -> subprocess.CompletedProcess[str]:
    return kube.run(verb, "--dry-run=server", "-f", "-", stdin=json.dumps(manifest), check=False)


def patch_node(kube: Kubectl, patch: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kube.run("patch", "node", NODE, "--type=merge", "--dry-run=server", "-p", json.dumps(patch), check=False)


def accepted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, f"expected a refusal, got: {result.stdout}"
    assert "(Forbidden)" in result.stderr, result.stderr
    assert "egpu-operator-fence" in result.stderr, result.stderr
    return result.stderr


def test_a_replica_pod_its_service_and_budget_are_allowed(operator: Kubectl) -> None:
    accepted(dry_run(operator, replica()))
    accepted(dry_run(operator, owned_service()))
    accepted(dry_run(operator, disruption_budget(DEPLOYMENT, 1)))


@pytest.mark.parametrize("resource", ["nvidia.com/gpu.shared", "nvidia.com/mig-3g.40gb"])
def test_a_replica_on_a_shared_gpu_or_a_mig_mixed_slice_is_allowed(operator: Kubectl, resource: str) -> None:
    """The GPU forms placement chooses between: the replica pod asks for one of what its node advertises."""
    accepted(dry_run(operator, replica_pod(DEPLOYMENT, 0, NODE, load_seconds=20.0, gpu_resource=resource)))
    two = replica_pod(DEPLOYMENT, 0, NODE, load_seconds=20.0, gpu_resource=resource)
    two["spec"]["containers"][0]["resources"]["limits"][resource] = "2"
    assert f"requests {resource}=2: a replica gets one GPU" in refusal(dry_run(operator, two))


def dra_replica() -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod and ResourceClaim the operator makes for a replica with gpuAllocation: DRA."""
    pod = replica_pod(DEPLOYMENT, 0, NODE, load_seconds=20.0, dra=True)
    uuid = "GPU-6f1f9a52-3c1e-4c43-9e52-0d7c2b1e9a10"
    return pod, resource_claim(DEPLOYMENT, pod, f"gpu.nvidia.com/{NODE}/gpu-0", uuid, "gpu.nvidia.com")


def test_a_dra_replica_and_its_claim_are_allowed_and_nothing_more(operator: Kubectl) -> None:
    pod, claim = dra_replica()
    accepted(dry_run(operator, claim))
    accepted(dry_run(operator, pod))
    foreign = json.loads(json.dumps(claim))
    foreign["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] = "nic.example.com"
    assert "may make only ResourceClaims for one device of DeviceClass gpu.nvidia.com" in refusal(dry_run(operator, foreign))
    many = json.loads(json.dumps(claim))
    many["spec"]["devices"]["requests"][0]["exactly"] |= {"allocationMode": "All"}
    assert "may make only ResourceClaims for one device" in refusal(dry_run(operator, many))
    unowned = json.loads(json.dumps(claim))
    del unowned["metadata"]["ownerReferences"]
    assert "may create only ResourceClaims controlled by an InferenceDeployment" in refusal(dry_run(operator, unowned))
    unowned["metadata"]["namespace"] = "kube-system"
    assert "may not create resourceclaims in namespace kube-system" in refusal(dry_run(operator, unowned))
    borrowed = json.loads(json.dumps(pod))
    borrowed["spec"]["resourceClaims"][0]["resourceClaimName"] = "someone-elses-gpus"
    assert "requests resource claim gpu" in refusal(dry_run(operator, borrowed))


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease", NAMESPACE])
def test_a_pod_in_kube_system_or_the_release_namespace_is_refused(operator: Kubectl, namespace: str) -> None:
    message = refusal(dry_run(operator, pod_in(namespace)))
    assert f"the egpu-operator operator may not create pods in namespace {namespace}" in message


def test_a_replica_in_a_namespace_without_an_inference_deployment_is_refused(cluster: LocalCluster, operator: Kubectl) -> None:
    cluster.kubectl.run("create", "namespace", "bystanders")
    try:
        for manifest in (replica(), dra_replica()[1]):
            manifest["metadata"]["namespace"] = "bystanders"
            result = dry_run(operator, manifest)
            assert result.returncode != 0, result.stdout
            assert "egpu-operator-fence-namespaces" in result.stderr, result.stderr
            assert "no params found" in result.stderr, result.stderr
    finally:
        cluster.kubectl.run("delete", "namespace", "bystanders", "--wait=false")


def test_a_pod_without_an_owner_is_refused(operator: Kubectl) -> None:
    pod = replica()
    del pod["metadata"]["ownerReferences"]
    message = refusal(dry_run(operator, pod))
    assert (
        "may create only pods controlled by the InferenceDeployment their egpu-operator.io/inference-deployment label names"
        in message
    )


def test_a_pod_without_the_replica_labels_is_refused(operator: Kubectl) -> None:
    pod = replica()
    pod["metadata"]["labels"] = {"app": "miner"}
    message = refusal(dry_run(operator, pod))
    assert f"may create only replica pods, labelled {keys.DEPLOYMENT_LABEL} and {keys.REPLICA_LABEL}" in message


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"hostNetwork": True}, "hostNetwork"),
        ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, "hostPath volume root"),
        ({"containers": [{"name": "x", "image": "x", "securityContext": {"privileged": True}}]}, "privileged container x"),
        ({"containers": [{"name": "x", "image": "x", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]},
         "NVIDIA_VISIBLE_DEVICES"),
        ({"serviceAccountName": "cluster-admin-sa"}, "ServiceAccount cluster-admin-sa"),
        ({"containers": [{"name": "x", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
         "requests nvidia.com/gpu=8: a replica gets one GPU"),
        ({"tolerations": [{"operator": "Exists"}]}, 'tolerates taint key "": allowed are nvidia.com/gpu'),
        ({"resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": "eight-gpus"}]}, "requests resource claim gpus"),
    ],
    ids=["hostNetwork", "hostPath", "privileged", "gpu-env", "service-account", "gpus", "tolerations", "resource-claims"],
)  # fmt: skip
def test_a_replica_with_host_access_or_a_foreign_identity_is_refused(
    operator: Kubectl, changes: dict[str, Any], named: str
) -> None:
    message = refusal(dry_run(operator, replica(**changes)))
    assert named in message


def test_deleting_a_pod_that_is_not_a_replica_is_refused_but_evicting_it_is_not(cluster: LocalCluster, operator: Kubectl) -> None:
    """SECURITY.md: drains evict every GPU pod of a node, so the token may still evict any pod
    (the eviction API honours PodDisruptionBudgets); it may not delete one."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bystander", "namespace": MODELS},
           "spec": {"containers": [{"name": "x", "image": "registry.example/x:1"}]}}  # fmt: skip
    cluster.kubectl.run("create", "-f", "-", stdin=json.dumps(pod))
    try:
        message = refusal(operator.run("delete", "pod", "bystander", "-n", MODELS, "--dry-run=server", check=False))
        assert "may delete only replica pods" in message
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "bystander", "namespace": MODELS},
                    "deleteOptions": {"dryRun": ["All"]}}  # fmt: skip
        url = f"/api/v1/namespaces/{MODELS}/pods/bystander/eviction"
        accepted(operator.run("create", "--raw", url, "-f", "-", stdin=json.dumps(eviction), check=False))
    finally:
        cluster.kubectl.run("delete", "pod", "bystander", "-n", MODELS, "--wait=false")


def test_a_replica_shaped_pod_may_still_mount_a_secret_of_its_namespace(cluster: LocalCluster, operator: Kubectl) -> None:
    """SECURITY.md: the fence cannot tell a stolen token's pod from a replica of a template that
    names a Secret, so outside the release namespace and kube-* the token can still read Secrets."""
    cluster.kubectl.run("create", "secret", "generic", "db", "-n", MODELS, "--from-literal=password=x")
    accepted(dry_run(operator, replica(volumes=[{"name": "db", "secret": {"secretName": "db"}}])))


def test_a_foreign_service_and_budget_are_refused(operator: Kubectl) -> None:
    foreign = owned_service()
    del foreign["metadata"]["ownerReferences"]
    message = refusal(dry_run(operator, foreign))
    assert "may create only Services controlled by an InferenceDeployment; Service llm is not" in message
    budget = disruption_budget(DEPLOYMENT, 1)
    budget["metadata"]["ownerReferences"][0]["kind"] = "Deployment"
    message = refusal(dry_run(operator, budget))
    assert "may create only PodDisruptionBudgets controlled by an InferenceDeployment" in message
    wide = disruption_budget(DEPLOYMENT, 1)
    wide["spec"]["selector"] = {"matchLabels": {"app": "database"}}
    message = refusal(dry_run(operator, wide))
    assert "may create only PodDisruptionBudgets that select the pods of their InferenceDeployment" in message
    exposed = owned_service()
    exposed["spec"]["type"] = "NodePort"
    assert "may make only ClusterIP Services, not NodePort" in refusal(dry_run(operator, exposed))


def test_the_operators_node_changes_are_allowed(operator: Kubectl) -> None:
    # Cordon with the maintenance label, uncordon, a power-limit request (maintenance.py, power.py).
    accepted(patch_node(operator, {"spec": {"unschedulable": True}, "metadata": {"labels": {keys.MAINTENANCE_LABEL: "m"}}}))
    accepted(patch_node(operator, {"spec": {"unschedulable": None}}))
    accepted(patch_node(operator, {"metadata": {"annotations": {keys.POWER_REQUEST_ANNOTATION: "{}"}}}))


def test_a_node_taint_or_a_foreign_label_is_refused(operator: Kubectl) -> None:
    message = refusal(patch_node(operator, {"spec": {"taints": [{"key": "evil", "effect": "NoExecute"}]}}))
    assert "the egpu-operator operator may change only spec.unschedulable of a node, not spec.taints" in message
    message = refusal(patch_node(operator, {"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}))
    assert "may change only egpu-operator.io/ labels of a node, not node-role.kubernetes.io/control-plane" in message
    message = refusal(patch_node(operator, {"metadata": {"annotations": {"example.com/owner": "mallory"}}}))
    assert "may change only egpu-operator.io/ annotations of a node, not example.com/owner" in message


def test_the_fence_does_not_apply_to_other_users(cluster: LocalCluster, tmp_path: Path) -> None:
    accepted(dry_run(cluster.kubectl, pod_in("kube-system")))


def test_a_real_replica_and_its_service_may_be_replaced_and_deleted_and_a_foreign_service_may_not(
    cluster: LocalCluster, operator: Kubectl
) -> None:
    """The operator deletes replicas it no longer wants, replaces an edited Service and deletes one
    whose spec.service went away."""
    kube = cluster.kubectl
    owner = {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": "real", "namespace": MODELS},
        "spec": {
            "model": {"name": "m", "size": "1Gi"},
            "placement": {"maxLoadSeconds": 30},
            "template": DEPLOYMENT["spec"]["template"],
        },
    }
    kube.run("create", "-f", "-", stdin=json.dumps(owner))
    deployment = kube.get_json("inferencedeployment", "real", "-n", MODELS)
    pod = replica_pod(deployment, 0, NODE, load_seconds=20.0)
    owned = service.manifest(deployment, ServiceSpec.model_validate({"ports": [{"port": 80}]}))
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": MODELS},
               "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}}  # fmt: skip
    for manifest in (pod, owned, foreign):
        kube.run("create", "-f", "-", stdin=json.dumps(manifest))
    try:
        accepted(operator.run("delete", "pod", pod["metadata"]["name"], "-n", MODELS, "--dry-run=server", check=False))
        # An edited Service is read and replaced (kube.apply_service): its own, not another.
        for name in ("real", "db"):
            current = kube.get_json("service", name, "-n", MODELS)
            current["metadata"].setdefault("labels", {})["edited"] = "yes"
            replaced = operator.run("replace", "--dry-run=server", "-f", "-", stdin=json.dumps(current), check=False)
            if name == "real":
                accepted(replaced)
            else:
                assert "may update only Services controlled by an InferenceDeployment; Service db is not" in refusal(replaced)
        accepted(operator.run("delete", "service", "real", "-n", MODELS, "--dry-run=server", check=False))
        message = refusal(operator.run("delete", "service", "db", "-n", MODELS, "--dry-run=server", check=False))
        assert "may delete only Services controlled by an InferenceDeployment; Service db is not" in message
    finally:
        kube.run("delete", "inferencedeployment", "real", "-n", MODELS, "--wait=false")
        kube.run("delete", "service", "db", "-n", MODELS, "--wait=false")
