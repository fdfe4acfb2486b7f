"""The chart's tenant allow-lists: the operator creates replica pods with its own rights, so a user
who may only manage InferenceDeployments in one namespace is refused a pod template that names a
ServiceAccount outside tenancy.allowedServiceAccounts or a PriorityClass outside
tenancy.allowedPriorityClasses, and is accepted with neither set."""

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from egpu_localcluster import LocalCluster
from tests.e2e.helpers import wait_for
from tests.unit.chart.helm import CHART, NAMESPACE, RELEASE, REPO, helm, release_on_local_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
TENANT, USER = "team-a", "alice"
ALLOWED_CLASS, FOREIGN_SA = "tenant-batch", "ci-deployer"
VALUES = {"tenancy.allowedPriorityClasses": "{" + ALLOWED_CLASS + "}"}
EXAMPLE = REPO / "examples" / "01-llm-18gb-30s-budget.yaml"


def deployment(name: str, **pod_fields: str) -> dict[str, Any]:
    """The first example in the tenant's namespace, with these fields added to its pod template's spec."""
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"] = {"name": name, "namespace": TENANT}
    manifest["spec"]["template"]["spec"].update(pod_fields)
    return manifest


def as_tenant(cluster: LocalCluster, *args: str, manifest: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl as the tenant (impersonated by the cluster admin); does not raise on failure."""
    stdin = json.dumps(manifest) if manifest is not None else None
    return cluster.kubectl.run("--as", USER, "-n", TENANT, *args, stdin=stdin, check=False)


def dry_run(cluster: LocalCluster, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return as_tenant(cluster, "create", "--dry-run=server", "-f", "-", manifest=manifest)


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, f"expected a refusal, got: {result.stdout}"
    assert "(Forbidden)" in result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """The chart with one PriorityClass allowed, and a tenant who may manage only InferenceDeployments in its namespace."""
    with release_on_local_cluster(VALUES) as cluster:
        kube = cluster.kubectl
        kube.run("create", "namespace", TENANT)
        kube.run("create", "serviceaccount", FOREIGN_SA, "-n", TENANT)
        kube.run("create", "role", "inference", "-n", TENANT, "--verb=*", "--resource=inferencedeployments.egpu-operator.io")
        kube.run("create", "rolebinding", "inference", "-n", TENANT, "--role=inference", f"--user={USER}")
        # Naming a ServiceAccount also needs the right to get it (test_tenant_references.py); here
        # the tenant has it, so only the allow-lists decide.
        kube.run("create", "role", "service-accounts", "-n", TENANT, "--verb=get", "--resource=serviceaccounts")
        kube.run("create", "rolebinding", "service-accounts", "-n", TENANT, "--role=service-accounts", f"--user={USER}")
        # The API server enforces a new policy once its informer has it: wait for the first refusal.
        wait_for(
            lambda: True if dry_run(cluster, deployment("probe", priorityClassName="system-node-critical")).returncode else None,
            timeout_s=30,
            what="the tenant allow-list policy to be enforced",
        )
        yield cluster


def test_tenant_may_manage_inference_deployments_but_not_pods(cluster: LocalCluster) -> None:
    assert as_tenant(cluster, "auth", "can-i", "create", "inferencedeployments.egpu-operator.io").stdout.strip() == "yes"
    assert as_tenant(cluster, "auth", "can-i", "create", "pods").stdout.strip() == "no"


def test_a_template_naming_neither_is_accepted(cluster: LocalCluster) -> None:
    result = dry_run(cluster, deployment("plain"))
    assert result.returncode == 0, result.stderr
    allowed = dry_run(cluster, deployment("allowed", serviceAccountName="default", priorityClassName=ALLOWED_CLASS))
    assert allowed.returncode == 0, allowed.stderr


def test_a_foreign_service_account_is_refused(cluster: LocalCluster) -> None:
    message = refusal(dry_run(cluster, deployment("as-ci", serviceAccountName=FOREIGN_SA)))
    assert (
        f"spec.template.spec.serviceAccountName {FOREIGN_SA} is not allowed: allowed ServiceAccounts are default"
        " (chart value tenancy.allowedServiceAccounts)"
    ) in message
    message = refusal(dry_run(cluster, deployment("as-ci-old", serviceAccount=FOREIGN_SA)))
    assert f"spec.template.spec.serviceAccount (deprecated) {FOREIGN_SA} is not allowed" in message


def test_a_priority_class_outside_the_list_is_refused(cluster: LocalCluster) -> None:
    message = refusal(dry_run(cluster, deployment("critical", priorityClassName="system-node-critical")))
    assert (
        f"spec.template.spec.priorityClassName system-node-critical is not allowed: allowed PriorityClasses are {ALLOWED_CLASS}"
        " (chart value tenancy.allowedPriorityClasses)"
    ) in message


def test_an_update_may_not_add_a_foreign_service_account(cluster: LocalCluster) -> None:
    created = as_tenant(cluster, "create", "-f", "-", manifest=deployment("update-me"))
    assert created.returncode == 0, created.stderr
    try:
        patch = json.dumps({"spec": {"template": {"spec": {"serviceAccountName": FOREIGN_SA}}}})
        message = refusal(as_tenant(cluster, "patch", "inferencedeployment", "update-me", "--type=merge", "-p", patch))
        assert f"serviceAccountName {FOREIGN_SA} is not allowed" in message
    finally:
        cluster.kubectl.run("delete", "inferencedeployment", "update-me", "-n", TENANT)


def test_narrowing_a_list_refuses_new_uses_but_lets_existing_objects_be_updated(cluster: LocalCluster) -> None:
    """Runs last: it upgrades the release to the default (empty) PriorityClass list."""
    created = as_tenant(cluster, "create", "-f", "-", manifest=deployment("batch", priorityClassName=ALLOWED_CLASS))
    assert created.returncode == 0, created.stderr
    try:
        # Without --reset-values a helm upgrade given no values keeps the last ones.
        helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reset-values", "--wait", kubeconfig=cluster.kubeconfig)
        wait_for(
            lambda: True if dry_run(cluster, deployment("batch-2", priorityClassName=ALLOWED_CLASS)).returncode else None,
            timeout_s=30,
            what=f"priorityClassName {ALLOWED_CLASS} to be refused after the upgrade",
        )
        message = refusal(dry_run(cluster, deployment("batch-2", priorityClassName=ALLOWED_CLASS)))
        assert "allowed PriorityClasses are none" in message
        # The object that already had it can still be updated (ratcheting): labelled, or its finalizer removed.
        labelled = as_tenant(cluster, "label", "inferencedeployment", "batch", "team=ml")
        assert labelled.returncode == 0, labelled.stderr
    finally:
        cluster.kubectl.run("delete", "inferencedeployment", "batch", "-n", TENANT)
