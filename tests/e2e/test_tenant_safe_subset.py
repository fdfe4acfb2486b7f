"""A user who may not create pods is held to a safe subset of the pod template: no hostAliases, no
custom DNS, only configMap, secret, persistentVolumeClaim, emptyDir, projected and downwardAPI
volumes (CSI inline and generic ephemeral volumes only as the chart allows), projected tokens only
for allowed audiences. Each is refused naming the field, and the same manifest is accepted for a
user who may create pods (real ServiceAccount tokens, tests/e2e/tenants.py)."""

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.tenants import TENANT_NAMESPACE, Tenant, accepted, deployment, refusal, tenants_on_release

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
NOT_A_POD_CREATOR = (
    f" is not allowed for system:serviceaccount:{TENANT_NAMESPACE}:ideps-only, who may not create pods in namespace"
    f" {TENANT_NAMESPACE} (the operator would create them for it)"
)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Tenant]]:
    with tenants_on_release(tmp_path_factory.mktemp("tenants")) as (_, ideps_only, pod_creator):
        yield {"ideps-only": ideps_only, "pod-creator": pod_creator}


def token(audience: str | None) -> dict[str, Any]:
    source = {"path": "token", **({"audience": audience} if audience else {})}
    return {"name": "token", "projected": {"sources": [{"serviceAccountToken": source}]}}


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "hostAliases": ({"hostAliases": [{"ip": "10.0.0.9", "hostnames": ["vault.internal"]}]}, "spec.template.spec.hostAliases"),
    "dnsConfig": ({"dnsConfig": {"nameservers": ["10.0.0.53"]}}, "spec.template.spec.dnsConfig"),
    "dnsPolicy": ({"dnsPolicy": "None"}, "spec.template.spec.dnsPolicy None"),
    "csi": (
        {
            "volumes": [
                {"name": "vault", "csi": {"driver": "secrets-store.csi.k8s.io", "volumeAttributes": {"secretProviderClass": "x"}}}
            ]
        },
        "spec.template.spec.volumes[vault] (csi)",
    ),
    "ephemeral": (
        {
            "volumes": [
                {
                    "name": "scratch",
                    "ephemeral": {
                        "volumeClaimTemplate": {
                            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "100Gi"}}}
                        }
                    },
                }
            ]
        },
        "spec.template.spec.volumes[scratch] (ephemeral)",
    ),
    "nfs": (
        {"volumes": [{"name": "share", "nfs": {"server": "10.0.0.2", "path": "/"}}]},
        "spec.template.spec.volumes[share] (nfs)",
    ),
    "audience": (
        {"volumes": [token("vault")]},
        "spec.template.spec.volumes[token].projected.sources[].serviceAccountToken.audience vault",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_for_a_tenant_and_accepted_for_a_pod_creator(tenants: dict[str, Tenant], case: str) -> None:
    fields, field = CASES[case]
    message = refusal(tenants["ideps-only"].dry_run(deployment(case.lower(), **fields)))
    assert field + NOT_A_POD_CREATOR in message
    accepted(tenants["pod-creator"].dry_run(deployment(case.lower(), **fields)))


def test_the_safe_subset_itself_is_accepted_for_a_tenant(tenants: dict[str, Tenant]) -> None:
    volumes = [
        {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        token(None),
    ]
    accepted(tenants["ideps-only"].dry_run(deployment("safe", volumes=volumes, dnsPolicy="ClusterFirst")))
