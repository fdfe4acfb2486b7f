"""What the important values change in the rendered objects."""

from typing import Any

import pytest

from egpu_api import keys
from tests.unit.chart.helm import AGENT_SA, OPERATOR_SA, find, render

#: Power actuation, which needs the agent in a namespace of its own (test_agent_namespace.py).
POWER = {"agent.powerActuation.enabled": "true", "agent.namespace": "egpu-agents"}


def agent_pod(values: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = find(render(values), "DaemonSet")["spec"]["template"]["spec"]
    return spec


def operator_pod(values: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = find(render(values), "Deployment")["spec"]["template"]["spec"]
    return spec


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_operator_is_two_replicas_rolled_with_a_warm_follower() -> None:
    deployment = find(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert find(render({"operator.replicas": "3"}), "Deployment")["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["egpu-operator"]
    assert container["args"] == ["run", "--metrics-port=8080"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]


def test_operator_leader_election_settings_come_from_values() -> None:
    defaults = env(operator_pod()["containers"][0])
    assert defaults["EGPU_OPERATOR_LEADER_ELECTION_NAMESPACE"] == "egpu-system"
    assert defaults["EGPU_OPERATOR_LEADER_ELECTION_LEASE_NAME"] == "egpu-operator"
    assert defaults["EGPU_OPERATOR_LEADER_ELECTION_IDENTITY"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    timing = ("LEASE_DURATION", "RENEW_DEADLINE", "RETRY_PERIOD")
    assert [defaults[f"EGPU_OPERATOR_LEADER_{name}_SECONDS"] for name in timing] == ["15", "10", "2"]
    changed = env(operator_pod({"operator.leaderElection.leaseDurationSeconds": "30"})["containers"][0])
    assert changed["EGPU_OPERATOR_LEADER_LEASE_DURATION_SECONDS"] == "30"


OPERATOR_PODS = {
    "matchLabels": {
        "app.kubernetes.io/component": "operator",
        "app.kubernetes.io/instance": "egpu-operator",
        "app.kubernetes.io/name": "egpu-operator",
    }
}


def test_operator_pods_prefer_nodes_of_their_own_so_a_one_node_cluster_still_runs_both() -> None:
    affinity = operator_pod()["affinity"]
    assert affinity["podAntiAffinity"] == {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": OPERATOR_PODS}}
        ]
    }
    assert "nodeAffinity" in affinity  # the default node preference stays
    required = operator_pod({"operator.podAntiAffinity": "required"})["affinity"]["podAntiAffinity"]
    assert required == {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": OPERATOR_PODS}
        ]
    }
    assert "podAntiAffinity" not in operator_pod({"operator.podAntiAffinity": "none"})["affinity"]


def test_an_anti_affinity_of_the_users_own_wins() -> None:
    own = {"operator.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight": "1",
           "operator.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey":
               "topology.kubernetes.io/zone"}  # fmt: skip
    terms = operator_pod(own)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms == [{"weight": 1, "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone"}}]


def test_operator_budget_lets_a_drain_take_one_pod_at_a_time() -> None:
    budget = find(render(), "PodDisruptionBudget", "egpu-operator")
    assert budget["metadata"]["namespace"] == "egpu-system"
    assert budget["spec"] == {"maxUnavailable": 1, "selector": OPERATOR_PODS}
    assert not [o for o in render({"operator.podDisruptionBudget.enabled": "false"}) if o["kind"] == "PodDisruptionBudget"]


def test_operator_may_update_only_its_own_lease_in_the_release_namespace_and_read_and_mark_one_crd() -> None:
    objects = render()
    role = find(objects, "Role", "egpu-operator-leader-election")
    assert role["metadata"]["namespace"] == "egpu-system"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["egpu-operator"],
            "verbs": ["get", "update"],
        },
    ]
    lease = find(objects, "Lease", "egpu-operator")  # the chart makes it: the operator needs no "create"
    assert (lease["metadata"]["namespace"], lease["spec"]) == ("egpu-system", {})
    binding = find(objects, "RoleBinding", "egpu-operator-leader-election")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": "egpu-system"}]
    assert binding["roleRef"]["kind"] == "Role"
    cluster_rules = find(objects, "ClusterRole", "egpu-operator")["rules"]
    # No Lease list or watch and no namespace anywhere in the cluster: the heartbeats are a Role's, in the
    # agents' namespace. One get, by name: another release's leader Lease, when the cluster claim names it.
    assert not [rule for rule in cluster_rules if "namespaces" in rule["resources"]]
    assert [rule for rule in cluster_rules if "leases" in rule["resources"]] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["egpu-operator"], "verbs": ["get"]}
    ]
    crd_rules = [rule for rule in cluster_rules if rule["apiGroups"] == ["apiextensions.k8s.io"]]
    assert crd_rules == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": ["inferencedeployments.egpu-operator.io"],
            "verbs": ["get", "patch"],
        },
        {  # supervisor.CrdPresence: read by name only, never listed or watched
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": ["gpumaintenances.egpu-operator.io"],
            "verbs": ["get"],
        },
    ]


