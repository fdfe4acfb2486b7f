"""The chart's ValidatingAdmissionPolicies as rendered: who they match, what gates them, and the
keys, names and lists they hold, checked against the code that writes those objects. What the API
server makes of them is in tests/e2e/test_helm_own_node_policy.py and test_helm_tenant_policy.py."""

import json
import re
from typing import Any

import pytest

from egpu_api import keys
from egpu_operator.drain import MAINTENANCE_LABEL
from egpu_operator.power import OWNERS_ANNOTATION
from tests.unit.chart.helm import AGENT_SA, NAMESPACE, OPERATOR_SA, find, render

AGENT_USER = f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_SA}"
OWN_NODE, OWN_LEASE_AND_EVENTS = f"{AGENT_SA}-own-node", f"{AGENT_SA}-own-lease-and-events"
TENANT, REQUESTER = "egpu-operator-tenant-allow-lists", "egpu-operator-tenant-requester-rights"
FENCE = f"{OPERATOR_SA}-fence"
FENCE_NAMESPACES = f"{FENCE}-namespaces"


def policies(values: dict[str, str] | None = None, *args: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in render(values, *args) if o["kind"] == "ValidatingAdmissionPolicy"}


def variable(policy: dict[str, Any], name: str) -> str:
    expression: str = next(v["expression"] for v in policy["spec"]["variables"] if v["name"] == name)
    return expression


def rules(policy: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (group, resource, tuple(rule["operations"]))
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    ]


def test_every_policy_has_a_denying_binding() -> None:
    objects = render()
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "ValidatingAdmissionPolicy"}
    assert names == {OWN_NODE, OWN_LEASE_AND_EVENTS, TENANT, REQUESTER, FENCE, FENCE_NAMESPACES}
    for name in names - {FENCE_NAMESPACES}:
        binding = find(objects, "ValidatingAdmissionPolicyBinding", name)
        assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}
        assert find(objects, "ValidatingAdmissionPolicy", name)["spec"]["failurePolicy"] == "Fail"


@pytest.mark.parametrize("name", [OWN_NODE, OWN_LEASE_AND_EVENTS])
def test_agent_policies_match_only_the_agent_service_account(name: str) -> None:
    conditions = policies()[name]["spec"]["matchConditions"]
    assert conditions == [{"name": "node-agent-only", "expression": f'request.userInfo.username == "{AGENT_USER}"'}]


@pytest.mark.parametrize("values", [{"agent.ownNodePolicy.enabled": "false"}, {"agent.enabled": "false"}])
def test_agent_policies_are_gated(values: dict[str, str]) -> None:
    assert set(policies(values)) == {TENANT, REQUESTER, FENCE, FENCE_NAMESPACES}


