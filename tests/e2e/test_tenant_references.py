"""The operator creates only what its requester could: a user who may not create pods must be allowed
to get every Secret, ConfigMap, PersistentVolumeClaim and ServiceAccount its InferenceDeployment's
template names, however the template names it; a user who may create pods is not asked.

The tenants authenticate with real ServiceAccount tokens (tests/e2e/tenants.py); "reader" may get
Secret ``a`` but not ``b``, ConfigMap ``settings``, PVC ``weights`` and ServiceAccount ``default``.
"""

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from egpu_api import keys
from egpu_api.fleet import load_fleet
from egpu_localcluster import LocalCluster
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client
from tests.e2e.conftest import e2e_operator
from tests.e2e.helpers import wait_for
from tests.e2e.tenants import (
    IDEPS,
    TENANT_NAMESPACE,
    Tenant,
    accepted,
    add_tenant,
    deployment,
    refusal,
    tenants_on_release,
    with_container,
)
from tests.unit.chart.helm import NAMESPACE, OPERATOR_SA, token_kubeconfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
READER = f"system:serviceaccount:{TENANT_NAMESPACE}:reader"


def readable(resource: str, *names: str) -> dict[str, Any]:
    return {"apiGroups": [""], "resources": [resource], "resourceNames": list(names), "verbs": ["get"]}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, dict[str, Tenant]]]:
    folder = tmp_path_factory.mktemp("tenants")
    # The CSI driver is allowed, so that only its nodePublishSecretRef decides.
    with tenants_on_release(folder, {"tenancy.allowedCSIDrivers": "{secrets-store.csi.k8s.io}"}) as (
        cluster,
        ideps_only,
        pod_creator,
    ):
        kube = cluster.kubectl
        for secret in ("a", "b"):
            kube.run("create", "secret", "generic", secret, "-n", TENANT_NAMESPACE, f"--from-literal=token={secret}")
        kube.run("create", "configmap", "settings", "-n", TENANT_NAMESPACE, "--from-literal=x=1")
        kube.run("create", "configmap", "other", "-n", TENANT_NAMESPACE, "--from-literal=x=2")
        rules = [
            IDEPS,
            readable("secrets", "a"),
            readable("configmaps", "settings"),
            readable("persistentvolumeclaims", "weights"),
            readable("serviceaccounts", "default"),
        ]
        reader = add_tenant(cluster, "reader", rules, folder)
        yield cluster, {"ideps-only": ideps_only, "pod-creator": pod_creator, "reader": reader}


@pytest.fixture(scope="module")
def tenants(release: tuple[LocalCluster, dict[str, Tenant]]) -> dict[str, Tenant]:
    return release[1]


def secret_volume(name: str) -> dict[str, Any]:
    return deployment("secret-volume", volumes=[{"name": "creds", "secret": {"secretName": name}}])


def test_tenants_have_the_rights_the_tests_assume(tenants: dict[str, Tenant]) -> None:
    assert not tenants["reader"].can_i("create", "pods")
    assert tenants["reader"].can_i("get", "secret/a")
    assert not tenants["reader"].can_i("get", "secret/b")
    assert tenants["pod-creator"].can_i("create", "pods")
    assert not tenants["pod-creator"].can_i("get", "secret/b")


def test_a_tenant_who_may_read_secret_a_but_not_b_gets_a_and_is_refused_b(tenants: dict[str, Tenant]) -> None:
    accepted(tenants["reader"].dry_run(secret_volume("a")))
    message = refusal(tenants["reader"].dry_run(secret_volume("b")))
    assert (
        f"spec.template.spec.volumes[creds].secret.secretName names Secret b, which {READER} may not get:"
        " the operator would hand it to the replica pods. Missing right: get secrets b in namespace team-a (or create pods there)"
    ) in message


def env_secret(name: str) -> dict[str, Any]:
    ref = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}}
    return with_container(deployment("env-secret"), env=[ref])


def env_from_secret(name: str) -> dict[str, Any]:
    return with_container(deployment("env-from-secret"), envFrom=[{"secretRef": {"name": name}}])


