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
from tests.unit.chart.helm import AGENT_SA, NAMESPACE, find, render

AGENT_USER = f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}"
OWN_NODE, OWN_LEASE_AND_EVENTS = f"{AGENT_SA}-own-node", f"{AGENT_SA}-own-lease-and-events"
TENANT = "egpu-operator-tenant-allow-lists"


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
    assert names == {OWN_NODE, OWN_LEASE_AND_EVENTS, TENANT}
    for name in names:
        binding = find(objects, "ValidatingAdmissionPolicyBinding", name)
        assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}
        assert find(objects, "ValidatingAdmissionPolicy", name)["spec"]["failurePolicy"] == "Fail"


@pytest.mark.parametrize("name", [OWN_NODE, OWN_LEASE_AND_EVENTS])
def test_agent_policies_match_only_the_agent_service_account(name: str) -> None:
    conditions = policies()[name]["spec"]["matchConditions"]
    assert conditions == [{"name": "node-agent-only", "expression": f'request.userInfo.username == "{AGENT_USER}"'}]


@pytest.mark.parametrize("values", [{"agent.ownNodePolicy.enabled": "false"}, {"agent.enabled": "false"}])
def test_agent_policies_are_gated(values: dict[str, str]) -> None:
    assert set(policies(values)) == {TENANT}


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


def test_tenant_policy_applies_to_every_user_on_inference_deployment_writes() -> None:
    policy = policies()[TENANT]
    assert rules(policy) == [("egpu-operator.io", "inferencedeployments", ("CREATE", "UPDATE"))]
    assert "matchConditions" not in policy["spec"]
    assert policy["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    assert TENANT not in policies({"tenancy.policy.enabled": "false"})


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
