"""The chart's admission policies: the node agent's token, bound to its pod on node A, may change
egpu-operator.io/ labels and annotations (but not the operator's) and the GPUHealthy condition of
A, renew the Lease egpu-node-agent-A and record Events about A, and nothing else."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from egpu_api import keys
from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.publisher import NodePublisher
from egpu_operator.drain import MAINTENANCE_LABEL
from egpu_operator.power import OWNERS_ANNOTATION
from egpu_runtime.kube import api_client
from tests.e2e.helpers import wait_for
from tests.unit.chart.helm import AGENT_SA, NAMESPACE, agent_pod_on, release_on_local_cluster, token_kubeconfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
OWN, OTHER = "pi5-rtx4090", "x220-tesla-p4"
MERGE, STRATEGIC = "application/merge-patch+json", "application/strategic-merge-patch+json"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with release_on_local_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module", autouse=True)
def agent_kubeconfig(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Credentials of the node agent on OWN: a token bound to the DaemonSet's pod there.
    Every test waits for it: it returns once the policies are enforced."""
    path = tmp_path_factory.mktemp("agent") / "kubeconfig"
    token_kubeconfig(cluster.kubectl, AGENT_SA, path, bound_pod=agent_pod_on(cluster.kubectl, OWN))
    # Helm creates the policies last, and the API server enforces one once its informers have the
    # policy and its binding: wait until both refuse a dry run.
    core: Any = client.CoreV1Api(api_client(path))
    leases: Any = client.CoordinationV1Api(api_client(path))
    label = {"metadata": {"labels": {"egpu-operator.io/policy-test": "yes"}}}
    ghost = {"metadata": {"name": f"{keys.AGENT_LEASE_PREFIX}ghost-node"}}
    for what, call in (
        ("the own-node policy", lambda: core.patch_node(OTHER, label, _content_type=MERGE, dry_run="All")),
        ("the Lease policy", lambda: leases.create_namespaced_lease(NAMESPACE, ghost, dry_run="All")),
    ):
        wait_for(lambda: is_refused(call), timeout_s=30, what=f"{what} to be enforced")  # noqa: B023
    return path


@pytest.fixture(scope="module")
def agent(agent_kubeconfig: Path) -> Any:
    """CoreV1Api as the node agent on OWN."""
    return client.CoreV1Api(api_client(agent_kubeconfig))


@pytest.fixture(scope="module")
def agent_leases(agent_kubeconfig: Path) -> Any:
    """CoordinationV1Api as the node agent on OWN."""
    return client.CoordinationV1Api(api_client(agent_kubeconfig))


def is_refused(call: Any) -> bool | None:
    """True once the call is refused (403), None while it goes through."""
    try:
        call()
    except ApiException as error:
        if error.status != 403:
            raise
        return True
    return None


def refusal(call: Any) -> str:
    """The API server's message for a refused call (fails if the call went through)."""
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403, refused.value.body
    message: str = json.loads(refused.value.body)["message"]
    return message


def labels(cluster: LocalCluster, node: str) -> dict[str, str]:
    found: dict[str, str] = cluster.kubectl.get_json("node", node)["metadata"]["labels"]
    return found


def condition(cluster: LocalCluster, node: str, kind: str) -> dict[str, Any] | None:
    conditions = cluster.kubectl.get_json("node", node)["status"]["conditions"]
    return next((c for c in conditions if c["type"] == kind), None)


def test_token_carries_the_node_of_its_pod(cluster: LocalCluster, tmp_path: Path) -> None:
    path = token_kubeconfig(cluster.kubectl, AGENT_SA, tmp_path / "kubeconfig", bound_pod=agent_pod_on(cluster.kubectl, OWN))
    review = json.loads(Kubectl(cluster.kubectl.binary, path).run("auth", "whoami", "-o", "json").stdout)
    assert review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"] == [OWN]


def test_agent_may_set_project_labels_and_annotations_on_its_own_node(cluster: LocalCluster, agent: Any) -> None:
    body = {"metadata": {"labels": {"egpu-operator.io/policy-test": "yes"}, "annotations": {"egpu-operator.io/note": "x"}}}
    agent.patch_node(OWN, body, _content_type=MERGE)
    assert labels(cluster, OWN)["egpu-operator.io/policy-test"] == "yes"
    agent.patch_node(OWN, {"metadata": {"labels": {"egpu-operator.io/policy-test": None}}}, _content_type=MERGE)
    assert "egpu-operator.io/policy-test" not in labels(cluster, OWN)