def test_the_operator_creates_replicas_only_where_an_inference_deployment_is() -> None:
    """The binding's params are the InferenceDeployments of the request's namespace; none is a denial."""
    objects = render()
    policy = find(objects, "ValidatingAdmissionPolicy", FENCE_NAMESPACES)["spec"]
    assert policy["paramKind"] == {"apiVersion": "egpu-operator.io/v1alpha1", "kind": "InferenceDeployment"}
    assert rules({"spec": policy}) == [("", "pods", ("CREATE",)), ("resource.k8s.io", "resourceclaims", ("CREATE",))]
    assert policy["matchConditions"][0]["expression"] == f'request.userInfo.username == "{OPERATOR_USER}"'
    binding = find(objects, "ValidatingAdmissionPolicyBinding", FENCE_NAMESPACES)["spec"]
    assert binding["validationActions"] == ["Deny"]
    assert binding["paramRef"] == {"selector": {}, "parameterNotFoundAction": "Deny"}, "no namespace: the request's own"
    # Params are looked for before matchConditions: the binding itself is narrowed to replica-labelled objects.
    selector = binding["matchResources"]["objectSelector"]["matchExpressions"]
    assert selector == [{"key": "egpu-operator.io/inference-deployment", "operator": "Exists"}]
    (outside,) = binding["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert outside["operator"] == "NotIn"
    assert set(outside["values"]) == {NAMESPACE, "kube-system", "kube-public", "kube-node-lease"}


def test_agent_policies_cover_its_node_lease_and_events() -> None:
    rendered = policies()
    writes = ("CREATE", "UPDATE", "DELETE")
    assert rules(rendered[OWN_NODE]) == [("", "nodes", writes), ("", "nodes/status", writes)]
    assert rules(rendered[OWN_LEASE_AND_EVENTS]) == [("coordination.k8s.io", "leases", writes), ("", "events", writes)]


def test_the_only_lease_allowed_is_named_as_the_agent_names_it() -> None:
    assert variable(policies()[OWN_LEASE_AND_EVENTS], "ownLease") == f"'{keys.AGENT_LEASE_PREFIX}' + variables.boundNode"


def test_operator_owned_keys_are_the_operators_and_none_the_agent_writes() -> None:
    lists = re.findall(r"\[[^\[\]]*\]\.filter", variable(policies()[OWN_NODE], "operatorKeys"))
    labels, annotations = (json.loads(found.removesuffix(".filter")) for found in lists)
    assert labels == [MAINTENANCE_LABEL]
    assert annotations == [keys.POWER_REQUEST_ANNOTATION, OWNERS_ANNOTATION]
    # What publisher.py writes: the labels it owns, the per-GPU JSON, the power-limit status and
    # which GPU each pod got.
    assert not set(labels) & keys.NODE_AGENT_LABELS
    assert not set(annotations) & {keys.GPUS_ANNOTATION, keys.POWER_STATUS_ANNOTATION, keys.GPU_ASSIGNMENTS_ANNOTATION}


@pytest.mark.parametrize("name", [TENANT, REQUESTER])
def test_tenant_policies_apply_to_every_user_on_inference_deployment_writes(name: str) -> None:
    policy = policies()[name]
    assert rules(policy) == [("egpu-operator.io", "inferencedeployments", ("CREATE", "UPDATE"))]
    assert "matchConditions" not in policy["spec"]
    assert policy["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    assert set(policies({"tenancy.policy.enabled": "false"})) == {OWN_NODE, OWN_LEASE_AND_EVENTS, FENCE, FENCE_NAMESPACES}


def validation(policy: dict[str, Any], field: str) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in policy["spec"]["validations"] if f"variables.{field} ==" in v["expression"])
    return found


@pytest.mark.parametrize(
    ("values", "accounts", "classes"),
    [
        ({}, ["default"], []),
        ({"tenancy.allowedServiceAccounts": "{default,inference}", "tenancy.allowedPriorityClasses": "{batch}"},
         ["default", "inference"], ["batch"]),
    ],
    ids=["defaults", "configured"],
)  # fmt: skip
def test_allow_lists_are_rendered_into_expressions_and_messages(
    values: dict[str, str], accounts: list[str], classes: list[str]
) -> None:
    policy = policies(values)[TENANT]
    for field, allowed in (("serviceAccountName", accounts), ("serviceAccount", accounts), ("priorityClassName", classes)):
        rule = validation(policy, field)
        assert f"variables.{field} in {json.dumps(allowed, separators=(',', ':'))}" in rule["expression"]
        assert f"spec.template.spec.{field} " in rule["messageExpression"]
        assert f"are {', '.join(allowed) or 'none'}' + ' (chart value tenancy.allowed" in rule["messageExpression"]


def test_fields_are_read_with_optional_access_so_an_open_template_schema_works() -> None:
    policy = policies()[TENANT]
    for field in ("serviceAccountName", "serviceAccount", "priorityClassName"):
        assert variable(policy, field) == f"object.spec.?template.?spec.?{field}.orValue('')"


GPU_ENV = ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VISIBLE_DEVICES", "NVIDIA_MIG_CONFIG_DEVICES",
           "NVIDIA_MIG_MONITOR_DEVICES"]  # fmt: skip


def test_gpu_rules_hold_the_variables_the_nvidia_runtime_reads() -> None:
    assert json.dumps(GPU_ENV, separators=(",", ":")) in variable(policies()[TENANT], "gpuEnv")
    env_rule = next(v for v in policies()[FENCE]["spec"]["validations"] if "variables.containers.exists" in v["expression"])
    assert json.dumps(GPU_ENV, separators=(",", ":")) in env_rule["expression"]


@pytest.mark.parametrize(
    ("values", "runtime_classes", "toleration_keys"),
    [
        ({}, ["nvidia"], ["nvidia.com/gpu"]),
        ({"tenancy.allowedRuntimeClasses": "null", "tenancy.allowedTolerationKeys": "{nvidia.com/gpu,pool.example.com/ml}"},
         [], ["nvidia.com/gpu", "pool.example.com/ml"]),
    ],
    ids=["defaults", "configured"],
)  # fmt: skip
def test_gpu_allow_lists_are_rendered(values: dict[str, str], runtime_classes: list[str], toleration_keys: list[str]) -> None:
    policy = policies(values)[TENANT]
    runtime = validation(policy, "runtimeClassName")
    assert f"variables.runtimeClassName in {json.dumps(runtime_classes, separators=(',', ':'))}" in runtime["expression"]
    assert (
        f"allowed RuntimeClasses are {', '.join(runtime_classes) or 'none'}' + ' (chart value tenancy.allowedRuntimeClasses)"
        in (runtime["messageExpression"])
    )
    assert variable(policy, "foreignTolerations").count(f"in {json.dumps(toleration_keys, separators=(',', ':'))}") == 2


