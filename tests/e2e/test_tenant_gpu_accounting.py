"""Nobody gets more GPU than placement counted: the variables that pick the GPUs a container sees,
extended resources in the template, a RuntimeClass outside tenancy.allowedRuntimeClasses and
tolerations of taint keys outside tenancy.allowedTolerationKeys are refused for every user, the one
who may create pods included (real ServiceAccount tokens, tests/e2e/tenants.py)."""

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.tenants import Tenant, accepted, deployment, refusal, tenants_on_release, with_container

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
GPU_ENV = ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VISIBLE_DEVICES", "NVIDIA_MIG_CONFIG_DEVICES",
           "NVIDIA_MIG_MONITOR_DEVICES"]  # fmt: skip
EVERYONE = ["ideps-only", "pod-creator"]


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Tenant]]:
    with tenants_on_release(tmp_path_factory.mktemp("tenants")) as (_, ideps_only, pod_creator):
        yield {"ideps-only": ideps_only, "pod-creator": pod_creator}


@pytest.mark.parametrize("who", EVERYONE)
@pytest.mark.parametrize("variable", GPU_ENV)
def test_gpu_selection_variables_are_refused(tenants: dict[str, Tenant], who: str, variable: str) -> None:
    manifest = with_container(deployment("all-gpus"), env=[{"name": variable, "value": "all"}])
    message = refusal(tenants[who].dry_run(manifest))
    assert f"spec.template.spec.containers[server].env {variable} is not allowed: the device plugin picks the GPU" in message


@pytest.mark.parametrize("who", EVERYONE)
def test_gpu_selection_variables_in_init_containers_are_refused(tenants: dict[str, Tenant], who: str) -> None:
    init = {"name": "warm", "image": "registry.example/warm:1", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}
    message = refusal(tenants[who].dry_run(deployment("init-gpus", initContainers=[init])))
    assert "spec.template.spec.initContainers[warm].env NVIDIA_VISIBLE_DEVICES is not allowed" in message


@pytest.mark.parametrize("who", EVERYONE)
def test_the_nvidia_runtime_class_is_allowed_and_others_are_refused(tenants: dict[str, Tenant], who: str) -> None:
    accepted(tenants[who].dry_run(deployment("nvidia", runtimeClassName="nvidia")))
    message = refusal(tenants[who].dry_run(deployment("kata", runtimeClassName="kata-gpu")))
    assert (
        "spec.template.spec.runtimeClassName kata-gpu is not allowed: allowed RuntimeClasses are nvidia"
        " (chart value tenancy.allowedRuntimeClasses)"
    ) in message


@pytest.mark.parametrize("who", EVERYONE)
@pytest.mark.parametrize("kind", ["limits", "requests"])
def test_extended_resources_in_the_template_are_refused(tenants: dict[str, Tenant], who: str, kind: str) -> None:
    for resource in ("nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "example.com/fpga"):
        manifest = with_container(deployment("more-gpus"), resources={kind: {resource: "4"}})
        message = refusal(tenants[who].dry_run(manifest))
        assert (
            f"spec.template.spec.containers[server].resources.{kind} {resource} is not allowed: the operator sets the GPU request"
            in message
        )
    accepted(tenants[who].dry_run(with_container(deployment("cpu"), resources={kind: {"cpu": "2", "memory": "8Gi"}})))


def toleration(key: str | None, operator: str = "Exists") -> dict[str, Any]:
    return {"operator": operator, "effect": "NoSchedule", **({"key": key} if key is not None else {})}


def placement_tolerations(*tolerations: dict[str, Any]) -> dict[str, Any]:
    manifest = deployment("placement-tolerations")
    manifest["spec"]["placement"]["tolerations"] = list(tolerations)
    return manifest


@pytest.mark.parametrize("who", EVERYONE)
def test_a_toleration_of_every_taint_is_refused(tenants: dict[str, Tenant], who: str) -> None:
    message = refusal(tenants[who].dry_run(deployment("everywhere", tolerations=[toleration(None)])))
    assert (
        'spec.template.spec.tolerations key "" is not allowed: replicas may tolerate only taints with the keys nvidia.com/gpu'
        " (chart value tenancy.allowedTolerationKeys); a toleration without a key tolerates every taint"
    ) in message
    message = refusal(tenants[who].dry_run(placement_tolerations(toleration(None))))
    assert 'spec.placement.tolerations key "" is not allowed' in message


@pytest.mark.parametrize("who", EVERYONE)
def test_a_toleration_of_a_reserved_pool_is_refused_and_the_gpu_taint_allowed(tenants: dict[str, Tenant], who: str) -> None:
    reserved = toleration("pool.example.com/reserved", "Equal") | {"value": "team-b"}
    message = refusal(tenants[who].dry_run(placement_tolerations(reserved)))
    assert 'spec.placement.tolerations key "pool.example.com/reserved" is not allowed' in message
    accepted(tenants[who].dry_run(placement_tolerations(toleration("nvidia.com/gpu"))))
    accepted(tenants[who].dry_run(deployment("gpu-taint", tolerations=[toleration("nvidia.com/gpu")])))


def test_an_update_may_not_add_what_a_create_may_not_but_may_leave_the_template_alone(tenants: dict[str, Tenant]) -> None:
    pod_creator = tenants["pod-creator"]
    accepted(pod_creator.run("create", "-f", "-", manifest=deployment("updated")))
    try:
        patch = '{"spec": {"placement": {"tolerations": [{"operator": "Exists"}]}}}'
        message = refusal(pod_creator.run("patch", "inferencedeployment", "updated", "--type=merge", "-p", patch))
        assert 'spec.placement.tolerations key "" is not allowed' in message
        accepted(pod_creator.run("label", "inferencedeployment", "updated", "team=ml"))
    finally:
        accepted(pod_creator.run("delete", "inferencedeployment", "updated"))


@pytest.mark.parametrize("who", EVERYONE)
def test_dynamic_resource_allocation_claims_are_refused(tenants: dict[str, Tenant], who: str) -> None:
    claims = [{"name": "gpus", "resourceClaimTemplateName": "eight-gpus"}]
    message = refusal(tenants[who].dry_run(deployment("dra", resourceClaims=claims)))
    assert "spec.template.spec.resourceClaims is not allowed: a replica's GPU comes from the device plugin" in message