def test_agent_may_not_label_another_node(cluster: LocalCluster, agent: Any) -> None:
    body = {"metadata": {"labels": {"egpu-operator.io/policy-test": "yes"}}}
    message = refusal(lambda: agent.patch_node(OTHER, body, _content_type=MERGE))
    assert f"the egpu-operator node agent on {OWN} may not change node {OTHER}" in message
    assert "egpu-operator.io/policy-test" not in labels(cluster, OTHER)


def test_agent_may_not_touch_other_labels_or_annotations_on_its_own_node(cluster: LocalCluster, agent: Any) -> None:
    message = refusal(lambda: agent.patch_node(OWN, {"metadata": {"labels": {"team": "ml"}}}, _content_type=MERGE))
    assert "may change only egpu-operator.io/ labels, not team" in message
    message = refusal(lambda: agent.patch_node(OWN, {"metadata": {"labels": {"kubernetes.io/os": None}}}, _content_type=MERGE))
    assert "not kubernetes.io/os" in message
    message = refusal(
        lambda: agent.patch_node(OWN, {"metadata": {"annotations": {"kwok.x-k8s.io/node": "real"}}}, _content_type=MERGE)
    )
    assert "may change only egpu-operator.io/ annotations, not kwok.x-k8s.io/node" in message
    assert labels(cluster, OWN)["kubernetes.io/os"] == "linux"


