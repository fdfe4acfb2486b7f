"""agent.namespace: the node agent, and everything that names its namespace, in a namespace of its own.

Power actuation runs the agent as root with CAP_SYS_ADMIN, which Pod Security admits only at
"privileged"; in a namespace of its own it leaves the release namespace, where the operator runs,
at "restricted" (tests/e2e/test_helm_agent_namespace.py installs it so).
"""

import json
from typing import Any

import pytest

from tests.unit.chart.helm import AGENT_SA, CHART, NAMESPACE, OPERATOR_SA, RELEASE, find, helm, render, set_args

AGENTS = "egpu-agents"
POWER = {"agent.powerActuation.enabled": "true", "agent.namespace": AGENTS}
#: Every namespaced object of the agent, by (kind, name), with the fleet ConfigMap and ServiceMonitor switched on.
AGENT_OBJECTS = {
    ("DaemonSet", AGENT_SA), ("ServiceAccount", AGENT_SA), ("Role", AGENT_SA), ("RoleBinding", AGENT_SA),
    ("Service", f"{AGENT_SA}-metrics"), ("ServiceMonitor", AGENT_SA), ("ConfigMap", f"{AGENT_SA}-fleet"),
}  # fmt: skip
EVERYTHING = {"agent.backend": "fake", "agent.fleetProfile": "nodes: []", "metrics.serviceMonitor.enabled": "true"}


def namespaces(objects: list[dict[str, Any]]) -> dict[tuple[str, str], str | None]:
    return {(o["kind"], o["metadata"]["name"]): o["metadata"].get("namespace") for o in objects}


def operator_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value") for item in container["env"]}


def test_by_default_the_agent_shares_the_release_namespace() -> None:
    objects = render(EVERYTHING)
    placed = namespaces(objects)
    assert {placed[key] for key in AGENT_OBJECTS} == {NAMESPACE}
    assert operator_env(objects)["EGPU_OPERATOR_AGENT_NAMESPACE"] == NAMESPACE
    assert not any(o["kind"] == "Namespace" for o in objects)


def test_everything_that_names_the_agents_namespace_follows_it() -> None:
    objects = render({**EVERYTHING, "agent.namespace": AGENTS})
    placed = namespaces(objects)
    assert {placed[key] for key in AGENT_OBJECTS} == {AGENTS}
    # The operator and its own objects stay where the release is.
    for key in [("Deployment", RELEASE), ("ServiceAccount", OPERATOR_SA), ("Service", f"{RELEASE}-metrics"),
                ("ServiceMonitor", RELEASE)]:  # fmt: skip
        assert placed[key] == NAMESPACE, key
    # The operator counts Leases only in the agent's namespace, and may watch them only there.
    assert operator_env(objects)["EGPU_OPERATOR_AGENT_NAMESPACE"] == AGENTS
    assert placed[("Role", f"{RELEASE}-agent-leases")] == AGENTS
    assert placed[("RoleBinding", f"{RELEASE}-agent-leases")] == AGENTS
    operator = {"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": NAMESPACE}
    assert find(objects, "RoleBinding", f"{RELEASE}-agent-leases")["subjects"] == [operator]
    agent = {"kind": "ServiceAccount", "name": AGENT_SA, "namespace": AGENTS}
    for kind, name in [("ClusterRoleBinding", AGENT_SA), ("RoleBinding", AGENT_SA), ("RoleBinding", f"{AGENT_SA}-node-events")]:
        assert find(objects, kind, name)["subjects"] == [agent], (kind, name)
    assert find(objects, "RoleBinding", f"{AGENT_SA}-node-events")["metadata"]["namespace"] == "default"
    # The agent's admission policies match its tokens by user name, which holds the namespace.
    username = f"system:serviceaccount:{AGENTS}:{AGENT_SA}"
    for policy in (f"{AGENT_SA}-own-node", f"{AGENT_SA}-own-lease-and-events"):
        conditions = find(objects, "ValidatingAdmissionPolicy", policy)["spec"]["matchConditions"]
        assert [c["expression"] for c in conditions] == [f'request.userInfo.username == "{username}"'], policy
    assert not any(o["kind"] == "Namespace" for o in objects)


def test_power_actuation_in_the_release_namespace_is_refused_naming_the_fix() -> None:
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", "agent.powerActuation.enabled=true",
                  check=False)  # fmt: skip
    assert result.returncode != 0
    assert "set agent.namespace to a namespace of its own" in result.stderr
    assert "agent.createNamespace=true" in result.stderr
    # Naming the release namespace explicitly is the same thing.
    same = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                *set_args({**POWER, "agent.namespace": NAMESPACE}), check=False)  # fmt: skip
    assert same.returncode != 0


@pytest.mark.parametrize(
    ("values", "level"),
    [
        (POWER, "privileged"),  # root with CAP_SYS_ADMIN, and the PodResources hostPath
        ({"agent.namespace": AGENTS}, "restricted"),  # the read-only agent
        ({"agent.namespace": AGENTS, "agent.modelCache.hostPath": "/srv/models", "agent.modelCache.probe": "true"}, "privileged"),
    ],
    ids=["power", "read-only", "model-cache-probe"],
)
def test_a_created_agent_namespace_carries_the_pod_security_level_the_agent_needs(values: dict[str, str], level: str) -> None:
    namespace = find(render({**values, "agent.createNamespace": "true"}), "Namespace")
    assert namespace["metadata"]["name"] == AGENTS
    labels = namespace["metadata"]["labels"]
    assert {key: labels[key] for key in labels if key.startswith("pod-security")} == {
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/warn": level,
        "pod-security.kubernetes.io/audit": level,
    }
    assert labels["app.kubernetes.io/component"] == "node-agent"


def test_creating_the_release_namespace_is_refused() -> None:
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", "agent.createNamespace=true", check=False)
    assert result.returncode != 0
    assert "agent.createNamespace=true needs agent.namespace" in result.stderr


def test_the_schema_refuses_a_name_that_is_no_namespace() -> None:
    result = helm("template", RELEASE, str(CHART), "--set", "agent.namespace=GPU_Agents", check=False)
    assert result.returncode != 0
    assert "/agent/namespace" in result.stderr


def test_notes_point_at_the_agents_namespace() -> None:
    notes = helm("install", "--dry-run=client", RELEASE, str(CHART), "--namespace", NAMESPACE, *set_args(POWER)).stdout
    assert f"kubectl -n {AGENTS} get daemonset {AGENT_SA}" in notes
    assert f"Service {AGENT_SA}-metrics.{AGENTS}.svc:9400" in notes
    assert f"kubectl -n {NAMESPACE} get deployment {RELEASE}" in notes
    read_only = helm("install", "--dry-run=client", RELEASE, str(CHART), "--namespace", NAMESPACE).stdout
    assert "agent.powerActuation.enabled=true,agent.namespace=<its own namespace>" in read_only


def test_the_operators_fence_keeps_replicas_out_of_the_agents_namespace() -> None:
    """With power actuation the agent's namespace is at "privileged": the operator's token may not create pods there."""
    fence = find(render(POWER), "ValidatingAdmissionPolicy", f"{RELEASE}-fence")
    expressions = " ".join(v["expression"] for v in fence["spec"]["validations"])
    assert json.dumps([NAMESPACE, AGENTS, "kube-system", "kube-public", "kube-node-lease"], separators=(",", ":")) in expressions