def init_env_secret(name: str) -> dict[str, Any]:
    ref = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}}
    return deployment("init-secret", initContainers=[{"name": "fetch", "image": "registry.example/fetch:1", "env": [ref]}])


def projected_secret(name: str) -> dict[str, Any]:
    return deployment("projected-secret", volumes=[{"name": "all", "projected": {"sources": [{"secret": {"name": name}}]}}])


def pull_secret(name: str) -> dict[str, Any]:
    return deployment("pull-secret", imagePullSecrets=[{"name": name}])


def csi_secret(name: str) -> dict[str, Any]:
    csi = {"driver": "secrets-store.csi.k8s.io", "nodePublishSecretRef": {"name": name}}
    return deployment("csi-secret", volumes=[{"name": "vault", "csi": csi}])


def config_map_volume(name: str) -> dict[str, Any]:
    return deployment("config-map", volumes=[{"name": "conf", "configMap": {"name": name}}])


def env_config_map(name: str) -> dict[str, Any]:
    ref = {"name": "X", "valueFrom": {"configMapKeyRef": {"name": name, "key": "x"}}}
    return with_container(deployment("env-config-map"), env=[ref])


def claim(name: str) -> dict[str, Any]:
    return deployment("claim", volumes=[{"name": "weights", "persistentVolumeClaim": {"claimName": name}}])


def service_account(name: str) -> dict[str, Any]:
    return deployment("service-account", serviceAccountName=name)


SPEC, SERVER = "spec.template.spec.", "spec.template.spec.containers[server]."
SECRET_B, CONFIG_MAP_OTHER = ("a", "b", "Secret b", "secrets b"), ("settings", "other", "ConfigMap other", "configmaps other")
#: How a template names an object, the names the reader may and may not get, the field and the object named.
REFERENCES: dict[str, tuple[Callable[[str], dict[str, Any]], tuple[str, str, str, str], str]] = {
    "env": (env_secret, SECRET_B, SERVER + "env[TOKEN].valueFrom.secretKeyRef.name"),
    "envFrom": (env_from_secret, SECRET_B, SERVER + "envFrom[].secretRef.name"),
    "initContainers": (init_env_secret, SECRET_B, SPEC + "initContainers[fetch].env[TOKEN].valueFrom.secretKeyRef.name"),
    "projected": (projected_secret, SECRET_B, SPEC + "volumes[all].projected.sources[].secret.name"),
    "imagePullSecrets": (pull_secret, SECRET_B, SPEC + "imagePullSecrets[].name"),
    "csi": (csi_secret, SECRET_B, SPEC + "volumes[vault].csi.nodePublishSecretRef.name"),
    "configMap": (config_map_volume, CONFIG_MAP_OTHER, SPEC + "volumes[conf].configMap.name"),
    "configMapKeyRef": (env_config_map, CONFIG_MAP_OTHER, SERVER + "env[X].valueFrom.configMapKeyRef.name"),
    "persistentVolumeClaim": (
        claim,
        ("weights", "scratch", "PersistentVolumeClaim scratch", "persistentvolumeclaims scratch"),
        SPEC + "volumes[weights].persistentVolumeClaim.claimName",
    ),
}


@pytest.mark.parametrize("how", list(REFERENCES))
def test_every_reference_must_be_readable_by_the_requester(tenants: dict[str, Tenant], how: str) -> None:
    manifest, (readable_name, unreadable_name, named, missing), field = REFERENCES[how]
    accepted(tenants["reader"].dry_run(manifest(readable_name)))
    message = refusal(tenants["reader"].dry_run(manifest(unreadable_name)))
    assert f"{field} names {named}, which {READER} may not get" in message
    assert f"Missing right: get {missing} in namespace {TENANT_NAMESPACE}" in message
    # A user who may create pods could mount it in a pod of its own: it is not asked.
    accepted(tenants["pod-creator"].dry_run(manifest(unreadable_name)))