def test_agent_may_not_cordon_or_taint_its_node(cluster: LocalCluster, agent: Any) -> None:
    message = refusal(lambda: agent.patch_node(OWN, {"spec": {"unschedulable": True}}, _content_type=MERGE))
    assert "may not change a node's spec" in message
    taint = {"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}}
    assert "may not change a node's spec" in refusal(lambda: agent.patch_node(OWN, taint, _content_type=MERGE))


def condition_patch(kind: str) -> dict[str, Any]:
    now = "2026-01-01T00:00:00Z"
    entry = {
        "type": kind,
        "status": "False",
        "reason": "Test",
        "message": "t",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    return {"status": {"conditions": [entry]}}


def test_agent_may_change_only_the_gpuhealthy_condition_of_its_node(cluster: LocalCluster, agent: Any) -> None:
    agent.patch_node_status(OWN, condition_patch("GPUHealthy"), _content_type=STRATEGIC)
    assert condition(cluster, OWN, "GPUHealthy")["reason"] == "Test"  # type: ignore[index]
    message = refusal(lambda: agent.patch_node_status(OWN, condition_patch("Ready"), _content_type=STRATEGIC))
    assert "may change only the GPUHealthy condition" in message
    assert condition(cluster, OWN, "Ready")["status"] == "True"  # type: ignore[index]
    capacity = {"status": {"capacity": {"nvidia.com/gpu": "64"}}}
    assert "only the GPUHealthy condition" in refusal(lambda: agent.patch_node_status(OWN, capacity, _content_type=STRATEGIC))
    # Labels through the status subresource are held to the same rule.
    sneaky = {"metadata": {"labels": {"team": "ml"}}}
    assert "not team" in refusal(lambda: agent.patch_node_status(OWN, sneaky, _content_type=STRATEGIC))
    other = refusal(lambda: agent.patch_node_status(OTHER, condition_patch("GPUHealthy"), _content_type=STRATEGIC))
    assert f"may not change node {OTHER}" in other


def test_unbound_token_of_the_agent_may_change_no_node(cluster: LocalCluster, tmp_path: Path) -> None:
    path = token_kubeconfig(cluster.kubectl, AGENT_SA, tmp_path / "kubeconfig")
    unbound = client.CoreV1Api(api_client(path))
    body = {"metadata": {"labels": {"egpu-operator.io/policy-test": "yes"}}}
    assert "only with a token bound to a pod on that node" in refusal(lambda: unbound.patch_node(OWN, body, _content_type=MERGE))


def test_other_users_are_not_affected(cluster: LocalCluster) -> None:
    cluster.kubectl.run("label", "node", OWN, "team=ml")
    cluster.kubectl.run("label", "node", OWN, "team-")


def annotations(cluster: LocalCluster, node: str) -> dict[str, str]:
    found: dict[str, str] = cluster.kubectl.get_json("node", node)["metadata"].get("annotations") or {}
    return found


def test_agent_may_not_change_the_operators_power_limit_annotations(cluster: LocalCluster, agent: Any) -> None:
    for key in (keys.POWER_REQUEST_ANNOTATION, OWNERS_ANNOTATION):
        forged = {"metadata": {"annotations": {key: '{"GPU-x":1}'}}}
        message = refusal(lambda: agent.patch_node(OWN, forged, _content_type=MERGE))  # noqa: B023
        assert f"the egpu-operator node agent may not change {key}, which the operator owns" in message
        assert key not in annotations(cluster, OWN)
    # What the operator wrote the agent may neither change nor remove, but it still publishes its own keys.
    cluster.kubectl.run(
        "annotate", "node", OWN, f'{keys.POWER_REQUEST_ANNOTATION}={{"GPU-x":300}}', f'{OWNERS_ANNOTATION}={{"GPU-x":"ai/llm"}}'
    )
    try:
        for value in ('{"GPU-x":1}', None):
            change = {"metadata": {"annotations": {keys.POWER_REQUEST_ANNOTATION: value}}}
            message = refusal(lambda: agent.patch_node(OWN, change, _content_type=MERGE))  # noqa: B023
            assert f"may not change {keys.POWER_REQUEST_ANNOTATION}, which the operator owns" in message
        assert annotations(cluster, OWN)[keys.POWER_REQUEST_ANNOTATION] == '{"GPU-x":300}'
        status = {"metadata": {"annotations": {keys.POWER_STATUS_ANNOTATION: "{}", keys.GPUS_ANNOTATION: "[]"}}}
        agent.patch_node(OWN, status, _content_type=MERGE)
        assert annotations(cluster, OWN)[keys.POWER_STATUS_ANNOTATION] == "{}"
    finally:
        cluster.kubectl.run("annotate", "node", OWN, f"{keys.POWER_REQUEST_ANNOTATION}-", f"{OWNERS_ANNOTATION}-")


def test_agent_may_not_set_or_clear_the_maintenance_label(cluster: LocalCluster, agent: Any) -> None:
    body = {"metadata": {"labels": {MAINTENANCE_LABEL: "fake"}}}
    message = refusal(lambda: agent.patch_node(OWN, body, _content_type=MERGE))
    assert f"may not change {MAINTENANCE_LABEL}, which the operator owns" in message
    # Clearing it would hide a running maintenance from the operator.
    cluster.kubectl.run("label", "node", OWN, f"{MAINTENANCE_LABEL}=gpu-swap")
    try:
        clear = {"metadata": {"labels": {MAINTENANCE_LABEL: None}}}
        message = refusal(lambda: agent.patch_node(OWN, clear, _content_type=MERGE))
        assert f"may not change {MAINTENANCE_LABEL}, which the operator owns" in message
        assert labels(cluster, OWN)[MAINTENANCE_LABEL] == "gpu-swap"
    finally:
        cluster.kubectl.run("label", "node", OWN, f"{MAINTENANCE_LABEL}-")


# -- the Lease and Events -------------------------------------------------------------------------


def lease(cluster: LocalCluster, name: str) -> dict[str, Any] | None:
    found = cluster.kubectl.run("get", "lease", name, "-n", NAMESPACE, "-o", "json", "--ignore-not-found").stdout
    return json.loads(found) if found.strip() else None


def renewal(holder: str, renew_time: str = "2020-01-01T00:00:00.123456Z") -> dict[str, Any]:
    return {"spec": {"holderIdentity": holder, "leaseDurationSeconds": 40, "renewTime": renew_time}}


def test_agent_renews_its_own_lease(cluster: LocalCluster, agent_kubeconfig: Path) -> None:
    publisher = NodePublisher(api_client(agent_kubeconfig), OWN, NAMESPACE)
    try:
        publisher.heartbeat(40)  # creates it
        first = lease(cluster, f"{keys.AGENT_LEASE_PREFIX}{OWN}")
        assert first is not None
        assert first["spec"]["holderIdentity"] == OWN
        publisher.heartbeat(40)  # patches it
        second = lease(cluster, f"{keys.AGENT_LEASE_PREFIX}{OWN}")
        assert second is not None
        assert second["spec"]["renewTime"] != first["spec"]["renewTime"]
    finally:
        publisher.close()


def test_agent_may_not_renew_another_nodes_lease(cluster: LocalCluster, agent_leases: Any) -> None:
    name = f"{keys.AGENT_LEASE_PREFIX}{OTHER}"
    fresh = "2030-01-01T00:00:00.123456Z"
    cluster.kubectl.apply(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": NAMESPACE},
            **renewal(OTHER, fresh),
        }
    )
    try:
        # A stale renewTime would make the operator take OTHER's agent for dead and move its replicas.
        message = refusal(lambda: agent_leases.patch_namespaced_lease(name, NAMESPACE, renewal(OTHER), _content_type=MERGE))
        assert (
            f"the egpu-operator node agent on {OWN} may write only the Lease {keys.AGENT_LEASE_PREFIX}{OWN}, not {name}"
            in message
        )
        assert lease(cluster, name)["spec"]["renewTime"] == fresh  # type: ignore[index]
    finally:
        cluster.kubectl.run("delete", "lease", name, "-n", NAMESPACE)


def test_agent_may_not_create_a_lease_for_a_made_up_node(cluster: LocalCluster, agent_leases: Any) -> None:
    name = f"{keys.AGENT_LEASE_PREFIX}ghost-node"
    body = {"metadata": {"name": name}, **renewal("ghost-node")}
    message = refusal(lambda: agent_leases.create_namespaced_lease(NAMESPACE, body))
    assert f"may write only the Lease {keys.AGENT_LEASE_PREFIX}{OWN}, not {name}" in message
    assert lease(cluster, name) is None


def test_agent_may_not_name_another_holder_of_its_lease(cluster: LocalCluster, agent_leases: Any) -> None:
    name = f"{keys.AGENT_LEASE_PREFIX}{OWN}"
    body = {"metadata": {"name": name}, **renewal(OWN)}
    if lease(cluster, name) is None:
        agent_leases.create_namespaced_lease(NAMESPACE, body)
    message = refusal(lambda: agent_leases.patch_namespaced_lease(name, NAMESPACE, renewal(OTHER), _content_type=MERGE))
    assert f"the egpu-operator node agent on {OWN} may not name {OTHER} the holder of its Lease" in message


def node_event(kind: str, name: str) -> dict[str, Any]:
    return {
        "metadata": {"generateName": "policy-test.", "namespace": "default"},
        "involvedObject": {"kind": kind, "name": name, "apiVersion": "v1", **({"namespace": "default"} if kind == "Pod" else {})},
        "reason": "PolicyTest",
        "message": "t",
        "type": "Normal",
        "source": {"component": "egpu-node-agent", "host": OWN},
    }


def test_agent_records_events_only_about_its_own_node(cluster: LocalCluster, agent: Any) -> None:
    agent.create_namespaced_event("default", node_event("Node", OWN))
    message = refusal(lambda: agent.create_namespaced_event("default", node_event("Node", OTHER)))
    assert f"the egpu-operator node agent on {OWN} may record Events only about node {OWN}, not about Node {OTHER}" in message
    assert "not about Pod web-0" in refusal(lambda: agent.create_namespaced_event("default", node_event("Pod", "web-0")))
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in cluster.kubectl.get_json("events", "-n", "default")["items"]}
    assert (OWN, "PolicyTest") in reasons
    assert (OTHER, "PolicyTest") not in reasons
    cluster.kubectl.run("delete", "events", "-n", "default", "--field-selector", "reason=PolicyTest")


def test_unbound_token_of_the_agent_may_write_no_lease(cluster: LocalCluster, tmp_path: Path) -> None:
    path = token_kubeconfig(cluster.kubectl, AGENT_SA, tmp_path / "kubeconfig")
    unbound: Any = client.CoordinationV1Api(api_client(path))
    body = {"metadata": {"name": f"{keys.AGENT_LEASE_PREFIX}{OWN}-x"}, **renewal(OWN)}
    message = refusal(lambda: unbound.create_namespaced_lease(NAMESPACE, body))
    assert "may write a Lease only with a token bound to a pod on its node" in message
