"""A tenant allowed only InferenceDeployments cannot get a pod it could not create itself.

The operator creates replica pods with its own ServiceAccount, so the CRD's rules on
``spec.template`` are what stands between such a tenant and a privileged pod on a node of their
choosing. Each hostile template is sent as that user (``kubectl --as``) and must be refused by
validation, naming the field, not by RBAC; a plain template is accepted. The namespace's Pod
Security level still applies to the replica pods the operator would create from it.
"""

import json
import uuid
from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_operator.pods import replica_pod
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
TENANT = "tenant-alice"
SERVER: dict[str, Any] = {"name": "server", "image": "registry.example/llm:1", "ports": [{"containerPort": 8080}]}


def deployment(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": f"t-{uuid.uuid4().hex[:6]}"},
        "spec": {
            "model": {"name": "m", "size": "1Gi"},
            "placement": {"maxLoadSeconds": 30},
            "template": {"spec": pod_spec},
        },
    }


@pytest.fixture
def tenant_namespace(kube: Kubectl, namespace: str) -> str:
    """``namespace`` where TENANT may do anything to InferenceDeployments and nothing else."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "inference-deployments-only", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["egpu-operator.io"],
                "resources": ["inferencedeployments"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "inference-deployments-only", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "inference-deployments-only"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT}],
    }
    kube.apply(role)
    kube.apply(binding)
    wait_for(
        lambda: True if can_i(kube, namespace, "create", "inferencedeployments") else None,
        timeout_s=30,
        what=f"{TENANT} to be allowed InferenceDeployments",
    )
    return namespace


def can_i(kube: Kubectl, namespace: str, verb: str, resource: str) -> bool:
    result = kube.run("auth", "can-i", verb, resource, "-n", namespace, f"--as={TENANT}", check=False)
    return result.stdout.strip() == "yes"


def create_as_tenant(kube: Kubectl, namespace: str, body: dict[str, Any], dry_run: bool = False) -> tuple[int, str]:
    args = ["create", "-n", namespace, f"--as={TENANT}", "-f", "-", *(["--dry-run=server"] if dry_run else [])]
    result = kube.run(*args, stdin=json.dumps(body), check=False)
    return result.returncode, result.stderr


def test_the_tenant_has_no_pod_rights(kube: Kubectl, tenant_namespace: str) -> None:
    assert not can_i(kube, tenant_namespace, "create", "pods")
    assert can_i(kube, tenant_namespace, "create", "inferencedeployments")


HOSTILE = {
    "privileged": (
        {"containers": [{**SERVER, "securityContext": {"privileged": True}}]},
        "spec.template.spec.containers[0].securityContext.privileged",
    ),
    "privileged-init-container": (
        {"initContainers": [{"name": "fetch", "image": "x", "securityContext": {"privileged": True}}], "containers": [SERVER]},
        "spec.template.spec.initContainers[0].securityContext.privileged",
    ),
    "host-path-root": (
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}], "containers": [SERVER]},
        "spec.template.spec.volumes[0].hostPath",
    ),
    "host-network": ({"hostNetwork": True, "containers": [SERVER]}, "spec.template.spec.hostNetwork"),
    "host-pid": ({"hostPID": True, "containers": [SERVER]}, "spec.template.spec.hostPID"),
    "host-ipc": ({"hostIPC": True, "containers": [SERVER]}, "spec.template.spec.hostIPC"),
    "node-name": ({"nodeName": "pi5-rtx4090", "containers": [SERVER]}, "spec.template.spec.nodeName"),
    "sys-admin": (
        {"containers": [{**SERVER, "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
        "spec.template.spec.containers[0].securityContext.capabilities.add",
    ),
    "all-at-once": (
        {
            "hostPID": True,
            "hostNetwork": True,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{**SERVER, "securityContext": {"privileged": True}}],
        },
        "spec.template.spec.hostPID",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_template_is_refused_naming_the_field(kube: Kubectl, tenant_namespace: str, case: str) -> None:
    pod_spec, field = HOSTILE[case]
    code, stderr = create_as_tenant(kube, tenant_namespace, deployment(pod_spec))
    assert code != 0, f"{case} was accepted"
    assert "is invalid" in stderr, stderr
    assert field in stderr, stderr
    assert "forbidden" not in stderr.lower(), "refused by validation, not merely by RBAC"


def test_a_plain_template_is_accepted(kube: Kubectl, tenant_namespace: str) -> None:
    plain = {
        "containers": [{**SERVER, "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}],
        "volumes": [{"name": "models", "emptyDir": {}}],
    }
    code, stderr = create_as_tenant(kube, tenant_namespace, deployment(plain), dry_run=True)
    assert code == 0, stderr


def test_the_namespace_pod_security_level_still_applies_to_replica_pods(kube: Kubectl, tenant_namespace: str) -> None:
    """The CRD holds templates to baseline; a namespace that enforces restricted gets restricted too,
    because the API server checks every pod create against it, whoever creates the pod."""
    kube.run("label", "namespace", tenant_namespace, "pod-security.kubernetes.io/enforce=restricted")
    body = deployment({"containers": [SERVER]})
    code, stderr = create_as_tenant(kube, tenant_namespace, body, dry_run=True)
    assert code == 0, stderr  # baseline is enough for the InferenceDeployment itself
    body["metadata"] |= {"namespace": tenant_namespace, "uid": str(uuid.uuid4())}
    pod = replica_pod(body, 0, "pi5-rtx4090", 10.0)
    # Created here as the cluster admin, whose rights are a superset of the operator's.
    result = kube.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False)
    assert result.returncode != 0, "a restricted namespace accepted a replica pod that is only baseline"
    assert 'violates PodSecurity "restricted:latest"' in result.stderr, result.stderr