def test_a_service_account_must_be_readable_too(tenants: dict[str, Tenant]) -> None:
    accepted(tenants["reader"].dry_run(service_account("default")))
    message = refusal(tenants["ideps-only"].dry_run(service_account("default")))
    assert "spec.template.spec.serviceAccountName names ServiceAccount default" in message
    assert "Missing right: get serviceaccounts default" in message
    # Unset is the namespace default, which every pod of the namespace gets: not a reference.
    accepted(tenants["ideps-only"].dry_run(deployment("plain")))


def test_an_update_that_adds_an_unreadable_secret_is_refused(tenants: dict[str, Tenant]) -> None:
    reader = tenants["reader"]
    accepted(reader.run("create", "-f", "-", manifest=secret_volume("a")))
    try:
        patch = '{"spec": {"template": {"spec": {"volumes": [{"name": "creds", "secret": {"secretName": "b"}}]}}}}'
        message = refusal(reader.run("patch", "inferencedeployment", "secret-volume", "--type=merge", "-p", patch))
        assert "names Secret b" in message
        # An update that leaves the template alone passes, whoever sends it.
        accepted(tenants["ideps-only"].run("label", "inferencedeployment", "secret-volume", "team=ml"))
    finally:
        accepted(reader.run("delete", "inferencedeployment", "secret-volume"))


def test_more_references_than_the_authorizer_budget_are_refused(tenants: dict[str, Tenant]) -> None:
    volumes = [{"name": f"v{i}", "secret": {"secretName": f"s{i}"}} for i in range(17)]
    message = refusal(tenants["reader"].dry_run(deployment("many", volumes=volumes)))
    assert "spec.template.spec names 17 Secrets, ConfigMaps, PersistentVolumeClaims and ServiceAccounts" in message
    assert "may name at most 16" in message


def test_what_env_from_a_readable_config_map_holds_is_not_seen(tenants: dict[str, Tenant]) -> None:
    """SECURITY.md: admission sees names, not the keys a ConfigMap or Secret holds, so envFrom of one
    the tenant may read is accepted whatever variables it sets (NVIDIA_VISIBLE_DEVICES included)."""
    manifest = with_container(deployment("env-from"), envFrom=[{"configMapRef": {"name": "settings"}}])
    accepted(tenants["reader"].dry_run(manifest))


def test_the_operator_runs_the_replica_with_the_secret_its_requester_may_read(
    release: tuple[LocalCluster, dict[str, Tenant]], tmp_path: Path
) -> None:
    """The whole path: the reader's InferenceDeployment that mounts Secret a is placed by the
    operator running with its own (fenced) ServiceAccount token, and the replica pod mounts a."""
    cluster, tenants = release
    kube = cluster.kubectl
    manifest = secret_volume("a")
    manifest["metadata"]["name"] = "reads-a"
    manifest["spec"]["replicas"] = 1
    del manifest["spec"]["power"]  # no power finalizer: the object goes once the operator has stopped
    accepted(tenants["reader"].run("create", "-f", "-", manifest=manifest))
    operator = e2e_operator(token_kubeconfig(kube, OPERATOR_SA, tmp_path / "operator.kubeconfig"), tmp_path / "operator.log")
    try:
        with tempfile.TemporaryDirectory(prefix="egpu-tenant-sysfs-") as sysfs:
            simulator = FleetSimulator(load_fleet(), api_client(kube.kubeconfig), NAMESPACE, Path(sysfs), poll_interval_s=1.0)
            simulator.start()
            operator.start()
            try:
                selector = f"{keys.DEPLOYMENT_LABEL}=reads-a"
                pods = wait_for(
                    lambda: kube.get_json("pods", "-n", TENANT_NAMESPACE, "-l", selector)["items"] or None,
                    timeout_s=60,
                    what="the replica pod of reads-a",
                )
            finally:
                operator.stop()
                simulator.stop()
        assert {"name": "creds", "secret": {"secretName": "a", "defaultMode": 420}} in pods[0]["spec"]["volumes"]
        refused = [line for line in operator.log.read_text().splitlines() if "Forbidden" in line or " 403" in line]
        assert refused == [], "the operator was refused:\n" + "\n".join(refused)
    finally:
        accepted(tenants["reader"].run("delete", "inferencedeployment", "reads-a", "--wait=false"))