def test_operator_watches_agent_leases_only_in_the_agents_namespace() -> None:
    objects = render()
    role = find(objects, "Role", "egpu-operator-agent-leases")
    assert role["metadata"]["namespace"] == "egpu-system"
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list", "watch"]}]
    binding = find(objects, "RoleBinding", "egpu-operator-agent-leases")
    assert binding["metadata"]["namespace"] == "egpu-system"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": "egpu-system"}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "egpu-operator-agent-leases"}


def test_operator_probes_ask_the_operator_itself_not_its_metrics() -> None:
    container = operator_pod({"operator.metricsPort": "9090"})["containers"][0]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert container["args"] == ["run", "--metrics-port=9090"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_operator_pod_meets_pod_security_restricted() -> None:
    pod = operator_pod()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert pod["serviceAccountName"] == OPERATOR_SA


def test_operator_environment_comes_from_values() -> None:
    defaults = env(operator_pod()["containers"][0])
    assert defaults["EGPU_OPERATOR_MAX_PARALLEL_MAINTENANCES"] == "1"
    assert defaults["EGPU_OPERATOR_AUTO_MAINTENANCE"] == "false"
    assert defaults["EGPU_OPERATOR_WORKERS"] == "4"
    changed = env(
        operator_pod({"operator.workers": "8", "operator.maintenance.maxParallel": "3", "operator.maintenance.auto": "true"})[
            "containers"
        ][0]
    )
    assert (changed["EGPU_OPERATOR_WORKERS"], changed["EGPU_OPERATOR_MAX_PARALLEL_MAINTENANCES"]) == ("8", "3")
    assert changed["EGPU_OPERATOR_AUTO_MAINTENANCE"] == "true"


def test_operator_resources_come_from_values() -> None:
    resources = operator_pod({"operator.resources.limits.memory": "2Gi"})["containers"][0]["resources"]
    assert resources["limits"]["memory"] == "2Gi"
    assert resources["requests"] == {"cpu": "100m", "memory": "256Mi"}


def test_agent_read_only_by_default_with_every_capability_dropped() -> None:
    pod = agent_pod()
    container = pod["containers"][0]
    assert "--read-only" in container["args"]
    assert "--backend=nvml" in container["args"]
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["serviceAccountName"] == AGENT_SA


def test_power_actuation_adds_only_sys_admin_as_root_without_privilege_escalation() -> None:
    pod = agent_pod(POWER)
    container = pod["containers"][0]
    assert "--read-only" not in container["args"]
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        # Spelled as Kubernetes names capabilities: the API server refuses "CAP_SYS_ADMIN" beside
        # allowPrivilegeEscalation=false (tests/e2e/test_helm_agent_namespace.py shows it admits this).
        "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
    }
    assert pod["securityContext"] == {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": 0,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "privileged" not in str(pod)
    assert not any(key.startswith("host") for key in pod)


def test_an_agent_that_sets_limits_restores_its_own_on_uninstall_and_may_read_only_its_daemonset() -> None:
    objects = render(POWER)
    daemonset = find(objects, "DaemonSet")
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    assert "--restore-power-on-exit=uninstall" in container["args"]
    assert env(container)["DAEMONSET_NAME"] == daemonset["metadata"]["name"]
    role = find(objects, "Role", AGENT_SA)
    assert {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [daemonset["metadata"]["name"]],
            "verbs": ["get"]} in role["rules"]  # fmt: skip
    never = agent_pod({**POWER, "agent.powerActuation.restoreDefaultsOnExit": "never"})
    assert "--restore-power-on-exit=never" in never["containers"][0]["args"]


def test_a_read_only_agent_has_nothing_to_restore_and_no_daemonset_access() -> None:
    objects = render()
    container = find(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert not any(arg.startswith("--restore-power-on-exit") for arg in container["args"])
    assert "DAEMONSET_NAME" not in env(container)
    assert all("daemonsets" not in rule["resources"] for rule in find(objects, "Role", AGENT_SA)["rules"])


def test_agent_gets_node_and_namespace_from_the_downward_api_and_nvidia_runtime() -> None:
    pod = agent_pod()
    variables = env(pod["containers"][0])
    assert variables["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert variables["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert variables["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert pod["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in agent_pod({"agent.nvidia.runtimeClassName": ""})


def test_agent_node_selector_defaults_to_nfd_and_is_configurable() -> None:
    assert agent_pod()["nodeSelector"] == {"feature.node.kubernetes.io/pci-10de.present": "true"}
    assert agent_pod()["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # Helm merges maps: a default key goes only when set to null.
    replaced = '{"feature.node.kubernetes.io/pci-10de.present": null, "gpu": "yes"}'
    custom = find(render(None, "--set-json", f"agent.nodeSelector={replaced}"), "DaemonSet")["spec"]["template"]["spec"]
    assert custom["nodeSelector"] == {"gpu": "yes"}


def test_fake_backend_mounts_its_fleet_profile() -> None:
    objects = render({"agent.backend": "fake", "agent.fleetProfile": "nodes: []"})
    pod = find(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert "--fleet=/etc/egpu-node-agent/fleet.yaml" in pod["containers"][0]["args"]
    assert find(objects, "ConfigMap")["data"]["fleet.yaml"].strip() == "nodes: []"
    assert "checksum/fleet" in find(objects, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize(("enabled", "count"), [("false", 0), ("true", 2)])
def test_service_monitors(enabled: str, count: int) -> None:
    objects = render({"metrics.serviceMonitor.enabled": enabled, "metrics.serviceMonitor.labels.release": "prom"})
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert len(monitors) == count
    assert all(m["metadata"]["labels"]["release"] == "prom" for m in monitors)
    services = {o["metadata"]["name"]: o["spec"]["ports"][0]["port"] for o in objects if o["kind"] == "Service"}
    assert services == {"egpu-operator-metrics": 8080, "egpu-operator-node-agent-metrics": 9400}


def test_the_operator_monitor_keeps_the_deployments_own_namespace_label() -> None:
    """The alerts name an InferenceDeployment by its namespace label, which the target's would overwrite."""
    objects = render({"metrics.serviceMonitor.enabled": "true"})
    assert find(objects, "ServiceMonitor", "egpu-operator")["spec"]["endpoints"][0]["honorLabels"] is True


def test_agent_disabled_leaves_only_the_operator() -> None:
    objects = render({"agent.enabled": "false"})
    kinds = {o["kind"] for o in objects}
    assert "DaemonSet" not in kinds
    assert "Deployment" in kinds
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects}
    # No RBAC, Service or admission policy of the agent either; "test" is the `helm test` pod.
    assert components == {"operator", "crds", "test"}


def test_operator_gets_the_failure_safety_settings_and_the_agents_namespace() -> None:
    found = env(operator_pod({"operator.failureSafety.agentGraceSeconds": "45"})["containers"][0])
    assert found["EGPU_OPERATOR_AGENT_GRACE_SECONDS"] == "45"
    assert found["EGPU_OPERATOR_LEASE_TTL_SECONDS"] == "40"
    assert found["EGPU_OPERATOR_DISRUPTION_FRACTION"] == "0.55"
    assert found["EGPU_OPERATOR_AGENT_NAMESPACE"] == "egpu-system"
    assert found["EGPU_OPERATOR_AGENT_ROLLOUT_GRACE_SECONDS"] == "600"


def test_agent_rolls_one_node_at_a_time_and_its_pods_carry_the_label_the_operator_reads() -> None:
    """The operator tells a restarting agent from a dead one by its pods' component label
    (``keys.COMPONENT_LABEL``, ``keys.AGENT_COMPONENT``) in the release namespace."""
    daemonset = find(render(), "DaemonSet")
    assert daemonset["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert daemonset["spec"]["template"]["metadata"]["labels"][keys.COMPONENT_LABEL] == keys.AGENT_COMPONENT
    assert daemonset["metadata"]["namespace"] == "egpu-system"
    surged = find(render({"agent.maxSurge": "1", "agent.maxUnavailable": "0"}), "DaemonSet")
    assert surged["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_model_cache_probe_mounts_the_folder_read_only_and_a_declared_rate_is_passed_on() -> None:
    agent = find(render({"agent.modelCache.hostPath": "/srv/models", "agent.modelCache.probe": "true"}), "DaemonSet")
    pod = agent["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--probe-storage=/model-cache" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "model-cache")
    assert (mount["mountPath"], mount["readOnly"]) == ("/model-cache", True)
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert volume["hostPath"] == {"path": "/srv/models", "type": "Directory"}

    declared = find(render({"agent.modelCache.readMBps": "90"}), "DaemonSet")["spec"]["template"]["spec"]
    assert "--storage-read-mbps=90" in declared["containers"][0]["args"]
    assert not any(v["name"] == "model-cache" for v in declared["volumes"])
    default = find(render(), "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [arg for arg in default if "storage" in arg]


def test_pod_resources_are_mounted_read_only_where_the_agent_runs_as_root_on_real_gpus() -> None:
    pod = agent_pod(POWER)
    container = pod["containers"][0]
    assert "--pod-resources-socket=/var/lib/kubelet/pod-resources/kubelet.sock" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "pod-resources")
    assert (mount["mountPath"], mount["readOnly"]) == ("/var/lib/kubelet/pod-resources", True)
    volume = next(v for v in pod["volumes"] if v["name"] == "pod-resources")
    assert volume["hostPath"] == {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"}


@pytest.mark.parametrize(
    "values",
    [
        {},  # read-only, non-root, Pod Security "restricted": no hostPath, and root's socket is out of reach
        {**POWER, "agent.podResources.enabled": "false"},
        {**POWER, "agent.backend": "fake"},  # the kubelet does not know fake GPUs
    ],
)
def test_otherwise_the_agent_is_told_not_to_ask_and_nothing_is_mounted(values: dict[str, str]) -> None:
    pod = agent_pod(values)
    assert "--pod-resources-socket=" in pod["containers"][0]["args"]
    assert not any(v["name"] == "pod-resources" for v in pod["volumes"])
    assert not any(m["name"] == "pod-resources" for m in pod["containers"][0]["volumeMounts"])