def test_requester_policy_asks_the_authorizer_once_per_object_within_the_cel_budget() -> None:
    policy = policies()[REQUESTER]
    checks = [v for v in policy["spec"]["variables"] if ".check('get')" in v["expression"]]
    assert [v["name"] for v in checks] == [f"unreadable{i}" for i in range(16)]
    # An authorizer check costs 350,000: at most two per expression (1,000,000), and all of them
    # with the pods check within a policy's 10,000,000.
    assert all(v["expression"].count(".check(") == 1 for v in checks)
    assert (len(checks) + 1) * 350_000 <= 10_000_000
    assert "resource('pods').namespace(request.namespace).check('create')" in variable(policy, "heldToSubset")
    # A message expression cannot ask the authorizer: each check has a validation of its own, whose
    # message reads only which object it checked.
    denials = [v for v in policy["spec"]["validations"] if v["expression"].startswith("!variables.unreadable")]
    assert [v["expression"] for v in denials] == [f"!variables.unreadable{i}" for i in range(16)]
    assert all("unreadable" not in v["messageExpression"] and "authorizer" not in v["messageExpression"] for v in denials)


def test_requester_policy_renders_the_volume_allowances() -> None:
    default = variable(policies()[REQUESTER], "foreignVolumes")
    assert "string(v.csi.?driver.orValue('')) in []" in default
    assert "(k == 'ephemeral' && false)" in default
    values = {"tenancy.allowedCSIDrivers": "{secrets-store.csi.k8s.io}", "tenancy.allowEphemeralVolumes": "true"}
    configured = variable(policies(values)[REQUESTER], "foreignVolumes")
    assert 'in ["secrets-store.csi.k8s.io"]' in configured
    assert "(k == 'ephemeral' && true)" in configured
    audiences = variable(policies({"tenancy.allowedTokenAudiences": "{vault}"})[REQUESTER], "foreignAudiences")
    assert 'in ["vault"]' in audiences


def test_fence_matches_only_the_operator_service_account() -> None:
    policy = policies()[FENCE]
    assert policy["spec"]["matchConditions"] == [
        {"name": "operator-only", "expression": f'request.userInfo.username == "{OPERATOR_USER}"'}
    ]
    assert rules(policy) == [
        ("", "pods", ("CREATE", "DELETE")),
        ("", "services", ("CREATE", "UPDATE", "DELETE")),
        ("policy", "poddisruptionbudgets", ("CREATE", "UPDATE", "DELETE")),
        ("", "nodes", ("CREATE", "UPDATE", "DELETE")),
        ("resource.k8s.io", "resourceclaims", ("CREATE", "DELETE")),
    ]
    assert FENCE not in policies({"operator.fencePolicy.enabled": "false"})


def test_fence_names_the_replica_labels_and_the_namespaces_replicas_never_use() -> None:
    expressions = " ".join(v["expression"] for v in policies()[FENCE]["spec"]["validations"])
    assert f"variables.labels[?'{keys.DEPLOYMENT_LABEL}']" in expressions
    assert f"variables.labels[?'{keys.REPLICA_LABEL}']" in expressions
    assert json.dumps([NAMESPACE, "kube-system", "kube-public", "kube-node-lease"], separators=(",", ":")) in expressions
    assert f"startsWith('{keys.PREFIX}')" in expressions


def test_fence_allows_the_tolerations_kubernetes_adds_to_every_pod() -> None:
    tolerations = variable(policies({"tenancy.allowedTolerationKeys": "{pool.example.com/ml}"})[FENCE], "foreignTolerations")
    assert '["pool.example.com/ml","node.kubernetes.io/not-ready","node.kubernetes.io/unreachable"]' in tolerations
    # One GPU in each form placement chooses: the contract's names, as keys.is_gpu_resource reads them.
    extra = variable(policies()[FENCE], "extraResources")
    assert (
        f"r == '{keys.GPU_RESOURCE}' || r in [\"{keys.SHARED_GPU_RESOURCE}\"] || r.startsWith('{keys.MIG_RESOURCE_PREFIX}')"
        in extra
    )
    renamed = variable(policies({"operator.gpuResources.sharedGpuResources": "{nvidia.com/gpu-ts}"})[FENCE], "extraResources")
    assert 'r in ["nvidia.com/gpu-ts"]' in renamed
