"""Tenants with real credentials for the chart's InferenceDeployment policies.

Each tenant is a ServiceAccount with a Role in the tenant namespace and a token minted through the
TokenRequest API (``kubectl create token``), used through a kubeconfig of its own: the API server
authenticates it and asks its authorizer exactly as it would for a person's credentials, with no
impersonation in between. ``IDEPS_ONLY`` may manage InferenceDeployments and nothing else;
``POD_CREATOR`` may also create pods, so the chart gives it what pods get.
"""

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.helpers import wait_for
from tests.unit.chart.helm import REPO, release_on_local_cluster, token_kubeconfig

TENANT_NAMESPACE = "team-a"
EXAMPLE = REPO / "examples" / "01-llm-18gb-30s-budget.yaml"
IDEPS: dict[str, Any] = {
    "apiGroups": ["egpu-operator.io"],
    "resources": ["inferencedeployments"],
    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
}
PODS: dict[str, Any] = {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}


@dataclass(frozen=True)
class Tenant:
    """kubectl with a tenant's own token, in the tenant namespace."""

    name: str
    kubectl: Kubectl

    def run(self, *args: str, manifest: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl as the tenant; does not raise on failure."""
        stdin = json.dumps(manifest) if manifest is not None else None
        return self.kubectl.run("-n", TENANT_NAMESPACE, *args, stdin=stdin, check=False)

    def dry_run(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """Create ``manifest`` with a server-side dry run: admission runs, nothing is stored."""
        return self.run("create", "--dry-run=server", "-f", "-", manifest=manifest)

    def can_i(self, verb: str, resource: str) -> bool:
        return self.run("auth", "can-i", verb, resource).stdout.strip() == "yes"


def add_tenant(cluster: LocalCluster, name: str, rules: list[dict[str, Any]], folder: Path) -> Tenant:
    """A ServiceAccount ``name`` in the tenant namespace with a Role of ``rules``, and its token."""
    kube = cluster.kubectl
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": TENANT_NAMESPACE}, "rules": rules}  # fmt: skip
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": TENANT_NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": TENANT_NAMESPACE}],
    }
    kube.run("create", "serviceaccount", name, "-n", TENANT_NAMESPACE)
    kube.apply(role)
    kube.apply(binding)
    path = token_kubeconfig(kube, name, folder / f"{name}.kubeconfig", namespace=TENANT_NAMESPACE)
    tenant = Tenant(name, Kubectl(kube.binary, path))
    wait_for(lambda: True if tenant.can_i("create", "inferencedeployments.egpu-operator.io") else None, 30, f"{name}'s Role")
    return tenant


def deployment(name: str, **pod_fields: Any) -> dict[str, Any]:
    """The first example in the tenant namespace, with these fields added to its pod template's spec."""
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"] = {"name": name, "namespace": TENANT_NAMESPACE}
    manifest["spec"]["template"]["spec"].update(pod_fields)
    return manifest


def with_container(manifest: dict[str, Any], **container_fields: Any) -> dict[str, Any]:
    """``manifest`` with these fields set on its first container."""
    manifest["spec"]["template"]["spec"]["containers"][0].update(container_fields)
    return manifest


def accepted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The API server's message for a refused request (fails if it went through)."""
    assert result.returncode != 0, f"expected a refusal, got: {result.stdout}"
    assert "(Forbidden)" in result.stderr, result.stderr
    return result.stderr


@contextlib.contextmanager
def tenants_on_release(folder: Path, values: dict[str, str] | None = None) -> Iterator[tuple[LocalCluster, Tenant, Tenant]]:
    """The chart on a local cluster of its own, the tenant namespace, and two tenants there:
    one who may manage only InferenceDeployments and one who may also create pods."""
    with release_on_local_cluster(values) as cluster:
        cluster.kubectl.run("create", "namespace", TENANT_NAMESPACE)
        cluster.kubectl.wait_default_service_account(TENANT_NAMESPACE)
        ideps_only = add_tenant(cluster, "ideps-only", [IDEPS], folder)
        pod_creator = add_tenant(cluster, "pod-creator", [IDEPS, PODS], folder)
        # The API server enforces a new policy once its informers have it: wait for the first refusals.
        wait_refused(
            ideps_only, deployment("probe", hostAliases=[{"ip": "10.0.0.1", "hostnames": ["probe"]}]), "the requester policy"
        )
        wait_refused(pod_creator, deployment("probe", runtimeClassName="probe"), "the allow-list policy")
        yield cluster, ideps_only, pod_creator


def wait_refused(tenant: Tenant, manifest: dict[str, Any], policy: str) -> None:
    wait_for(lambda: True if tenant.dry_run(manifest).returncode else None, 30, f"{policy} to be enforced")
